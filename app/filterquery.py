"""Pub/Sub filter expressions over stored messages: in SQL where the database can answer them,
and by the evaluator (app.filterlang) over a bounded scan, newest first, where it cannot.

The SQL translation keeps Pub/Sub's meaning for a missing key: each attribute condition is a
plain true or false, never NULL, so that NOT of it is the complement. Values reach SQL only as
bound parameters; a prefix is compared as a leading substring, so % and _ match themselves.

Neither database reads a NUL character in the stored JSON as it is: PostgreSQL's jsonb cannot
hold one, and SQLite's JSON functions cut the text at it. A row whose stored attributes hold one
(its JSON text holds the escape \\u0000) is therefore always a candidate in SQL, and the
evaluator decides it: searches pass every candidate through `Filter.matches`. A condition whose
key or value holds NUL is left to the evaluator altogether.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from app.filterlang import And, Equals, Filter, Has, HasPrefix, MatchAll, Node, Not, NotEquals, Or
from app.models import UserItem

# A scan reads the database this many rows at a time.
SCAN_PAGE_ROWS = 500
# The escape JSON writes for a NUL character, as it appears in attributes_json.
NUL_ESCAPE = "\\u0000"


def _attribute_table():
    return sa.func.json_each(UserItem.attributes_json).table_valued("key", "value").alias("attribute")


def _sqlite_condition(node: Node) -> sa.ColumnElement[bool] | None:
    """One attribute condition on SQLite: EXISTS over json_each, which is true or false, never NULL."""
    attribute = _attribute_table()
    if isinstance(node, Has):
        return sa.exists().where(attribute.c.key == node.key)
    if isinstance(node, Equals):
        return sa.exists().where(attribute.c.key == node.key, attribute.c.value == node.value)
    if isinstance(node, NotEquals):
        # != is the negation of = (app.filterlang, reading 1): true on a message without the key.
        return ~sa.exists().where(attribute.c.key == node.key, attribute.c.value == node.value)
    if isinstance(node, HasPrefix):
        # substr counts characters, as len() does: the leading len(prefix) characters equal the prefix.
        return sa.exists().where(attribute.c.key == node.key,
                                 sa.func.substr(attribute.c.value, 1, len(node.prefix)) == node.prefix)
    return None


def _postgresql_condition(node: Node) -> sa.ColumnElement[bool] | None:
    """One attribute condition on PostgreSQL through jsonb, wrapped so that a missing key gives false."""
    attributes = sa.cast(UserItem.attributes_json, postgresql.JSONB)
    if isinstance(node, Has):
        return attributes.has_key(sa.bindparam(None, node.key, type_=sa.Text))
    value = attributes.op("->>")(sa.bindparam(None, node.key, type_=sa.Text))
    if isinstance(node, Equals):
        return sa.func.coalesce(value == sa.bindparam(None, node.value, type_=sa.Text), sa.false())
    if isinstance(node, NotEquals):
        # The negation of =: true on a message without the key (app.filterlang, reading 1).
        return sa.not_(sa.func.coalesce(value == sa.bindparam(None, node.value, type_=sa.Text), sa.false()))
    if isinstance(node, HasPrefix):
        return sa.func.coalesce(sa.func.starts_with(value, sa.bindparam(None, node.prefix, type_=sa.Text)),
                                sa.false())
    return None


def translate(node: Node, dialect: str) -> sa.ColumnElement[bool] | None:
    """The condition as SQL over UserItem that is exactly true where the evaluator says true, or None
    where SQL cannot express it (data conditions, NUL in a key or value). It is exact for rows whose
    attributes hold no NUL; `candidates` covers those."""
    if isinstance(node, MatchAll):
        return sa.true()
    if isinstance(node, Not):
        operand = translate(node.operand, dialect)
        return None if operand is None else sa.not_(operand)
    if isinstance(node, And | Or):
        operands = [translate(operand, dialect) for operand in node.operands]
        if any(operand is None for operand in operands):
            return None
        return sa.and_(*operands) if isinstance(node, And) else sa.or_(*operands)
    if isinstance(node, Has | Equals | NotEquals | HasPrefix):
        if any("\x00" in text for text in (node.key, getattr(node, "value", ""), getattr(node, "prefix", ""))):
            return None  # neither database compares text holding NUL whole: the evaluator decides
        return _sqlite_condition(node) if dialect == "sqlite" else _postgresql_condition(node)
    return None


def _narrowing(node: Node, dialect: str) -> sa.ColumnElement[bool] | None:
    """A condition true for every row the node accepts (exact where it translates), or None."""
    exact = translate(node, dialect)
    if exact is not None:
        return exact
    if isinstance(node, And):
        parts = [part for part in (_narrowing(operand, dialect) for operand in node.operands) if part is not None]
        return sa.and_(*parts) if parts else None
    return None


@dataclass
class Expression:
    """A parsed filter expression as a search uses it: what SQL narrows, and whether SQL decides alone."""

    filter: Filter
    dialect: str
    # True when SQL returns exactly the matching rows; else a scan must bound the evaluator's work.
    exact_in_sql: bool = field(init=False)

    def __post_init__(self) -> None:
        self.exact_in_sql = translate(self.filter.root, self.dialect) is not None

    def candidates(self) -> sa.ColumnElement[bool] | None:
        """A SQL condition every matching row meets (None: no narrowing). Rows it lets through are
        checked with the evaluator."""
        condition = _narrowing(self.filter.root, self.dialect)
        if condition is None or isinstance(self.filter.root, MatchAll):
            return condition
        # A row whose attributes hold NUL is a candidate, never read as JSON by the database.
        position = sa.func.instr if self.dialect == "sqlite" else sa.func.strpos
        return sa.case((position(UserItem.attributes_json, NUL_ESCAPE) > 0, sa.true()), else_=condition)

    def matches(self, attributes_json: str | None, data_text: str | None = None,
                data_bytes: bytes | None = None) -> bool:
        attributes = json.loads(attributes_json or "{}")
        data = None
        if self.filter.uses_data:
            data = bytes(data_bytes) if data_bytes is not None else (data_text or "")
        return self.filter.matches(attributes, data)

    def evaluation_columns(self) -> tuple:
        columns = (UserItem.attributes_json,)
        return (*columns, UserItem.data_text, UserItem.data_bytes) if self.filter.uses_data else columns

    def row_matches(self, row) -> bool:
        """Whether a row holding evaluation_columns() matches."""
        if self.filter.uses_data:
            return self.matches(row.attributes_json, row.data_text, row.data_bytes)
        return self.matches(row.attributes_json)


@dataclass
class ScanResult:
    """What a bounded scan found: the matching rows in scan order, and how far it read."""

    matches: list = field(default_factory=list)
    scanned: int = 0
    # The id of the last row read; the next scan in the same direction continues after it.
    last_id: int | None = None
    # Whether the scan read every row in its direction (False: it stopped at a bound).
    exhausted: bool = False
    # The received time of the last row read (how far back a newest-first scan reached).
    reached_at: datetime | None = None
    # The id of the first row read.
    first_id: int | None = None


def scan(session, query: sa.Select, expression: Expression, *, columns: tuple = (), newest_first: bool = True,
         after: int | None = None, before: int | None = None, max_matches: int | None = None,
         max_scanned: int = 5000) -> ScanResult:
    """Read `query`'s rows (a select over UserItem) in id order, keyset-paged, evaluating each, until
    `max_matches` match or `max_scanned` have been read. Matching rows are returned with `columns`
    (plus UserItem.id and UserItem.received_at)."""
    result = ScanResult()
    selected = query.with_only_columns(UserItem.id, UserItem.received_at, *columns,
                                       *expression.evaluation_columns())
    cursor_after, cursor_before = after, before
    while result.scanned < max_scanned:
        page = selected
        if cursor_after is not None:
            page = page.where(UserItem.id > cursor_after)
        if cursor_before is not None:
            page = page.where(UserItem.id < cursor_before)
        page = page.order_by(UserItem.id.desc() if newest_first else UserItem.id.asc())
        limit = min(SCAN_PAGE_ROWS, max_scanned - result.scanned)
        rows = session.execute(page.limit(limit)).all()
        for row in rows:
            if result.first_id is None:
                result.first_id = row.id
            result.scanned += 1
            result.last_id = row.id
            result.reached_at = row.received_at
            if expression.row_matches(row):
                result.matches.append(row)
                if max_matches is not None and len(result.matches) >= max_matches:
                    return result
        if len(rows) < limit:
            result.exhausted = True
            return result
        if newest_first:
            cursor_before = result.last_id
        else:
            cursor_after = result.last_id
    # Stopped at the bound: it is exhausted only if nothing lies beyond.
    if result.last_id is None:
        return result  # a bound of 0 read nothing
    beyond = selected.where(UserItem.id < result.last_id if newest_first else UserItem.id > result.last_id)
    result.exhausted = session.execute(beyond.limit(1)).first() is None
    return result


def matching_rows(rows: Iterator, expression: Expression) -> Iterator:
    """The rows (holding evaluation_columns()) that the expression accepts, streamed."""
    return (row for row in rows if expression.row_matches(row))
