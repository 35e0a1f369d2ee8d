"""Publishing messages: one from the UI, a stored one again (replay), or a JSON Lines export."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from google.pubsub_v1 import PubsubMessage

from app.explore.export import decoded_data
from app.pubsub.client import within

# One publish from a page, retries included: well under a web request's 30 s (a replay may first spend
# 10 s checking the subscription), so that the page can say it failed.
PUBLISH_TIMEOUT_SECONDS = 15
# Each publish request of `flask replay`, which has no request to answer: the client's own retries go on.
REPLAY_TIMEOUT_SECONDS = 30
# Pub/Sub takes up to 1,000 messages and 10 MB per publish request.
MAX_BATCH_MESSAGES = 1000
MAX_BATCH_BYTES = 8 * 1024 * 1024
# Pub/Sub answers a message with neither data nor attributes with a bare InvalidArgument.
EMPTY_MESSAGE = "A message needs data or at least one attribute."


class EmptyMessageError(ValueError):
    def __init__(self) -> None:
        super().__init__(EMPTY_MESSAGE)


def is_empty_message(data: bytes, attributes: Mapping[str, str]) -> bool:
    return not data and not attributes


def publish_one(publisher, topic: str, data: bytes, attributes: Mapping[str, str], ordering_key: str = "") -> str:
    """Publish one message; return the id Pub/Sub gave it. An empty message raises EmptyMessageError."""
    if is_empty_message(data, attributes):
        raise EmptyMessageError()
    message = PubsubMessage(data=data, attributes=dict(attributes), ordering_key=ordering_key or "")
    response = publisher.publish(request={"topic": topic, "messages": [message]}, **within(PUBLISH_TIMEOUT_SECONDS))
    return response.message_ids[0]


def messages_from_jsonl(lines: Iterable[str]) -> Iterator[PubsubMessage]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record: dict[str, Any] = json.loads(line)
            yield PubsubMessage(data=decoded_data(record), attributes=record.get("attributes") or {},
                                ordering_key=record.get("ordering_key") or "")
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"line {number} is not an exported message: {error}") from None


def publish_jsonl(publisher, topic: str, lines: Iterable[str]) -> int:
    """Publish every message of a JSON Lines export, in order, in batches; return how many."""
    published = 0
    batch: list[PubsubMessage] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal published, batch, batch_bytes
        if batch:
            response = publisher.publish(request={"topic": topic, "messages": batch}, timeout=REPLAY_TIMEOUT_SECONDS)
            published += len(response.message_ids)
            batch, batch_bytes = [], 0

    for message in messages_from_jsonl(lines):
        size = PubsubMessage.pb(message).ByteSize()
        if batch and (len(batch) >= MAX_BATCH_MESSAGES or batch_bytes + size > MAX_BATCH_BYTES):
            flush()
        batch.append(message)
        batch_bytes += size
    flush()
    return published
