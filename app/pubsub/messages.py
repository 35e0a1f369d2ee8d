"""Turn a received Pub/Sub message into the column values of a UserItem row.

Conversion never raises for any payload: a message that could not be stored
would be redelivered for ever.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Column limits in app.models.UserItem.
MESSAGE_ID_LIMIT = 128
ORDERING_KEY_LIMIT = 1024


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def is_json_text(text: str) -> bool:
    """Whether the text is one strict JSON document (NaN and Infinity are not JSON)."""
    if not text or text.isspace():
        return False
    try:
        _STRICT_JSON.decode(text)
    except (ValueError, RecursionError):
        return False
    return True


def split_payload(data: bytes) -> tuple[str | None, bytes | None, bool]:
    """(data_text, data_bytes, is_json): text when the data is UTF-8 a database can hold, else the raw bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, data, False
    if "\x00" in text:
        # PostgreSQL text cannot hold NUL; keep such payloads byte-exact as binary.
        return None, data, False
    return text, None, is_json_text(text)


def _timestamp(seconds: int, nanos: int) -> datetime | None:
    if not seconds and not nanos:
        return None
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)


def build_row(
    *,
    user_id: int,
    subscription: str,
    message_id: str,
    data: bytes,
    attributes: Mapping[str, str],
    publish_time: datetime | None,
    ordering_key: str,
    delivery_attempt: int | None,
    size: int,
    received_at: datetime,
) -> dict[str, Any]:
    data_text, data_bytes, is_json = split_payload(bytes(data))
    return {
        "user_id": user_id,
        "subscription": subscription,
        "message_id": message_id[:MESSAGE_ID_LIMIT],
        "publish_time": publish_time,
        "received_at": received_at,
        "data_text": data_text,
        "data_bytes": data_bytes,
        "is_json": is_json,
        "attributes_json": json.dumps(dict(attributes), sort_keys=True),
        "ordering_key": ordering_key[:ORDERING_KEY_LIMIT] or None,
        "delivery_attempt": delivery_attempt or None,
        "size": size,
    }


def row_from_pulled(received, *, user_id: int, subscription: str, received_at: datetime | None = None) -> dict:
    """A row from a raw `ReceivedMessage` protobuf, as returned by unary Pull."""
    message = received.message
    return build_row(
        user_id=user_id,
        subscription=subscription,
        message_id=message.message_id,
        data=message.data,
        attributes=message.attributes,
        publish_time=_timestamp(message.publish_time.seconds, message.publish_time.nanos),
        ordering_key=message.ordering_key,
        delivery_attempt=received.delivery_attempt,
        size=message.ByteSize(),
        received_at=received_at or datetime.now(UTC),
    )


def row_from_streamed(message, *, user_id: int, subscription: str, received_at: datetime | None = None) -> dict:
    """A row from a `google.cloud.pubsub_v1.subscriber.message.Message` (StreamingPull)."""
    return build_row(
        user_id=user_id,
        subscription=subscription,
        message_id=message.message_id,
        data=message.data,
        attributes=message.attributes,
        publish_time=message.publish_time,
        ordering_key=message.ordering_key,
        delivery_attempt=message.delivery_attempt,
        size=message.size,
        received_at=received_at or datetime.now(UTC),
    )
