"""Streaming exports of a user's messages: JSON Lines (replayable) and CSV.

Memory is bounded by bytes, not rows: a message may be 10 MB. Rows come from the database
in keyset batches of about FLUSH_BYTES of data (the ids and sizes are read first, a small
page at a time), as plain tuples (no ORM identity map), and the output is flushed to the
client whenever about FLUSH_BYTES of it are waiting.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa

from app.models import UserItem, iso

# About this much data is fetched from the database, and this much output buffered, at a time.
FLUSH_BYTES = 1024 * 1024
# Ids (and sizes) are read this many at a time to plan the batches.
ID_PAGE_ROWS = 1000
# A cell starting with one of these is a formula to a spreadsheet (OWASP: CSV injection).
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

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
    return iso(value)


def encoded_data(data_text: str | None, data_bytes: bytes | None) -> tuple[str, str]:
    """(data, encoding): the text as it is, or base64 of bytes that are not UTF-8 text."""
    if data_bytes is not None:
        return base64.b64encode(bytes(data_bytes)).decode("ascii"), "base64"
    return data_text or "", "utf-8"


def decoded_data(record: dict) -> bytes:
    """The exact bytes of an exported message (the inverse of encoded_data).

    A CSV cell of base64 may carry the formula-guard quote (csv_cell); base64 never holds one.
    """
    if record.get("data_encoding") == "base64":
        return base64.b64decode(record["data"].removeprefix("'"))
    return record["data"].encode("utf-8")


def csv_cell(value):
    """The value, with a ' in front when a spreadsheet would read it as a formula."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_STARTS):
        return "'" + value
    return value


def export_rows(connection: sa.Connection, query: sa.Select) -> Iterator[sa.Row]:
    """The rows of `query` (a select of EXPORT_COLUMNS, unordered) in id order, about
    FLUSH_BYTES of data per database round trip, whatever the size of each message."""
    plan = query.with_only_columns(UserItem.id, UserItem.size).order_by(UserItem.id.asc())
    last_id = None
    while True:
        page = plan if last_id is None else plan.where(UserItem.id > last_id)
        keys = connection.execute(page.limit(ID_PAGE_ROWS)).all()
        if not keys:
            return
        first_id, batch_size = keys[0].id, 0
        for index, key in enumerate(keys):
            batch_size += key.size or 0
            if batch_size >= FLUSH_BYTES or index == len(keys) - 1:
                # The same filter over the id range gives exactly these rows.
                yield from connection.execute(
                    query.where(UserItem.id >= first_id, UserItem.id <= key.id).order_by(UserItem.id.asc())
                )
                if index + 1 < len(keys):
                    first_id, batch_size = keys[index + 1].id, 0
        last_id = keys[-1].id


def jsonl_chunks(rows: Iterator[sa.Row]) -> Iterator[str]:
    lines: list[str] = []
    buffered = 0
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
        buffered += len(lines[-1])
        if buffered >= FLUSH_BYTES:
            yield "".join(lines)
            lines, buffered = [], 0
    if lines:
        yield "".join(lines)


def csv_chunks(rows: Iterator[sa.Row]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for row in rows:
        data, encoding = encoded_data(row.data_text, row.data_bytes)
        writer.writerow([csv_cell(cell) for cell in (
            row.id, row.message_id, row.subscription, _iso(row.publish_time) or "", _iso(row.received_at) or "",
            row.ordering_key or "", row.delivery_attempt or "", row.size, row.attributes_json, data, encoding)])
        if buffer.tell() >= FLUSH_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
