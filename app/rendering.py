"""How a stored message is shown: highlighted JSON, escaped text, or a labelled hex view."""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from markupsafe import Markup
from pygments import highlight

from app.jsonhtml import highlight_value
from app.models import UserItem

# Data larger than this is cut in the list; the detail view shows all of it.
LIST_PREVIEW_BYTES = 20_000
# A hex dump is about twelve times the size of its bytes in HTML, so binary data is cut sooner.
HEX_PREVIEW_BYTES = 4_096
# Highlighting wraps every token in a span; beyond this, JSON is shown as plain text.
HIGHLIGHT_MAX_BYTES = 1_000_000


@dataclass
class RenderedData:
    kind: str  # "json", "text", "binary" or "empty"
    html: Markup
    truncated: bool
    size: int


def highlight_json(value, sort_keys: bool = False) -> Markup:
    """The value pretty-printed (indent 2) and highlighted as Pygments does it (app/jsonhtml.py).

    Raises ValueError or RecursionError when the value cannot be highlighted within bounds;
    callers then show the data as escaped text.
    """
    html = highlight_value(value, sort_keys=sort_keys)
    if html is None:
        text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=sort_keys)
        if len(text) > HIGHLIGHT_MAX_BYTES:
            raise ValueError("too large to highlight once indented")
        html = highlight(text, current_app.json_lexer, current_app.html_formatter)
    # Both escape the text they are given; the result is safe markup.
    return Markup(html)


# Printable ASCII stands for itself in the hex view's text column; every other byte is a dot.
_ASCII_COLUMN = bytes(byte if 32 <= byte < 127 else ord(".") for byte in range(256))


def hex_view(data: bytes) -> Markup:
    """Rows of 16 bytes: offset, hex and ASCII, each in its own span so narrow screens can stack them."""
    text = bytes(data).translate(_ASCII_COLUMN).decode("ascii")
    rows = []
    for offset in range(0, len(data), 16):
        # Only the ASCII column can hold <, > or &; the others are hex digits and spaces.
        ascii_part = text[offset : offset + 16].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f'<span class="hex-row"><span class="hex-pos">{offset:08x}</span>  '
                    f'<span class="hex-bytes">{data[offset : offset + 16].hex(" "):<47}</span>  '
                    f'<span class="hex-ascii">{ascii_part}</span></span>')
    return Markup("\n".join(rows))


def preview_columns() -> tuple:
    """SQL for the start of an item's data, so that a list of 10 MB messages never loads them whole.

    One character is at least one byte, so LIST_PREVIEW_BYTES + 1 characters are enough to
    tell whether the text is longer than LIST_PREVIEW_BYTES bytes.
    """
    return (
        sa.func.substr(UserItem.data_text, 1, LIST_PREVIEW_BYTES + 1, type_=sa.Text).label("text_preview"),
        sa.func.substr(UserItem.data_bytes, 1, HEX_PREVIEW_BYTES + 1, type_=sa.LargeBinary).label("bytes_preview"),
    )


def with_previews(query: sa.Select) -> sa.Select:
    """Select (item, text_preview, bytes_preview) rows, leaving the full data unloaded."""
    return query.add_columns(*preview_columns()).options(
        so.defer(UserItem.data_text, raiseload=True), so.defer(UserItem.data_bytes, raiseload=True)
    )


def looks_like_json(item, text: str) -> bool:
    return item.is_json or text.lstrip()[:1] in ("{", "[")


def render_data(item, limit: int | None = LIST_PREVIEW_BYTES, *, previewed: bool = False,
                text: str | None = None, raw: bytes | None = None, hex_limit: int = HEX_PREVIEW_BYTES) -> RenderedData:
    """Render an item's data, cut to `limit` bytes when a limit is given; binary data is cut to
    `hex_limit` in any case (its hex view is about twelve times its size in HTML).

    With previewed=True, `text` and `raw` are the starts of the data from preview_columns()
    and the item's own data columns are not touched.
    """
    if not previewed:
        text, raw = item.data_text, item.data_bytes
    size = item.size
    if raw is not None:
        raw = bytes(raw)
        shown_limit = hex_limit if limit is None else min(limit, hex_limit)
        cut = len(raw) > shown_limit
        shown = raw[:shown_limit] if cut else raw
        html = Markup('<pre class="hexdump">{}</pre>').format(hex_view(shown))
        return RenderedData("binary", html, cut, size)
    if not text:
        return RenderedData("empty", Markup('<span class="text-muted">(no data)</span>'), False, size)
    if limit is not None and len(text) * 4 > limit:
        encoded = text.encode("utf-8")
        if len(encoded) > limit:
            # Cut on a character boundary; the detail view has the rest.
            shown_text = encoded[:limit].decode("utf-8", errors="ignore")
            kind = "json" if looks_like_json(item, text) else "text"
            return RenderedData(kind, Markup('<pre class="data-text">{}</pre>').format(shown_text), True, size)
    if looks_like_json(item, text) and len(text) <= HIGHLIGHT_MAX_BYTES:
        try:
            return RenderedData("json", highlight_json(json.loads(text)), False, size)
        except (ValueError, RecursionError):
            # Not JSON after all, or nested too deeply to parse or lay out: shown as text.
            pass
    return RenderedData("text", Markup('<pre class="data-text">{}</pre>').format(text), False, size)


def render_attributes(item) -> Markup:
    try:
        attributes = item.attributes
        if not attributes:
            return Markup('<span class="text-muted">(none)</span>')
        return highlight_json(attributes, sort_keys=True)
    except (ValueError, RecursionError):
        return Markup('<pre class="data-text">{}</pre>').format(item.attributes_json)
