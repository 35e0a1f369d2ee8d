"""The message filter: free text, attribute key=value pairs, a publish-time range and a subscription.

The filter lives in the URL (q, attr, from, to, sub). Every value reaches SQL as a bound
parameter; LIKE wildcards in the text are escaped, so input only ever matches literally.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from app.models import UserItem
from app.names import lenient_canonical

MAX_ATTRIBUTE_FILTERS = 10


class FilterError(ValueError):
    """A filter value the user gave cannot be understood; the message says why, `field` which (its URL name)."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


def parse_time(value: str, name: str) -> datetime | None:
    """An ISO 8601 time (a browser's datetime-local value counts as UTC)."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"{name} must be a date and time such as 2024-05-01T12:00, not {value!r}",
                          name) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def attribute_needle(key: str, value: str) -> str:
    """The exact text a key=value pair has inside the stored attributes JSON (json.dumps, default separators)."""
    return json.dumps(key) + ": " + json.dumps(value)


def position_function(dialect: str):
    """Plain substring position, case-sensitive and without wildcards: instr on SQLite, strpos on PostgreSQL."""
    return sa.func.instr if dialect == "sqlite" else sa.func.strpos


@dataclass
class ItemFilter:
    text: str = ""
    attributes: list[tuple[str, str]] = field(default_factory=list)
    published_from: datetime | None = None
    published_to: datetime | None = None
    subscription: str = ""

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
        published_from = parse_time(args.get("from", ""), "from")
        published_to = parse_time(args.get("to", ""), "to")
        return cls(
            text=args.get("q", ""),
            attributes=pairs,
            published_from=published_from,
            published_to=published_to,
            subscription=lenient_canonical(args.get("sub", ""), project_id) if args.get("sub", "").strip() else "",
        )

    def to_args(self) -> dict:
        """The filter as URL query arguments (for links, the live poll and the exports)."""
        args: dict = {}
        if self.text:
            args["q"] = self.text
        if self.attributes:
            args["attr"] = [f"{key}={value}" for key, value in self.attributes]
        if self.published_from:
            args["from"] = self.published_from.isoformat()
        if self.published_to:
            args["to"] = self.published_to.isoformat()
        if self.subscription:
            args["sub"] = self.subscription
        return args

    def apply(self, query: sa.Select, dialect: str) -> sa.Select:
        """Narrow a query over UserItem by this filter; all values are bound parameters."""
        if self.text:
            # Case-insensitive; %, _ and the escape character in the input match themselves.
            query = query.where(UserItem.data_text.icontains(self.text, autoescape=True))
        position = position_function(dialect)
        for key, value in self.attributes:
            query = query.where(position(UserItem.attributes_json, attribute_needle(key, value)) > 0)
        if self.published_from is not None:
            query = query.where(UserItem.publish_time >= self.published_from)
        if self.published_to is not None:
            query = query.where(UserItem.publish_time <= self.published_to)
        if self.subscription:
            query = query.where(UserItem.subscription == self.subscription)
        return query
