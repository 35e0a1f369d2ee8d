"""Turn a received Pub/Sub message into the column values of a UserItem row.

Conversion never raises for any payload: a message that could not be stored
would be redelivered for ever. Nothing is lost either: a message id or ordering
key that a database cannot hold as text (NUL, longer than its column) gives a
quarantined row, whose raw_message keeps the whole message byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson
from google.pubsub_v1.types import PubsubMessage

# Column limits in app.models.UserItem.
MESSAGE_ID_LIMIT = 128
ORDERING_KEY_LIMIT = 1024
QUARANTINE_REASON_LIMIT = 256


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a JSON document can start with, after whitespace (JSON's whitespace: space, tab, newline, return).
_JSON_STARTS = frozenset('{["-0123456789tfn')
_JSON_WHITESPACE = " \t\n\r"


def is_json_text(text: str, encoded: bytes | None = None) -> bool:
    """Whether the text is one strict JSON document (NaN and Infinity are not JSON).

    `encoded`, the text's UTF-8 bytes when the caller has them, spares orjson encoding a non-ASCII
    text again (and the copy it would keep attached to the string). orjson parses three to four
    times as fast as the json module and is as strict, but refuses a few documents that the json
    module takes: a lone surrogate escape ("\\ud800") and a number beyond a double's range (1e400).
    Those it refuses are asked of the json module before the answer is no (so a text that is not
    JSON and fails late, such as newline-separated documents, is parsed twice). The one difference
    left is in the other direction: a document nested from somewhat under 1,000 deep (the json
    module's limit depends on the stack) to 1,024 is JSON to orjson and too deep for the json
    module; it is JSON, and the pages show such a document as text either way (app.rendering).
    """
    start = text.lstrip(_JSON_WHITESPACE)[:1]
    if start not in _JSON_STARTS or not start:
        return False  # plain text, decided without parsing it
    try:
        orjson.loads(text if encoded is None else encoded)
    except ValueError:
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
    return text, None, is_json_text(text, data)


def _text_problem(name: str, value: str, limit: int) -> str | None:
    """Why a text field cannot be stored as text on every database, or None when it can."""
    if "\x00" in value:
        return f"the {name} holds a NUL character, which PostgreSQL text cannot store"
    if len(value) > limit:
        return f"the {name} is {len(value)} characters long, more than the {limit} its column holds"
    return None


def _readable(value: str, limit: int) -> str:
    """A copy of a text field that any database holds: NUL shown as U+FFFD, cut to the column's length."""
    return value.replace("\x00", "\ufffd")[:limit]


def raw_message(row: dict[str, Any]) -> bytes:
    """The message of a row, serialized as a Pub/Sub PubsubMessage protobuf: exact for every field."""
    message = PubsubMessage(
        message_id=row["message_id"],
        data=row["data_bytes"] if row["data_bytes"] is not None else (row["data_text"] or "").encode("utf-8"),
        attributes=json.loads(row["attributes_json"]),
        ordering_key=row["ordering_key"] or "",
    )
    return PubsubMessage.serialize(message)


def decode_raw_message(raw: bytes) -> dict[str, Any]:
    """The fields of a raw_message, as UserItem.original_message returns them."""
    message = PubsubMessage.deserialize(bytes(raw))
    return {"message_id": message.message_id, "data": bytes(message.data),
            "attributes": dict(message.attributes), "ordering_key": message.ordering_key}


def quarantined(row: dict[str, Any], reason: str, *, bare: bool = False) -> dict[str, Any]:
    """The row in its quarantined form: the exact message in raw_message, readable text fields, the reason.

    `bare` also keeps the data only as bytes and the attributes only in raw_message, for a
    row the database refused for a reason nobody foresaw. The readable message id is the
    same for every delivery of the message, so the dedup key still absorbs redeliveries.
    """
    form = {
        **row,
        "message_id": _readable(row["message_id"], MESSAGE_ID_LIMIT),
        "ordering_key": _readable(row["ordering_key"] or "", ORDERING_KEY_LIMIT) or None,
        "quarantine_reason": reason[:QUARANTINE_REASON_LIMIT],
        "raw_message": row.get("raw_message") or raw_message(row),
    }
    if bare:
        data = row["data_bytes"] if row["data_bytes"] is not None else (row["data_text"] or "").encode("utf-8")
        form.update(data_text=None, data_bytes=data, is_json=False, attributes_json="{}", attributes={})
    return form


def attributes_json(attributes: Mapping[str, str]) -> str:
    """The attributes as JSON text, keys sorted, ASCII only (NUL and non-ASCII as \\u escapes), so any
    attribute key or value is text on every database.

    Exactly json.dumps(attributes, sort_keys=True, ensure_ascii=True) for a map of strings, which
    every stored row holds, but without building an encoder for each message (a third of the cost).
    """
    return _items_json(sorted(attributes.items()))


def _items_json(items: list[tuple[str, str]]) -> str:
    """attributes_json of the attributes' items, sorted."""
    if not items:
        return "{}"
    return "{" + ", ".join([f"{encode_basestring_ascii(key)}: {encode_basestring_ascii(value)}"
                            for key, value in items]) + "}"


def _timestamp(seconds: int, nanos: int) -> datetime | None:
    if not seconds and not nanos:
        return None
    return _EPOCH + timedelta(0, seconds, nanos // 1000)  # (days, seconds, microseconds): keywords cost twice


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
    """The row of a message's fields (by keyword, for readers; the two row_from_* pass them in order)."""
    return _row(user_id, subscription, message_id, data, attributes, publish_time, ordering_key, delivery_attempt,
                size, received_at)


def _row(user_id, subscription, message_id, data, attributes, publish_time, ordering_key, delivery_attempt, size,
         received_at) -> dict[str, Any]:
    # Called for every message received: positional arguments, and the message's attribute map read
    # once into a dict, key by key (its items() view iterates in Python, at twice the cost).
    data_text, data_bytes, is_json = split_payload(bytes(data))
    attributes = {key: attributes[key] for key in attributes} if attributes else {}
    row = {
        "user_id": user_id,
        "subscription": subscription,
        "message_id": message_id,
        "publish_time": publish_time,
        "received_at": received_at,
        "data_text": data_text,
        "data_bytes": data_bytes,
        "is_json": is_json,
        "attributes_json": attributes_json(attributes),
        # Not a column: the same attributes as a dict, for the alert rules and a local filter, which
        # would otherwise parse attributes_json back for every message. Inserts ignore the key.
        "attributes": attributes,
        "ordering_key": ordering_key or None,
        "delivery_attempt": delivery_attempt or None,
        "size": size,
        "quarantine_reason": None,
        "raw_message": None,
    }
    reason = (_text_problem("message id", message_id, MESSAGE_ID_LIMIT)
              or _text_problem("ordering key", ordering_key, ORDERING_KEY_LIMIT))
    return row if reason is None else quarantined(row, reason)


def row_from_pulled(received, *, user_id: int, subscription: str, received_at: datetime | None = None) -> dict:
    """A row from a raw `ReceivedMessage` protobuf, as returned by unary Pull."""
    message = received.message
    published = message.publish_time  # read once: each read of a message field costs a lookup
    return _row(user_id, subscription, message.message_id, message.data, message.attributes,
                _timestamp(published.seconds, published.nanos), message.ordering_key, received.delivery_attempt,
                message.ByteSize(), received_at or datetime.now(UTC))


def row_from_streamed(message, *, user_id: int, subscription: str, received_at: datetime | None = None) -> dict:
    """A row from a `google.cloud.pubsub_v1.subscriber.message.Message` (StreamingPull)."""
    return _row(user_id, subscription, message.message_id, message.data, message.attributes, message.publish_time,
                message.ordering_key, message.delivery_attempt, message.size, received_at or datetime.now(UTC))
