"""Activity: counts and latencies grouped by time bucket, and the geometry of small server-drawn charts.

Buckets are aligned on multiples of their width since the Unix epoch, in UTC, so that a bucket
of an hour starts on the hour. The database groups the counts; latency percentiles are computed
here over at most MAX_LATENCY_ROWS of the newest messages, the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from app.models import UserItem

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
# Bucket widths, narrowest first; a range gets the narrowest that keeps it within MAX_BUCKETS.
BUCKET_STEPS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30),
                timedelta(hours=1), timedelta(hours=3), timedelta(hours=6), timedelta(hours=12), timedelta(days=1))
MAX_BUCKETS = 120
MAX_CUSTOM_RANGE = timedelta(days=92)
# A custom range lies between these, so that bucket arithmetic stays inside datetime's years.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
TOP_VALUES = 10
MAX_LATENCY_ROWS = 100_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TimeWindow:
    """[start, end) cut into buckets of `step`; start and end lie on bucket boundaries."""

    start: datetime
    end: datetime
    step: timedelta
    # The zone the page shows times in (the browser's, or UTC): labels are written in it.
    zone: tzinfo = UTC

    @property
    def zone_name(self) -> str:
        return "UTC" if self.zone is UTC else str(self.zone)

    def in_zone(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    @property
    def bucket_count(self) -> int:
        return int((self.end - self.start) / self.step)

    def bucket_start(self, index: int) -> datetime:
        return self.start + self.step * index

    @property
    def step_words(self) -> str:
        minutes = int(self.step.total_seconds() // 60)
        if minutes < 60:
            return "minute" if minutes == 1 else f"{minutes} minutes"
        hours = minutes // 60
        return "hour" if hours == 1 else ("day" if hours == 24 else f"{hours} hours")


def _floor(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + step * ((moment - EPOCH) // step)


def choose_step(span: timedelta) -> timedelta:
    return next((step for step in BUCKET_STEPS if span / step <= MAX_BUCKETS), BUCKET_STEPS[-1])


def time_window(start: datetime, end: datetime, zone: tzinfo = UTC) -> TimeWindow:
    """The buckets covering [start, end), widened to whole buckets, labelled in `zone`."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    step = choose_step(end - start)
    first = _floor(start, step)
    last = _floor(end, step)
    if last < end:
        last += step
    return TimeWindow(first, max(last, first + step), step, zone)


def preset_window(range_name: str, now: datetime, zone: tzinfo = UTC) -> TimeWindow:
    """The last hour, day or week up to now, the current bucket included."""
    now = now.astimezone(UTC)
    return time_window(now - RANGES[range_name], now + timedelta(microseconds=1), zone)


# --- SQL expressions ---------------------------------------------------------------------------------


def epoch_seconds(dialect: str, column):
    """A stored time as whole seconds since the epoch (UTC)."""
    if dialect == "sqlite":
        return sa.cast(sa.func.strftime("%s", column), sa.Integer)
    return sa.cast(sa.func.floor(sa.extract("epoch", column)), sa.BigInteger)


def bucket_expression(dialect: str, window: TimeWindow):
    """The index of the bucket received_at falls in (0 for the first)."""
    offset = epoch_seconds(dialect, UserItem.received_at) - int((window.start - EPOCH).total_seconds())
    # Integer division of integers on both databases; offsets are never negative, so it floors.
    return offset // int(window.step.total_seconds())


def latency_expression(dialect: str):
    """received_at minus publish_time, in seconds (fractional)."""
    if dialect == "sqlite":
        return (sa.func.julianday(UserItem.received_at) - sa.func.julianday(UserItem.publish_time)) * 86400.0
    return sa.extract("epoch", UserItem.received_at - UserItem.publish_time)


def attribute_expression(dialect: str, key: str):
    """One attribute's value out of the stored attributes JSON; the key is a bound parameter."""
    if dialect == "sqlite":
        # A JSON path with the key quoted; keys holding a double quote are refused by the view.
        return sa.func.json_extract(UserItem.attributes_json, f'$."{key}"')
    # jsonb refuses \u0000 (a NUL in an attribute); such a character is shown as U+FFFD instead.
    attributes = sa.func.replace(UserItem.attributes_json, "\\u0000", "\\ufffd")
    return sa.cast(attributes, postgresql.JSONB).op("->>")(sa.bindparam("attribute_key", key))


# --- statistics ----------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the values lie (linear interpolation, like percentile_cont)."""
    if not sorted_values:
        raise ValueError("no values")
    position = (len(sorted_values) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_percentiles(rows: list[tuple[int, float]], bucket_count: int) -> list[tuple[float, float] | None]:
    """(p50, p95) per bucket from (bucket, latency seconds) rows; None where a bucket has no message."""
    by_bucket: dict[int, list[float]] = {}
    for bucket, latency in rows:
        if latency is not None and 0 <= bucket < bucket_count:
            by_bucket.setdefault(int(bucket), []).append(max(0.0, float(latency)))
    result: list[tuple[float, float] | None] = []
    for index in range(bucket_count):
        values = sorted(by_bucket.get(index, []))
        result.append((percentile(values, 0.5), percentile(values, 0.95)) if values else None)
    return result


def top_with_other(pairs: list[tuple[str, int]], total: int) -> list[tuple[str, int]]:
    """The first TOP_VALUES pairs (largest first), then "other" with whatever the rest add up to."""
    top = pairs[:TOP_VALUES]
    other = total - sum(count for _label, count in top)
    return top + [("other", other)] if other > 0 else top


# --- chart geometry --------------------------------------------------------------------------------------
# Charts are drawn with x in percent of the plot's width and y in pixels, so that they stretch to
# any screen while their text keeps its size.

PLOT_TOP, PLOT_HEIGHT = 8, 180
X_LABEL_Y = PLOT_TOP + PLOT_HEIGHT + 18
CHART_HEIGHT = X_LABEL_Y + 8


@dataclass
class Tick:
    label: str
    position: float  # y in pixels for the value axis, x in percent for the time axis
    minor: bool = False


@dataclass
class Column:
    label: str
    value: float
    x: float  # percent
    width: float  # percent
    y: float  # pixels
    height: float  # pixels


@dataclass
class ColumnChart:
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    series: list[list[Column]] = field(default_factory=list)
    top: float = 0
    height: int = CHART_HEIGHT
    plot_bottom: int = PLOT_TOP + PLOT_HEIGHT


def nice_top(largest: float, tick_count: int = 4) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^n step that makes tick_count steps reach `largest`."""
    if largest <= 0:
        return tick_count
    raw = largest / tick_count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(multiple * magnitude for multiple in (1, 2, 2.5, 5, 10) if multiple * magnitude >= raw)
    return step * tick_count


def _y(value: float, top: float) -> float:
    return PLOT_TOP + PLOT_HEIGHT - value / top * PLOT_HEIGHT


def _number(value: float, unit: str = "") -> str:
    if unit == "s":
        if value and value < 1:
            return f"{value * 1000:g} ms"
        return f"{value:g} s"
    return f"{value:g}"


def _time_label(moment: datetime, window: TimeWindow) -> str:
    moment = window.in_zone(moment)
    if window.end - window.start <= timedelta(days=1) + window.step:
        return moment.strftime("%b %d") if (moment.hour, moment.minute) == (0, 0) else moment.strftime("%H:%M")
    if window.step >= timedelta(days=1) or (moment.hour, moment.minute) == (0, 0):
        return moment.strftime("%b %d")
    return moment.strftime("%b %d %H:%M")


def time_ticks(window: TimeWindow, wanted: int = 6) -> list[Tick]:
    """About `wanted` labelled moments on bucket boundaries, at round times; every other one is minor."""
    span = window.end - window.start
    candidates = [window.step * multiple for multiple in (1, 2, 3, 4, 6, 8, 12, 24, 48, 96, 192)]
    candidates += [timedelta(minutes=5), timedelta(minutes=10), timedelta(minutes=15), timedelta(minutes=30),
                   timedelta(hours=1), timedelta(hours=2), timedelta(hours=3), timedelta(hours=6),
                   timedelta(hours=12), timedelta(days=1), timedelta(days=2), timedelta(days=7)]
    usable = sorted(step for step in candidates if step >= window.step and step % window.step == timedelta(0))
    every = next((step for step in usable if span / step <= wanted), usable[-1])
    ticks = []
    moment = _floor(window.start, every)
    if moment < window.start:
        moment += every
    while moment <= window.end:
        position = (moment - window.start) / span * 100
        ticks.append(Tick(_time_label(moment, window), position, minor=len(ticks) % 2 == 1))
        moment += every
    return ticks


def column_chart(window: TimeWindow, series: list[list[float | None]], unit: str = "") -> ColumnChart:
    """Columns per bucket for one or more series drawn over each other (the first is the tallest)."""
    largest = max((value for values in series for value in values if value is not None), default=0)
    top = nice_top(largest)
    y_ticks = [Tick(_number(top * index / 4, unit), _y(top * index / 4, top)) for index in range(5)]
    slot = 100 / window.bucket_count
    chart = ColumnChart(y_ticks=y_ticks, x_ticks=time_ticks(window), top=top)
    for number, values in enumerate(series):
        # Later series are narrower, so one drawn over another leaves the one behind visible.
        width = slot * (0.84 if number == 0 else 0.5)
        columns = []
        for index, value in enumerate(values):
            if not value:
                continue
            x = index * slot + (slot - width) / 2
            columns.append(Column(_time_label(window.bucket_start(index), window), value, x, width,
                                  _y(value, top), PLOT_TOP + PLOT_HEIGHT - _y(value, top)))
        chart.series.append(columns)
    return chart


@dataclass
class RowBar:
    label: str
    count: int
    percent_of_largest: float
    share: float  # percent of all


def row_bars(pairs: list[tuple[str, int]]) -> list[RowBar]:
    """Horizontal bars: each label's count, its length relative to the largest, and its share of the total."""
    largest = max((count for _label, count in pairs), default=0) or 1
    total = sum(count for _label, count in pairs) or 1
    return [RowBar(label, count, count / largest * 100, count / total * 100) for label, count in pairs]
