"""Streaming exports of a user's messages: JSON Lines (replayable) and CSV.

Rows come from the database in chunks through a server-side cursor (PostgreSQL) or SQLite's
own stepping cursor, as plain tuples (no ORM identity map), so memory stays flat however many
rows there are.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa

from app.models import UserItem, as_utc

CHUNK_ROWS = 1000

EXPORT_COLUMNS = (
    UserItem.id,
    UserItem.message_id,
    UserItem.subscription,
    UserItem.publish_time,
    UserItem.received_at,
    UserItem.ordering_key,
    UserItem.delivery_attempt,
    UserItem.size,
    UserItem.attributes_json,
    UserItem.data_text,
    UserItem.data_bytes,
)

CSV_HEADER = ["id", "message_id", "subscription", "publish_time", "received_at", "ordering_key",
              "delivery_attempt", "size", "attributes", "data", "data_encoding"]


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value is not None else None


def encoded_data(data_text: str | None, data_bytes: bytes | None) -> tuple[str, str]:
    """(data, encoding): the text as it is, or base64 of bytes that are not UTF-8 text."""
    if data_bytes is not None:
        return base64.b64encode(bytes(data_bytes)).decode("ascii"), "base64"
    return data_text or "", "utf-8"


def decoded_data(record: dict) -> bytes:
    """The exact bytes of an exported message (the inverse of encoded_data)."""
    if record.get("data_encoding") == "base64":
        return base64.b64decode(record["data"])
    return record["data"].encode("utf-8")


def export_rows(connection: sa.Connection, query: sa.Select) -> Iterator[sa.Row]:
    result = connection.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(query)
    try:
        yield from result
    finally:
        result.close()


def jsonl_chunks(rows: Iterator[sa.Row]) -> Iterator[str]:
    lines: list[str] = []
    for row in rows:
        data, encoding = encoded_data(row.data_text, row.data_bytes)
        lines.append(json.dumps({
            "id": row.id,
            "message_id": row.message_id,
            "subscription": row.subscription,
            "publish_time": _iso(row.publish_time),
            "received_at": _iso(row.received_at),
            "ordering_key": row.ordering_key or "",
            "delivery_attempt": row.delivery_attempt,
            "size": row.size,
            "attributes": json.loads(row.attributes_json or "{}"),
            "data": data,
            "data_encoding": encoding,
        }, ensure_ascii=False) + "\n")
        if len(lines) >= CHUNK_ROWS:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


def csv_chunks(rows: Iterator[sa.Row]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    count = 0
    for row in rows:
        data, encoding = encoded_data(row.data_text, row.data_bytes)
        writer.writerow([row.id, row.message_id, row.subscription, _iso(row.publish_time) or "",
                         _iso(row.received_at) or "", row.ordering_key or "", row.delivery_attempt or "",
                         row.size, row.attributes_json, data, encoding])
        count += 1
        if count % CHUNK_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
