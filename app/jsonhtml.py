"""Pygments' highlighted HTML for a JSON value, pretty-printed and highlighted in one pass.

The list view renders every row it has not seen before, and an infinite-scroll page is 50 of
them. `json.dumps(indent=2)` runs in pure Python (only compact output uses the C encoder), and
`pygments.highlight` then lexes the text character by character and formats it through generic
line wrappers: together about 0.2 ms for a Cloud Build message. Here the value is encoded
compactly by the C encoder, and one regular-expression pass over that text writes the indented
layout json.dumps(indent=2) would give together with the markup Pygments' JsonLexer and
HtmlFormatter would give it (same CSS classes, same span merging, same escaping), so
`/pygments.css` styles it unchanged.

Pygments stays the reference: `tests/test_jsonhtml.py` compares the two outputs over a corpus
and thousands of random values, and a value this module does not expect (NaN, Infinity) is
left to Pygments (the function answers None).
"""

from __future__ import annotations

import json
import re

# One token of compact json.dumps output. A string followed by a colon is an object key
# (Name.Tag, "nt"); a number with any of ".eE" is a float, as JsonLexer decides. An empty
# container, or a closing bracket, takes the comma after it: Pygments puts neighbouring
# punctuation in one span. Anything else is "other", and Pygments takes over.
_TOKEN = re.compile(
    r'(?P<s2>"[^"\\]*(?:\\.[^"\\]*)*")(?P<nt>(?=:))?'
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
    r"|(?P<kc>true|false|null)"
    r"|(?P<empty>\{\}|\[\])(?P<empty_comma>,)?"
    r"|(?P<open>[{\[])"
    r"|(?P<close>[}\]])(?P<close_comma>,)?"
    r"|(?P<comma>,)"
    r"|(?P<colon>:)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_FLOAT_MARKS = frozenset(".eE")
# HtmlFormatter escapes these three in text; quotes need no escaping outside attributes.
_ESCAPE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_COLON = '<span class="p">:</span><span class="w"> </span>'
# A line break and the next line's indentation (json.dumps(indent=2)), by depth.
_NEWLINES = ["\n"] + [f'\n<span class="w">{"  " * depth}</span>' for depth in range(1, 64)]


# Deeper than this, the indentation alone would dwarf the data (json.dumps(indent=2) writes
# 2 * depth spaces on every line), so the value is shown as plain text instead.
MAX_HIGHLIGHT_DEPTH = 100


class _NotPlainJson(Exception):
    pass


class TooDeepToHighlight(ValueError):
    """The value nests deeper than MAX_HIGHLIGHT_DEPTH."""


def _newline(depth: int) -> str:
    return _NEWLINES[depth] if depth < len(_NEWLINES) else f'\n<span class="w">{"  " * depth}</span>'


def highlight_value(value, sort_keys: bool = False) -> str | None:
    """`pygments.highlight(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=...))` with
    JsonLexer and the default HtmlFormatter, or None when Pygments must do it.

    Raises TooDeepToHighlight (a ValueError) for a value nested deeper than MAX_HIGHLIGHT_DEPTH.
    """
    try:
        compact = json.dumps(value, ensure_ascii=False, sort_keys=sort_keys, separators=(",", ":"))
    except RecursionError:
        raise TooDeepToHighlight("nested too deeply to highlight") from None
    except (TypeError, ValueError):
        return None
    depth = 0

    def markup(match: re.Match) -> str:
        nonlocal depth
        kind = match.lastgroup
        if kind == "s2":
            return f'<span class="s2">{match.group()}</span>'
        if kind == "nt":
            return f'<span class="nt">{match.group("s2")}</span>'
        if kind == "colon":
            return _COLON
        if kind == "comma":
            return '<span class="p">,</span>' + _newline(depth)
        if kind == "open":
            depth += 1
            if depth > MAX_HIGHLIGHT_DEPTH:
                raise TooDeepToHighlight(f"nested deeper than {MAX_HIGHLIGHT_DEPTH} levels")
            return f'<span class="p">{match.group()}</span>{_newline(depth)}'
        if kind in ("close", "close_comma"):
            depth -= 1
            return f'{_newline(depth)}<span class="p">{match.group()}</span>' + (
                _newline(depth) if kind == "close_comma" else "")
        if kind == "number":
            number = match.group()
            return f'<span class="{"mf" if _FLOAT_MARKS.intersection(number) else "mi"}">{number}</span>'
        if kind == "kc":
            return f'<span class="kc">{match.group()}</span>'
        if kind in ("empty", "empty_comma"):
            return f'<span class="p">{match.group()}</span>' + (_newline(depth) if kind == "empty_comma" else "")
        raise _NotPlainJson

    try:
        # Escaping first adds no quote, backslash or bracket, so the tokens are found the same way.
        body = _TOKEN.sub(markup, compact.translate(_ESCAPE))
    except _NotPlainJson:
        return None
    # Pygments' lexer ends the text with a newline, outside any span.
    return f'<div class="highlight"><pre><span></span>{body}\n</pre></div>\n'
