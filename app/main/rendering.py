"""How a stored message is shown: highlighted JSON, escaped text, or a labelled hex view."""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import current_app
from markupsafe import Markup, escape
from pygments import highlight

# Data larger than this is cut in the list; the detail view shows all of it.
LIST_PREVIEW_BYTES = 20_000
HEX_PREVIEW_BYTES = 4_096


@dataclass
class RenderedData:
    kind: str  # "json", "text", "binary" or "empty"
    html: Markup
    truncated: bool
    size: int


def highlight_json(value) -> Markup:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    # Pygments escapes the text it is given; the result is safe markup.
    return Markup(highlight(text, current_app.json_lexer, current_app.html_formatter))


def hex_view(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hex_part = " ".join(f"{byte:02x}" for byte in chunk)
        text_part = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{offset:08x}  {hex_part:<47}  {text_part}")
    return "\n".join(lines)


def render_data(item, limit: int | None = LIST_PREVIEW_BYTES) -> RenderedData:
    """Render an item's data, cut to `limit` bytes when a limit is given."""
    size = item.size
    if item.is_binary:
        raw = item.data_bytes
        cut = limit is not None and len(raw) > min(limit, HEX_PREVIEW_BYTES)
        shown = raw[: min(limit, HEX_PREVIEW_BYTES)] if cut else raw
        html = Markup('<pre class="hexdump">{}</pre>').format(hex_view(shown))
        return RenderedData("binary", html, cut, size)
    text = item.data_text or ""
    if not text:
        return RenderedData("empty", Markup('<span class="text-muted">(no data)</span>'), False, size)
    if limit is not None and len(text) > limit:
        return RenderedData(
            "json" if item.is_json else "text",
            Markup('<pre class="data-text">{}</pre>').format(text[:limit]),
            True,
            size,
        )
    if item.is_json:
        try:
            return RenderedData("json", highlight_json(json.loads(text)), False, size)
        except ValueError:
            pass
    return RenderedData("text", Markup('<pre class="data-text">{}</pre>').format(text), False, size)


def render_attributes(item) -> Markup:
    attributes = item.attributes
    if not attributes:
        return Markup('<span class="text-muted">(none)</span>')
    return highlight_json(attributes)


__all__ = ["render_data", "render_attributes", "highlight_json", "hex_view", "escape"]
