"""Pub/Sub's subscription filter language: a parser and an evaluator, standard library only.

The language is the one Google documents for subscription filters ("Filter messages from a
subscription"): conditions on a message's attributes, joined with AND, OR, NOT and parentheses.

    attributes:KEY                         the message has the attribute KEY
    attributes.KEY = "v"                   ... and its value is exactly v
    attributes.KEY != "v"                  NOT (attributes.KEY = "v")
    hasPrefix(attributes.KEY, "p")         the message has KEY and its value starts with p
    NOT x, -x                              negation
    x AND y AND z, x OR y OR z, ( ... )    mixing AND and OR at one level needs parentheses

KEY is written bare when it holds only ASCII letters, digits, hyphens and underscores, and as a
string literal otherwise: ``attributes."iana.org/language_tag" = "en"``. An empty expression is
no filter at all (``MatchAll``). A filter is at most 256 bytes of UTF-8.

``parse(expression)`` returns a ``Filter`` (its AST is ``Filter.root``) or raises
``FilterSyntaxError`` with a message and the 0-based character offset of the problem;
``Filter.matches(attributes)`` never raises.

Extension for alert conditions (``parse(..., extensions=True)`` only; Pub/Sub has no such thing):

    data.a.b[0].c = "v"    the message data, parsed as JSON (UTF-8), has "v" at that path
    data:"text"            the message data (UTF-8, undecodable bytes replaced) contains text

Readings where Google's page is open
------------------------------------
Each choice below is the strict one unless the page's own examples need more, so that an
expression this module accepts is, as far as we can tell, one Pub/Sub accepts too, and a dry run
does not promise a filter that the service would then refuse.

1. ``attributes.KEY != "v"`` on a message without KEY is **true**: ``!=`` is read as the
   negation of ``=``, exactly ``NOT attributes.KEY = "v"``. The page's table describes ``!=``
   in the same "without ..." terms as ``NOT attributes:KEY`` and ``NOT hasPrefix``, and Google's
   own in-memory fake of the service (pstest, in google-cloud-go) keeps messages without the key
   for ``!=``. "Has KEY with another value" is written ``attributes:KEY AND attributes.KEY != "v"``.
2. ``hasPrefix`` on a missing key is false (the page: messages with the attribute and a value
   that starts with the prefix); so ``NOT hasPrefix(...)`` is true on a message without the key.
   ``hasPrefix(attributes.k, "")`` is the same as ``attributes:k``.
3. Keywords are case-sensitive: ``AND``, ``OR``, ``NOT`` in capitals, ``attributes`` and
   ``hasPrefix`` as written. Google writes them only that way; ``and`` is an error whose message
   says operators are written in capitals.
4. Mixing ``AND`` and ``OR`` at one parenthesis level is an error, as the page requires, reported
   at the first operator that differs from the level's first one. ``NOT`` binds tighter than both
   and needs no parentheses (``NOT a AND b`` is ``(NOT a) AND b``).
5. ``-`` must touch what it negates (``-attributes:k``, ``-(...)``, ``-hasPrefix(...)``), as in
   Google's examples; ``- attributes:k`` is an error. It may negate a parenthesised group and may
   repeat (``--x`` is ``x``), like ``NOT NOT x``.
6. Whitespace (space, tab, CR, LF) may surround ``=``, ``!=``, ``AND``, ``OR``, ``NOT``, commas
   and parentheses, but not the ``.`` or ``:`` after ``attributes`` (``attributes . k`` is an
   error): the page never spaces them, and a space there reads like two words. ``NOT`` needs a
   space after it unless a parenthesis follows (``NOT(a)``); ``hasPrefix (`` may have one. Other white
   space characters (no-break space, form feed...) are errors. An expression of only whitespace
   is the empty filter.
7. Strings are double-quoted only; a single-quoted string is an error that says so. Escapes:
   ``\\\\ \\" \\' \\? \\a \\b \\f \\n \\r \\t \\v``, ``\\xHH`` (two hex digits), ``\\ooo`` (three
   octal digits, at most 377), ``\\uHHHH`` and ``\\UHHHHHHHH``. ``\\x``, octal and ``\\u`` give
   Unicode code points (``"\\xe9"`` is "é", not a byte). Surrogate code points, any other escape,
   and a raw control character (U+0000-U+001F, U+007F) inside a string are errors: the page says
   non-printing characters must be escaped.
8. Keys: a bare key is ``[A-Za-z0-9_-]+`` (ASCII only; "alphanumeric" in the page); anything else,
   including dots, non-ASCII letters and spaces, must be a string literal. ``attributes.a.b`` is
   an error, not a nested key. The empty key (``attributes:""``) is an error, since Pub/Sub
   refuses empty attribute keys.
9. The 256-byte limit counts UTF-8 bytes of the whole expression as given, whitespace included.
   The error's position is the character at which the running byte count first exceeds 256
   (a multi-byte character that straddles the limit is the position). It is checked before
   anything else. Alert conditions (``extensions=True``) are not sent to Pub/Sub, so their limit
   is ``MAX_CONDITION_BYTES`` (1024) instead.
10. Parenthesised groups and negations nest at most ``MAX_NESTING`` (32) deep; deeper is an
    error at the opening that goes too deep (protects the recursive parser and evaluator).
11. Positions are 0-based offsets in characters (Python ``str`` indices), not bytes, so that a
    page can place a caret under the character.
12. Redundant parentheses vanish from the AST (``(a)`` is ``a``); ``a AND (b AND c)`` keeps its
    nesting. ``-x`` and ``NOT x`` give the same ``Not`` node.
13. Attribute values that are not strings (a caller passing stored JSON) never equal a string
    literal and never have a prefix; ``attributes`` of ``None`` is an empty map.

Data extension readings:

14. ``data.PATH = "v"``: the data is decoded as strict UTF-8 and parsed as JSON; if it is not
    JSON, or the path does not exist (a key on a list, an index on an object, an index out of
    range), the condition is false. A JSON string matches when equal to v. A JSON number matches
    when v is a JSON number of the same value (``"3"`` matches ``3``, ``3.0`` and ``3e0``; ``"03"``
    matches nothing). ``true``, ``false`` and ``null`` match ``"true"``, ``"false"`` and
    ``"null"``. Objects and arrays never match. Path segments are bare keys (as for attributes)
    or string literals (``data."a.b"``) joined by dots, and ``[n]`` with decimal digits indexes
    a list. Only ``=`` applies to data (write ``NOT data.x = "v"`` for the negation).
15. ``data:"text"`` is a substring test on the data decoded as UTF-8 with replacement characters;
    ``data:""`` is true. Missing data (``None``) counts as empty data.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import ClassVar

MAX_FILTER_BYTES = 256
MAX_CONDITION_BYTES = 1024
MAX_NESTING = 32

_WHITESPACE = " \t\r\n"
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_WORD_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_WORD_CHARS = _WORD_START | frozenset("0123456789")
_SIMPLE_ESCAPES = {
    "\\": "\\", '"': '"', "'": "'", "?": "?",
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
}
_RENDER_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class FilterSyntaxError(ValueError):
    """An expression that is not in the language; ``position`` is a 0-based character offset."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} at {position}")
        self.message = message
        self.position = position

    def __reduce__(self):
        return type(self), (self.message, self.position)


# ---------------------------------------------------------------------------------------------
# The AST


def _render_string(text: str) -> str:
    out = []
    for char in text:
        if char in _RENDER_ESCAPES:
            out.append(_RENDER_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _render_key(key: str) -> str:
    return key if key and all(char in _KEY_CHARS for char in key) else _render_string(key)


class _Context:
    """What one evaluation needs: the attributes, and the data parsed at most once."""

    __slots__ = ("attributes", "data", "_json", "_text")
    _UNSET = object()

    def __init__(self, attributes, data):
        self.attributes = attributes if isinstance(attributes, Mapping) else {}
        self.data = data
        self._json = self._UNSET
        self._text = None

    def text(self) -> str:
        if self._text is None:
            if isinstance(self.data, str):
                self._text = self.data
            elif isinstance(self.data, bytes | bytearray | memoryview):
                self._text = bytes(self.data).decode("utf-8", errors="replace")
            else:
                self._text = ""  # no data (None), or something that is not message data
        return self._text

    def json(self):
        """The data as JSON, or _UNSET when it is not JSON."""
        if self._json is self._UNSET:
            self._json = _load_json(self.data)
        return self._json

    def attribute(self, key: str) -> str | None:
        value = self.attributes.get(key)
        return value if isinstance(value, str) else None


_NOT_JSON = _Context._UNSET


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _load_json(data):
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return _NOT_JSON
    if not isinstance(data, str):
        return _NOT_JSON
    try:
        return json.loads(data, parse_float=Decimal, parse_int=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the json module goes
        return _NOT_JSON


class Node:
    """Base of the AST; every node is a frozen dataclass."""

    def evaluate(self, context: _Context) -> bool:
        raise NotImplementedError

    def to_expression(self) -> str:
        """The node written back in the language; parsing it gives an equal node."""
        raise NotImplementedError

    def walk(self):
        """This node and all below it, depth first."""
        yield self

    def __str__(self) -> str:
        return self.to_expression()


@dataclass(frozen=True)
class MatchAll(Node):
    """The empty expression: no filter, every message matches."""

    def evaluate(self, context):
        return True

    def to_expression(self):
        return ""


@dataclass(frozen=True)
class Has(Node):
    key: str

    def evaluate(self, context):
        return self.key in context.attributes

    def to_expression(self):
        return f"attributes:{_render_key(self.key)}"


@dataclass(frozen=True)
class Equals(Node):
    key: str
    value: str

    def evaluate(self, context):
        return context.attribute(self.key) == self.value

    def to_expression(self):
        return f"attributes.{_render_key(self.key)} = {_render_string(self.value)}"


@dataclass(frozen=True)
class NotEquals(Node):
    key: str
    value: str

    def evaluate(self, context):
        return context.attribute(self.key) != self.value

    def to_expression(self):
        return f"attributes.{_render_key(self.key)} != {_render_string(self.value)}"


@dataclass(frozen=True)
class HasPrefix(Node):
    key: str
    prefix: str

    def evaluate(self, context):
        value = context.attribute(self.key)
        return value is not None and value.startswith(self.prefix)

    def to_expression(self):
        return f"hasPrefix(attributes.{_render_key(self.key)}, {_render_string(self.prefix)})"


def _render_operand(node: Node) -> str:
    text = node.to_expression()
    return f"({text})" if isinstance(node, And | Or) else text


@dataclass(frozen=True)
class Not(Node):
    operand: Node

    def evaluate(self, context):
        return not self.operand.evaluate(context)

    def to_expression(self):
        return f"NOT {_render_operand(self.operand)}"

    def walk(self):
        yield self
        yield from self.operand.walk()


@dataclass(frozen=True)
class _Junction(Node):
    """And and Or: operands joined by one word, true when all of them are (AND) or any (OR)."""

    operands: tuple[Node, ...]
    word: ClassVar[str]
    combine: ClassVar[Callable[[Iterable[bool]], bool]]

    def evaluate(self, context):
        return self.combine(operand.evaluate(context) for operand in self.operands)

    def to_expression(self):
        return f" {self.word} ".join(_render_operand(operand) for operand in self.operands)

    def walk(self):
        yield self
        for operand in self.operands:
            yield from operand.walk()


class And(_Junction):
    word = "AND"
    combine = all


class Or(_Junction):
    word = "OR"
    combine = any


def _json_equals(found, value: str) -> bool:
    if isinstance(found, str):
        return found == value
    if found is True or found is False or found is None:
        return value == json.dumps(found)
    if isinstance(found, Decimal):
        if not _JSON_NUMBER.fullmatch(value):
            return False
        try:
            return found == Decimal(value)
        except InvalidOperation:
            return False
    return False


@dataclass(frozen=True)
class DataEquals(Node):
    """Alert conditions only: the JSON value at ``path`` in the message data equals ``value``."""

    path: tuple[str | int, ...]
    value: str

    def evaluate(self, context):
        found = context.json()
        if found is _NOT_JSON:
            return False
        for step in self.path:
            if isinstance(step, int):
                if not isinstance(found, list) or step >= len(found):
                    return False
            elif not isinstance(found, dict) or step not in found:
                return False
            found = found[step]
        return _json_equals(found, self.value)

    def to_expression(self):
        parts = ["data"]
        for step in self.path:
            parts.append(f"[{step}]" if isinstance(step, int) else f".{_render_key(step)}")
        return f"{''.join(parts)} = {_render_string(self.value)}"


@dataclass(frozen=True)
class DataContains(Node):
    """Alert conditions only: the message data, as text, contains ``text``."""

    text: str

    def evaluate(self, context):
        return self.text in context.text()

    def to_expression(self):
        return f"data:{_render_string(self.text)}"


@dataclass(frozen=True)
class Filter:
    """A parsed expression: its text, its AST, and whether it looks at the message data."""

    expression: str
    root: Node
    uses_data: bool = field(init=False)

    def __post_init__(self):
        uses_data = any(isinstance(node, DataEquals | DataContains) for node in self.root.walk())
        object.__setattr__(self, "uses_data", uses_data)

    def matches(self, attributes: Mapping[str, str] | None, data: bytes | str | None = None) -> bool:
        """Whether a message with these attributes (and data) passes the filter; never raises."""
        return self.root.evaluate(_Context(attributes, data))

    def to_expression(self) -> str:
        return self.root.to_expression()


# ---------------------------------------------------------------------------------------------
# The parser: recursive descent straight over the characters, so every error knows its offset.


class _Parser:
    def __init__(self, text: str, extensions: bool):
        self.text = text
        self.extensions = extensions
        self.pos = 0
        self.depth = 0

    # -- characters --------------------------------------------------------------------------

    def error(self, message: str, position: int | None = None) -> FilterSyntaxError:
        return FilterSyntaxError(message, self.pos if position is None else position)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def word(self) -> str:
        """Read a word ([A-Za-z_][A-Za-z0-9_]*) at pos, or return '' without moving."""
        start = self.pos
        if self.peek() and self.peek() in _WORD_START:
            while self.pos < len(self.text) and self.text[self.pos] in _WORD_CHARS:
                self.pos += 1
        return self.text[start : self.pos]

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {what}")
        self.pos += 1

    # -- grammar -----------------------------------------------------------------------------

    def parse(self) -> Node:
        self.skip_space()
        if self.at_end():
            return MatchAll()
        node = self.expression(grouped=False)
        if not self.at_end():  # the top level stops early only at a ')' that closes nothing
            raise self.error("unexpected ')'")
        return node

    def expression(self, grouped: bool = True) -> Node:
        """term ((AND | OR) term)*, all the operators of one level alike."""
        operands = [self.term()]
        operator = None
        while True:
            self.skip_space()
            if self.at_end() or self.peek() == ")":
                break
            start = self.pos
            word = self.word()
            if word not in ("AND", "OR"):
                if word.upper() in ("AND", "OR"):
                    raise self.error(f"operators are written in capitals: {word.upper()}", start)
                self.pos = start
                expected = "AND, OR or ')'" if grouped else "AND, OR or the end of the filter"
                raise self.error(f"expected {expected}", start)
            if operator is None:
                operator = word
            elif word != operator:
                raise self.error("mixing AND and OR needs parentheses", start)
            operands.append(self.term())
        if operator is None:
            return operands[0]
        return (And if operator == "AND" else Or)(tuple(operands))

    def nest(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nesting is deeper than {MAX_NESTING} levels", position)

    def term(self) -> Node:
        self.skip_space()
        start = self.pos
        char = self.peek()
        if char == "(":
            self.nest(start)
            self.pos += 1
            self.skip_space()
            if self.peek() == ")":
                raise self.error("expected a condition")
            node = self.expression()
            self.skip_space()
            if self.peek() != ")":
                raise self.error(f"expected ')' to close the '(' at {start}")
            self.pos += 1
            self.depth -= 1
            return node
        if char == "-":
            self.nest(start)
            self.pos += 1
            if self.peek() in _WHITESPACE or not self.peek():
                raise self.error("'-' must be written directly before what it negates")
            node = Not(self.term())
            self.depth -= 1
            return node
        word = self.word()
        if word == "NOT":
            following = self.peek()
            if following and following not in _WHITESPACE and following != "(":
                raise self.error("expected a space after NOT")
            self.nest(start)
            node = Not(self.term())
            self.depth -= 1
            return node
        if word == "attributes":
            return self.attribute_condition(start)
        if word == "hasPrefix":
            return self.has_prefix()
        if word == "data":
            if not self.extensions:
                raise self.error("data conditions are only for alert conditions", start)
            return self.data_condition(start)
        if word in ("not", "Not"):
            raise self.error("operators are written in capitals: NOT", start)
        if word in ("AND", "OR"):
            raise self.error(f"expected a condition before {word}", start)
        self.pos = start
        if char == "'":
            raise self.error("strings are written in double quotes")
        if not char or char == ")":
            raise self.error("expected a condition")
        raise self.error("expected a condition (attributes, hasPrefix, NOT, '-' or '(')")

    def key(self) -> str:
        """A bare key or a string literal, directly at pos."""
        start = self.pos
        if self.peek() == '"':
            key = self.string()
        else:
            while self.pos < len(self.text) and self.text[self.pos] in _KEY_CHARS:
                self.pos += 1
            key = self.text[start : self.pos]
            if not key:
                if self.peek() == "'":
                    raise self.error("strings are written in double quotes")
                raise self.error("expected an attribute key")
        if not key:
            raise self.error("attribute key must not be empty", start)
        return key

    def attribute_condition(self, start: int) -> Node:
        separator = self.peek()
        if separator == ":":
            self.pos += 1
            return Has(self.key())
        if separator != ".":
            raise self.error("expected '.' or ':' directly after attributes")
        self.pos += 1
        key = self.key()
        self.skip_space()
        operator_at = self.pos
        if self.text.startswith("!=", self.pos):
            self.pos += 2
            node_type = NotEquals
        elif self.peek() == "=":
            self.pos += 1
            node_type = Equals
        else:
            if self.peek() == ".":
                raise self.error("a key with dots must be a string literal")
            raise self.error("expected '=' or '!='", operator_at)
        self.skip_space()
        return node_type(key, self.string_argument())

    def string_argument(self) -> str:
        if self.peek() == "'":
            raise self.error("strings are written in double quotes")
        if self.peek() != '"':
            raise self.error("expected a string literal")
        return self.string()

    def has_prefix(self) -> Node:
        self.skip_space()
        self.expect("(", "'(' after hasPrefix")
        self.skip_space()
        at = self.pos
        if self.word() != "attributes" or self.peek() != ".":
            raise self.error("expected attributes.KEY", at)
        self.pos += 1
        key = self.key()
        self.skip_space()
        self.expect(",", "','")
        self.skip_space()
        prefix = self.string_argument()
        self.skip_space()
        self.expect(")", "')' to close hasPrefix")
        return HasPrefix(key, prefix)

    def data_condition(self, start: int) -> Node:
        if self.peek() == ":":
            self.pos += 1
            return DataContains(self.string_argument())
        path: list[str | int] = []
        while True:
            char = self.peek()
            if char == ".":
                self.pos += 1
                path.append(self.key())
            elif char == "[":
                self.pos += 1
                digits_at = self.pos
                while self.peek() and self.peek() in "0123456789":
                    self.pos += 1
                if self.pos == digits_at:
                    raise self.error("expected a list index (digits)")
                path.append(int(self.text[digits_at : self.pos]))
                self.expect("]", "']'")
            else:
                break
        if not path:
            raise self.error("expected '.', '[' or ':' directly after data")
        self.skip_space()
        if self.peek() != "=" or self.text.startswith("==", self.pos):
            raise self.error("expected '=' after a data path")
        self.pos += 1
        self.skip_space()
        return DataEquals(tuple(path), self.string_argument())

    def string(self) -> str:
        """A double-quoted string literal at pos, with its escapes decoded."""
        start = self.pos
        self.pos += 1
        out = []
        text = self.text
        while True:
            if self.pos >= len(text):
                raise self.error("unterminated string", start)
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if ord(char) < 0x20 or ord(char) == 0x7F:
                raise self.error(f"control character U+{ord(char):04X} in a string; write it as an escape")
            if char == "\\":
                out.append(self.escape())
            else:
                out.append(char)
                self.pos += 1

    def escape(self) -> str:
        start = self.pos
        self.pos += 1
        if self.pos >= len(self.text):
            raise self.error("unterminated string", start)
        char = self.text[self.pos]
        if char in _SIMPLE_ESCAPES:
            self.pos += 1
            return _SIMPLE_ESCAPES[char]
        if char in "xuU":
            width, base = {"x": 2, "u": 4, "U": 8}[char], 16
            digits = self.text[self.pos + 1 : self.pos + 1 + width]
            valid = "0123456789abcdefABCDEF"
        elif char in "01234567":
            width, base = 3, 8
            digits = self.text[self.pos : self.pos + 3]
            valid = "01234567"
        else:
            raise self.error(f"unknown escape sequence \\{char}", start)
        if len(digits) != width or any(digit not in valid for digit in digits):
            raise self.error(f"escape \\{char} needs {width} {'octal' if base == 8 else 'hex'} digits", start)
        code = int(digits, base)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF or (base == 8 and code > 0o377):
            raise self.error("escape is not a valid character", start)
        self.pos += width + (0 if base == 8 else 1)
        return chr(code)


def _check_length(expression: str, limit: int, what: str) -> None:
    if len(expression) <= limit // 4:
        return  # no character takes more than 4 bytes
    total = 0
    for index, char in enumerate(expression):
        total += len(char.encode("utf-8", errors="surrogatepass"))
        if total > limit:
            raise FilterSyntaxError(f"{what} is longer than {limit} bytes", index)


@functools.lru_cache(maxsize=512)
def _parse(expression: str, extensions: bool) -> Filter:
    if extensions:
        _check_length(expression, MAX_CONDITION_BYTES, "condition")
    else:
        _check_length(expression, MAX_FILTER_BYTES, "filter")
    return Filter(expression, _Parser(expression, extensions).parse())


def parse(expression: str, *, extensions: bool = False) -> Filter:
    """Parse a filter expression (with the data extension when ``extensions``); raises FilterSyntaxError."""
    if not isinstance(expression, str):
        raise FilterSyntaxError("the filter must be text", 0)
    return _parse(expression, bool(extensions))


def matches(expression: str, attributes: Mapping[str, str]) -> bool:
    """Whether attributes pass the filter expression; raises FilterSyntaxError when it is not valid."""
    return parse(expression).matches(attributes)
