"""Activity counts for the charts, grouped in SQL, and the geometry of small SVG bar charts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from app.models import UserItem

UNITS = {"minute": (timedelta(minutes=1), 24 * 60), "hour": (timedelta(hours=1), 24)}
MAX_BREAKDOWN_VALUES = 20


def bucket_expression(dialect: str, unit: str):
    """received_at cut to the minute or hour, as 'YYYY-MM-DD HH:MM' text in UTC."""
    if dialect == "sqlite":
        pattern = "%Y-%m-%d %H:%M" if unit == "minute" else "%Y-%m-%d %H:00"
        return sa.func.strftime(pattern, UserItem.received_at)
    pattern = "YYYY-MM-DD HH24:MI" if unit == "minute" else "YYYY-MM-DD HH24:00"
    return sa.func.to_char(sa.func.timezone("UTC", UserItem.received_at), pattern)


def attribute_expression(dialect: str, key: str):
    """One attribute's value out of the stored attributes JSON; the key is a bound parameter."""
    if dialect == "sqlite":
        # A JSON path with the key quoted; keys holding a double quote are refused by the view.
        return sa.func.json_extract(UserItem.attributes_json, f'$."{key}"')
    # jsonb refuses \u0000 (a NUL in an attribute); such a character is shown as U+FFFD instead.
    attributes = sa.func.replace(UserItem.attributes_json, "\\u0000", "\\ufffd")
    return sa.cast(attributes, postgresql.JSONB).op("->>")(sa.bindparam("attribute_key", key))


@dataclass
class Bar:
    label: str
    count: int
    x: float
    y: float
    width: float
    height: float


def time_series(counts: dict[str, int], unit: str, now: datetime) -> list[tuple[str, int]]:
    """Every bucket of the last 24 hours, oldest first, with zero where nothing arrived."""
    step, buckets = UNITS[unit]
    now = now.astimezone(UTC)
    end = now.replace(second=0, microsecond=0) if unit == "minute" else now.replace(minute=0, second=0, microsecond=0)
    series = []
    for index in range(buckets - 1, -1, -1):
        start = end - step * index
        label = start.strftime("%Y-%m-%d %H:%M")
        series.append((label, counts.get(label, 0)))
    return series


def column_bars(series: list[tuple[str, int]], width: float, height: float) -> list[Bar]:
    top = max((count for _label, count in series), default=0) or 1
    slot = width / max(1, len(series))
    return [
        Bar(label, count, index * slot, height - count / top * height, max(slot * 0.9, 0.5), count / top * height)
        for index, (label, count) in enumerate(series)
    ]


def row_bars(pairs: list[tuple[str, int]], width: float, row_height: float) -> list[Bar]:
    top = max((count for _label, count in pairs), default=0) or 1
    return [Bar(label, count, 0, index * row_height, count / top * width, row_height * 0.8)
            for index, (label, count) in enumerate(pairs)]
