"""Listing stored messages: keyset paging, row rendering and the rendered-row cache.

Shared by the live page (main), search (explore) and the subscriptions panel; no blueprint's
views live here.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict

import sqlalchemy as sa
from flask import current_app, jsonify, request, url_for

from app.extensions import db
from app.filterquery import Expression, scan
from app.models import UserItem
from app.rendering import render_data, with_previews

# Each poll answers with at most this many new messages; a burst is caught up over several polls.
MAX_ITEMS_PER_RESPONSE = 100
# Ids are 64-bit in the databases; a cursor beyond that range means "beyond every id".
MAX_ID = 2**63 - 1
# A collapsed row shows this many attributes as badges (then "+N"), and this much of the data.
BADGE_ATTRIBUTES = 3
PREVIEW_CHARACTERS = 240
# An expanded row shows this many lines of data, then "N more lines — show all".
EXPANDED_LINES = 40


class RenderedRows:
    """The app's recently rendered item rows, newest use last (an LRU, shared by a process's threads).

    A stored message never changes, and rendering its row costs a few tenths of a millisecond,
    so the many tabs watching one user's messages render each row once per process instead of
    once per poll, and a scroll back through history is served from memory. The cache is bounded
    by the memory its rows take, not by their number: a row of a large message is many times
    the size of a small one's. The key holds the owner, the dedup key (subscription, message_id,
    publish_time) and the id, so a reused id can never show another user's or another message.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.rows: OrderedDict[tuple, str] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> str | None:
        with self.lock:
            row = self.rows.get(key)
            if row is not None:
                self.rows.move_to_end(key)
            return row

    def put(self, key: tuple, row: str) -> None:
        size = sys.getsizeof(row)
        with self.lock:
            old = self.rows.pop(key, None)
            if old is not None:
                self.bytes -= sys.getsizeof(old)
            if size > self.max_bytes:
                return
            self.rows[key] = row
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self.rows.popitem(last=False)
                self.bytes -= sys.getsizeof(evicted)


def rendered_rows() -> RenderedRows:
    cache = current_app.extensions.get("rendered_item_rows")
    if cache is None:
        cache = current_app.extensions.setdefault(
            "rendered_item_rows", RenderedRows(current_app.config["RENDERED_ROWS_CACHE_MB"] * 1024 * 1024)
        )
    return cache


def one_line_preview(text: str | None, raw: bytes | None) -> str:
    """The start of the data on one line: text with its whitespace folded, or bytes in hex."""
    if raw is not None:
        return bytes(raw[:PREVIEW_CHARACTERS // 3]).hex(" ")
    return " ".join((text or "")[: PREVIEW_CHARACTERS * 2].split())[:PREVIEW_CHARACTERS]


def shown_lines(data_html: str) -> int:
    """How many lines the rendered data takes (Pygments and the plain views end lines with newlines)."""
    # Pygments ends the last line with a newline before </pre>; the plain views do not.
    return data_html.replace("\n</pre>", "</pre>").rstrip("\n").count("\n") + 1


def render_item_row(item: UserItem, text_preview: str | None, bytes_preview: bytes | None) -> str:
    """The item's row in the list (_useritem.html); the same for every viewer."""
    key = (item.id, item.user_id, item.subscription, item.message_id, item.publish_time)
    cache = rendered_rows()
    row = cache.get(key)
    if row is None:
        data = render_data(item, previewed=True, text=text_preview, raw=bytes_preview)
        attributes = sorted(item.attributes.items())
        lines = shown_lines(data.html)
        # The row needs no context processors: the template is rendered directly, which costs
        # half as much as render_template on a path that renders up to 100 rows per request.
        row = current_app.jinja_env.get_template("main/_useritem.html").render(
            item=item, data=data, attributes=attributes, badges=attributes[:BADGE_ATTRIBUTES],
            preview=one_line_preview(text_preview, bytes_preview),
            hidden_lines=lines - EXPANDED_LINES if lines > EXPANDED_LINES else 0,
            detail_url=url_for("main.useritem", item_id=item.id),
        )
        cache.put(key, row)
    return row


def list_items(query: sa.Select, limit: int) -> list:
    """Rows of (item, text_preview, bytes_preview): large data is cut in SQL, not in memory."""
    return list(db.session.execute(with_previews(query).limit(limit)))


def id_argument(name: str) -> int | None:
    """A whole-number id cursor from the query string, held within the databases' 64-bit range;
    None when absent or not a whole number."""
    value = request.args.get(name, type=int)
    return None if value is None else max(-MAX_ID, min(value, MAX_ID))


def keyset_page(query):
    """One page of `query`'s items as JSON rows, by the request's `after` or `before` id.

    `after` (the live poll) answers newer items oldest first, at most MAX_ITEMS_PER_RESPONSE;
    `before` (infinite scroll) answers older items newest first, ITEMS_PER_PAGE of them.
    """
    after = id_argument("after")
    before = id_argument("before")
    if before is not None:
        limit = current_app.config["ITEMS_PER_PAGE"]
        query = query.where(UserItem.id < before).order_by(UserItem.id.desc())
    else:
        limit = MAX_ITEMS_PER_RESPONSE
        query = query.where(UserItem.id > (after or 0)).order_by(UserItem.id.asc())
    # One extra row tells whether more are waiting, without a COUNT.
    rows = list_items(query, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return jsonify(
        {
            "status": "success" if rows else "unchanged",
            "items": [render_item_row(*row) for row in rows],
            "ids": [row[0].id for row in rows],
            "more": more,
        }
    )


def scanned_page(query, expression: Expression):
    """keyset_page for a query whose rows the filter expression still has to check (app.filterquery).

    At most FILTER_SCAN_MAX_MESSAGES rows are read per request. `scanned_to` is the id of the last
    row read, so that a client whose scan found nothing yet continues from there rather than
    reading the same rows again; `more` is true while rows remain beyond it.
    """
    after = id_argument("after")
    before = id_argument("before")
    newest_first = before is not None
    limit = current_app.config["ITEMS_PER_PAGE"] if newest_first else MAX_ITEMS_PER_RESPONSE
    result = scan(db.session, query, expression, newest_first=newest_first, after=None if newest_first else after or 0,
                  before=before, max_matches=limit + 1, max_scanned=current_app.config["FILTER_SCAN_MAX_MESSAGES"])
    ids = [row.id for row in result.matches[:limit]]
    rows = list_items(query.where(UserItem.id.in_(ids)).order_by(
        UserItem.id.desc() if newest_first else UserItem.id.asc()), limit) if ids else []
    more = len(result.matches) > limit or not result.exhausted
    if len(result.matches) > limit:
        scanned_to = ids[-1]
    else:
        scanned_to = result.last_id if result.last_id is not None else (before if newest_first else after)
    return jsonify(
        {
            "status": "success" if rows else "unchanged",
            "items": [render_item_row(*row) for row in rows],
            "ids": [row[0].id for row in rows],
            "more": more,
            "scanned": result.scanned,
            "scanned_to": scanned_to,
        }
    )
