"""Pygments' highlighted HTML for pretty-printed JSON, produced in one regular-expression pass.

The list view highlights every row it has not seen before, and an infinite-scroll page is 50 of
them. Through `pygments.highlight` a Cloud Build message costs about 0.17 ms and a two-key
attribute map about 0.1 ms, most of it the character-by-character JsonLexer and the generic
line-wrapping formatter. Text from `json.dumps` is regular enough for one `re` pass to classify
its tokens exactly as JsonLexer does, and the markup is then written the way HtmlFormatter
writes it (same CSS classes, same span merging, same escaping), so `/pygments.css` styles it
unchanged.

Pygments stays the reference: `tests/test_jsonhtml.py` compares the two outputs over a corpus
and thousands of random documents, and any text this module does not expect (NaN, Infinity,
anything outside canonical `json.dumps` output) is handed to Pygments itself.
"""

from __future__ import annotations

import re

# One token of json.dumps output, by the class Pygments' JsonLexer and HtmlFormatter give it.
# A string followed by a colon is an object key (Name.Tag); a number with any of ".eE" is a
# float, as JsonLexer decides. Anything else is "other", and Pygments takes over.
_TOKEN = re.compile(
    r'(?P<s2>"[^"\\]*(?:\\.[^"\\]*)*")(?P<nt>(?=:))?'  # a string; a key when a colon follows
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
    r"|(?P<kc>true|false|null)"
    r"|(?P<p>[{}\[\],:]+)"
    r"|(?P<w>[ \n]+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_FLOAT_MARKS = frozenset(".eE")
# HtmlFormatter escapes these three in text; quotes need no escaping outside attributes.
_ESCAPE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_whitespace: dict[str, str] = {}


class _NotDumpedJson(Exception):
    pass


def _whitespace_markup(value: str) -> str:
    """A run of spaces and newlines: each line's part in its own span, newlines outside spans."""
    markup = _whitespace.get(value)
    if markup is None:
        markup = "\n".join(f'<span class="w">{part}</span>' if part else "" for part in value.split("\n"))
        if len(_whitespace) < 256:  # indentation comes in a few widths
            _whitespace[value] = markup
    return markup


def _markup(match: re.Match) -> str:
    kind = match.lastgroup
    if kind == "w":
        return _whitespace_markup(match.group())
    if kind == "other":
        raise _NotDumpedJson
    if kind == "number":
        value = match.group()
        return f'<span class="{"mf" if _FLOAT_MARKS.intersection(value) else "mi"}">{value}</span>'
    return f'<span class="{kind}">{match.group(1) if kind == "nt" else match.group()}</span>'


def highlight_dumped_json(text: str) -> str | None:
    """The highlighted HTML of `json.dumps` output, or None when Pygments must do it.

    No two neighbouring tokens of json.dumps output share a class (runs of punctuation or of
    whitespace are one token each), so HtmlFormatter's merging of neighbours never applies, and
    only whitespace holds newlines. Escaping first is safe: it adds no quote, backslash or
    newline, so the tokens are found the same way.
    """
    if not text or text[0] in " \n" or text[-1] in " \n":
        return None  # Pygments strips leading and trailing newlines; keep to the plain case
    try:
        body = _TOKEN.sub(_markup, text.translate(_ESCAPE))
    except _NotDumpedJson:
        return None
    # Pygments' lexer ends the text with a newline, outside any span.
    return f'<div class="highlight"><pre><span></span>{body}\n</pre></div>\n'
