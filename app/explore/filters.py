"""The message filter: free text, attribute key=value pairs, a publish-time range, a subscription
and a Pub/Sub filter expression.

The filter lives in the URL (q, attr, from, to, sub, filter). Every value reaches SQL as a bound
parameter; LIKE wildcards in the text are escaped, so input only ever matches literally.
Attribute pairs are compared whole, key and value, through the database's JSON functions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from werkzeug.datastructures import MultiDict

from app.filterlang import Filter, FilterSyntaxError, parse
from app.filterquery import Expression
from app.models import UserItem, iso
from app.names import lenient_canonical

MAX_ATTRIBUTE_FILTERS = 10


class FilterError(ValueError):
    """A filter value the user gave cannot be understood; the message says why, `field` which (its URL name)."""

    def __init__(self, message: str, field: str = "", position: int | None = None):
        super().__init__(message)
        self.field = field
        # Where in the field's value the mistake is (a filter expression's syntax error), 0-based.
        self.position = position


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_zone(value: str | None) -> tzinfo:
    """The time zone a page's date inputs are read in (an IANA name the browser sends; default UTC)."""
    value = (value or "").strip()
    if not value or value.upper() in ("UTC", "ETC/UTC", "GMT", "ETC/GMT"):
        return UTC
    try:
        if len(value) > 64:  # IANA names are short; a long one would only reach the file system
            raise ValueError(value)
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise FilterError(f"unknown time zone {value!r}", "tz") from None


def parse_time(value: str, name: str, zone: tzinfo = UTC, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 date or time, in UTC; one without an offset is read in `zone`.

    With end_of_day, a bare date (2026-12-01) means the last instant of that day, so a range
    ending on a date includes the whole day.
    """
    value = (value or "").strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"{name} must be a date such as 2024-05-01 or a time such as 2024-05-01 12:00, "
                          f"not {value!r}", name) from None
    if end_of_day and _DATE_ONLY.fullmatch(value):
        parsed += timedelta(days=1, microseconds=-1)
    return parsed.replace(tzinfo=zone).astimezone(UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def attribute_needle(key: str, value: str) -> str:
    """The exact text a key=value pair has inside the stored attributes JSON (json.dumps, default separators)."""
    return json.dumps(key) + ": " + json.dumps(value)


def attribute_equals(dialect: str, key: str, value: str) -> sa.ColumnElement[bool]:
    """True where the message has the attribute `key` with exactly `value` (both bound parameters)."""
    if dialect == "sqlite":
        attribute = sa.func.json_each(UserItem.attributes_json).table_valued("key", "value").alias("attribute")
        return sa.exists().where(attribute.c.key == key, attribute.c.value == value)
    exact = sa.cast(UserItem.attributes_json, postgresql.JSONB).op("->>")(sa.bindparam(None, key)) == value
    # jsonb cannot hold NUL (its text form is \u0000): such rows fall back to the exact text of
    # the pair, which a key or value holding it can only imitate within that one message.
    return sa.case(
        (sa.func.strpos(UserItem.attributes_json, "\\u0000") > 0,
         sa.func.strpos(UserItem.attributes_json, attribute_needle(key, value)) > 0),
        else_=exact,
    )


@dataclass
class ItemFilter:
    text: str = ""
    attributes: list[tuple[str, str]] = field(default_factory=list)
    published_from: datetime | None = None
    published_to: datetime | None = None
    subscription: str = ""
    # A Pub/Sub filter expression (with the data extensions), as typed and as parsed.
    expression: str = ""
    parsed: Filter | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_args(cls, args: MultiDict, project_id: str) -> ItemFilter:
        pairs = []
        for raw in args.getlist("attr"):
            if not raw.strip():
                continue
            key, sep, value = raw.partition("=")
            if not sep or not key.strip():
                raise FilterError(f"an attribute filter must be key=value, not {raw!r}", "attr")
            pairs.append((key.strip(), value))
        if len(pairs) > MAX_ATTRIBUTE_FILTERS:
            raise FilterError(f"at most {MAX_ATTRIBUTE_FILTERS} attribute filters", "attr")
        zone = parse_zone(args.get("tz"))
        published_from = parse_time(args.get("from", ""), "from", zone)
        published_to = parse_time(args.get("to", ""), "to", zone, end_of_day=True)
        expression = args.get("filter", "")
        parsed = None
        if expression.strip():
            try:
                parsed = parse(expression, extensions=True)
            except FilterSyntaxError as error:
                raise FilterError(f"filter expression: {error.message} at {error.position}", "filter",
                                  error.position) from None
        return cls(
            text=args.get("q", ""),
            attributes=pairs,
            published_from=published_from,
            published_to=published_to,
            subscription=lenient_canonical(args.get("sub", ""), project_id) if args.get("sub", "").strip() else "",
            expression=expression if parsed is not None else "",
            parsed=parsed,
        )

    def to_args(self) -> dict:
        """The filter as URL query arguments (for links, the live poll and the exports)."""
        args: dict = {}
        if self.text:
            args["q"] = self.text
        if self.attributes:
            args["attr"] = [f"{key}={value}" for key, value in self.attributes]
        if self.published_from:
            args["from"] = iso(self.published_from)
        if self.published_to:
            args["to"] = iso(self.published_to)
        if self.subscription:
            args["sub"] = self.subscription
        if self.expression:
            args["filter"] = self.expression
        return args

    def compiled(self, dialect: str) -> Expression | None:
        """The filter expression as a search runs it on this database, or None without one."""
        return None if self.parsed is None else Expression(self.parsed, dialect)

    def apply(self, query: sa.Select, dialect: str) -> sa.Select:
        """Narrow a query over UserItem by this filter; all values are bound parameters."""
        if self.text:
            # Case-insensitive; %, _ and the escape character in the input match themselves.
            query = query.where(UserItem.data_text.icontains(self.text, autoescape=True))
        for key, value in self.attributes:
            query = query.where(attribute_equals(dialect, key, value))
        if self.published_from is not None:
            query = query.where(UserItem.publish_time >= self.published_from)
        if self.published_to is not None:
            query = query.where(UserItem.publish_time <= self.published_to)
        if self.subscription:
            query = query.where(UserItem.subscription == self.subscription)
        expression = self.compiled(dialect)
        if expression is not None and (candidates := expression.candidates()) is not None:
            # Every match meets it; the rows it lets through are checked by the evaluator (app.filterquery).
            query = query.where(candidates)
        return query
