"""The filter language: a table of expressions with their results on attribute maps, or their errors."""

import json
import pickle
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app import filterlang
from app.filterlang import (
    MAX_FILTER_BYTES,
    And,
    DataContains,
    DataEquals,
    Equals,
    FilterSyntaxError,
    Has,
    HasPrefix,
    MatchAll,
    Not,
    NotEquals,
    Or,
    parse,
)

# Attribute maps the table evaluates against.
COM = {"domain": "com", "region": "us-east1"}
ORG = {"domain": "org"}
NONE = {}
ODD = {"iana.org/language_tag": "en", "my key": 'say "hi"', "é": "ü", "tab\tkey": "x", "is-even": "false", "": "empty"}
PREFIXED = {"domain": "commerce", "region": "eu-west1", "status": "FAILURE"}

# (expression, [(attributes, expected), ...])
VALID = [
    # the empty filter
    ("", [(COM, True), (NONE, True)]),
    ("   \t\n", [(NONE, True)]),
    # attributes:KEY
    ("attributes:domain", [(COM, True), (ORG, True), (NONE, False)]),
    ("attributes:region", [(COM, True), (ORG, False)]),
    ("attributes:Domain", [(COM, False)]),  # keys are case-sensitive
    ('attributes:"iana.org/language_tag"', [(ODD, True), (COM, False)]),
    ('attributes:"my key"', [(ODD, True), (COM, False)]),
    ("attributes:is-even", [(ODD, True), (COM, False)]),
    ('attributes:"\\u00e9"', [(ODD, True), (COM, False)]),
    ('attributes:"\\u00E9"', [(ODD, True)]),
    ('attributes:"é"', [(ODD, True)]),
    ('attributes:"tab\\tkey"', [(ODD, True)]),
    ('attributes:"tab\\x09key"', [(ODD, True)]),
    ('attributes:"tab\\011key"', [(ODD, True)]),
    ("attributes:_x-1", [({"_x-1": ""}, True), ({"_x": ""}, False)]),
    ("attributes:9", [({"9": "nine"}, True), (NONE, False)]),
    # attributes.KEY = "v" and !=
    ('attributes.domain = "com"', [(COM, True), (ORG, False), (NONE, False)]),
    ('attributes.domain="com"', [(COM, True), (ORG, False)]),
    ('attributes.domain   =\t"com"', [(COM, True)]),
    ('attributes.domain = "COM"', [(COM, False)]),  # values are case-sensitive
    ('attributes.domain = "co"', [(COM, False)]),  # equality is whole-value
    ('attributes.domain != "com"', [(COM, False), (ORG, True), (NONE, True)]),  # missing key: true
    ('attributes.domain!="com"', [(COM, False), (ORG, True)]),
    ('attributes:domain AND attributes.domain != "com"', [(COM, False), (ORG, True), (NONE, False)]),
    ('attributes."iana.org/language_tag" = "en"', [(ODD, True), (COM, False)]),
    ('attributes."my key" = "say \\"hi\\""', [(ODD, True)]),
    ('attributes."my key" = "say \\x22hi\\042"', [(ODD, True)]),
    ('attributes."\\u00e9" = "ü"', [(ODD, True)]),
    ('attributes."\\x41" = "empty"', [({"A": "empty"}, True), (ODD, False)]),
    ('attributes.v = ""', [({"v": ""}, True), ({"v": "x"}, False), (NONE, False)]),
    ('attributes.v = "a\\\\b"', [({"v": "a\\b"}, True), ({"v": "ab"}, False)]),
    ('attributes.v = "line\\nbreak"', [({"v": "line\nbreak"}, True)]),
    ('attributes.v = "\\U0001F600"', [({"v": "\U0001f600"}, True)]),
    ('attributes.v = "\\a\\b\\f\\r\\v\\?\\\'"', [({"v": "\a\b\f\r\v?'"}, True)]),
    ('attributes.v = "it\'s"', [({"v": "it's"}, True)]),
    ('attributes.v = "AND"', [({"v": "AND"}, True)]),  # keywords inside strings are text
    ("attributes.AND = \"x\"", [({"AND": "x"}, True)]),  # ... and as keys
    # hasPrefix
    ('hasPrefix(attributes.domain, "co")', [(COM, True), (PREFIXED, True), (ORG, False), (NONE, False)]),
    ('hasPrefix( attributes.domain ,"com" )', [(COM, True), (PREFIXED, True)]),
    ('hasPrefix(attributes.domain, "")', [(COM, True), (NONE, False)]),
    ('hasPrefix(attributes.domain, "commerce!")', [(PREFIXED, False)]),
    ('NOT hasPrefix(attributes.domain, "co")', [(COM, False), (ORG, True), (NONE, True)]),
    ('-hasPrefix(attributes.domain, "co")', [(COM, False), (NONE, True)]),
    ('hasPrefix(attributes."iana.org/language_tag", "e")', [(ODD, True)]),
    # NOT and -
    ("NOT attributes:domain", [(COM, False), (NONE, True)]),
    ("-attributes:domain", [(COM, False), (NONE, True)]),
    ("NOT NOT attributes:domain", [(COM, True), (NONE, False)]),
    ("--attributes:domain", [(COM, True), (NONE, False)]),
    ("NOT -attributes:domain", [(COM, True), (NONE, False)]),
    ("NOT(attributes:domain)", [(COM, False), (NONE, True)]),
    ('NOT attributes.domain = "com"', [(COM, False), (ORG, True), (NONE, True)]),
    ('-attributes.domain != "com"', [(COM, True), (ORG, False), (NONE, False)]),
    # AND, OR, parentheses
    ('attributes:domain AND attributes:region', [(COM, True), (ORG, False), (NONE, False)]),
    ('attributes.domain = "com" OR attributes.domain = "org"', [(COM, True), (ORG, True), (PREFIXED, False)]),
    ("attributes:a OR attributes:b OR attributes:c", [({"c": ""}, True), ({"d": ""}, False)]),
    ("attributes:a AND attributes:b AND attributes:c", [
        ({"a": "", "b": "", "c": ""}, True),
        ({"a": "", "b": ""}, False),
    ]),
    ('attributes:"iana.org/language_tag" AND NOT attributes:domain', [(ODD, True), (COM, False)]),
    ('attributes:"iana.org/language_tag" AND -attributes:domain', [(ODD, True), (COM, False)]),
    ("NOT attributes:domain AND attributes:region", [(COM, False), ({"region": "x"}, True)]),  # NOT binds tighter
    ("NOT attributes:domain OR attributes:region", [(COM, True), (ORG, False), (NONE, True)]),
    ('(attributes.domain = "com" OR attributes.domain = "org") AND attributes:region', [(COM, True), (ORG, False)]),
    ('attributes:region AND (attributes.domain = "com" OR attributes.domain = "org")', [(COM, True), (ORG, False)]),
    ('attributes:region OR (attributes:domain AND hasPrefix(attributes.domain, "o"))', [(ORG, True), (COM, True)]),
    ('(attributes:domain AND attributes:region) OR attributes:status', [(PREFIXED, True), (ORG, False)]),
    ("-(attributes:domain OR attributes:region)", [(NONE, True), (ORG, False)]),
    ("NOT (attributes:domain AND attributes:region)", [(ORG, True), (COM, False)]),
    ("((attributes:domain))", [(COM, True), (NONE, False)]),
    ("( attributes:domain )", [(COM, True)]),
    ("(attributes:domain)AND(attributes:region)", [(COM, True), (ORG, False)]),
    ('attributes.domain="com"AND attributes.region="us-east1"', [(COM, True)]),
    ("attributes:domain\nAND\tattributes:region", [(COM, True), (ORG, False)]),
    ('attributes.status = "FAILURE" AND NOT hasPrefix(attributes.region, "us-")', [(PREFIXED, True)]),
    # at the limit: exactly 256 bytes is allowed
    ('attributes.v = "' + "x" * 239 + '"', [({"v": "x" * 239}, True), ({"v": "x"}, False)]),
    ('attributes.v = "' + "é" * 119 + 'x"', [({"v": "é" * 119 + "x"}, True)]),  # 16 + 238 + 2 = 256 bytes
]

# (expression, message, position)
INVALID = [
    ("domain", "expected a condition (attributes, hasPrefix, NOT, '-' or '(')", 0),
    ("attributes", "expected '.' or ':' directly after attributes", 10),
    ("attributes.", "expected an attribute key", 11),
    ("attributes:", "expected an attribute key", 11),
    ("attributes :domain", "expected '.' or ':' directly after attributes", 10),
    ("attributes. domain", "expected an attribute key", 11),
    ("attributes.domain", "expected '=' or '!='", 17),
    ('attributes.domain == "com"', "expected a string literal", 19),
    ("attributes.domain = com", "expected a string literal", 20),
    ("attributes.domain = 'com'", "strings are written in double quotes", 20),
    ("attributes:'x'", "strings are written in double quotes", 11),
    ('attributes.domain = "com', "unterminated string", 20),
    ('attributes:"abc', "unterminated string", 11),
    ('attributes.v = "ab\\', "unterminated string", 18),
    ('attributes.a.b = "c"', "a key with dots must be a string literal", 12),
    ('attributes:""', "attribute key must not be empty", 11),
    ('attributes."" = "x"', "attribute key must not be empty", 11),
    ('attributes:é', "expected an attribute key", 11),
    ('attributes.v = "\\q"', "unknown escape sequence \\q", 16),
    ('attributes.v = "\\`"', "unknown escape sequence \\`", 16),
    ('attributes.v = "\\e"', "unknown escape sequence \\e", 16),
    ('attributes.v = "\\x4"', "escape \\x needs 2 hex digits", 16),
    ('attributes.v = "\\u12g4"', "escape \\u needs 4 hex digits", 16),
    ('attributes.v = "\\08"', "escape \\0 needs 3 octal digits", 16),
    ('attributes.v = "\\400"', "escape is not a valid character", 16),
    ('attributes.v = "\\ud800"', "escape is not a valid character", 16),
    ('attributes.v = "\\U00110000"', "escape is not a valid character", 16),
    ('attributes.v = "a\nb"', "control character U+000A in a string; write it as an escape", 17),
    ('attributes.v = "\x00"', "control character U+0000 in a string; write it as an escape", 16),
    ("attributes:a\x0bAND attributes:b", "expected AND, OR or the end of the filter", 12),
    ("attributes:a\u00a0AND attributes:b", "expected AND, OR or the end of the filter", 12),
    # boolean operators
    ("attributes:a AND attributes:b OR attributes:c", "mixing AND and OR needs parentheses", 30),
    ("attributes:a OR attributes:b AND attributes:c", "mixing AND and OR needs parentheses", 29),
    ("(attributes:a OR attributes:b AND attributes:c)", "mixing AND and OR needs parentheses", 30),
    ("attributes:a AND (attributes:b OR attributes:c AND attributes:d)", "mixing AND and OR needs parentheses", 47),
    ("attributes:a and attributes:b", "operators are written in capitals: AND", 13),
    ("attributes:a Or attributes:b", "operators are written in capitals: OR", 13),
    ("not attributes:a", "operators are written in capitals: NOT", 0),
    ("attributes:a attributes:b", "expected AND, OR or the end of the filter", 13),
    ("attributes:a AND", "expected a condition", 16),
    ("AND attributes:a", "expected a condition before AND", 0),
    ("attributes:a AND OR attributes:b", "expected a condition before OR", 17),
    ("attributes:a ANDattributes:b", "expected AND, OR or the end of the filter", 13),
    ("NOTattributes:a", "expected a condition (attributes, hasPrefix, NOT, '-' or '(')", 0),
    ("NOT", "expected a condition", 3),
    ("- attributes:a", "'-' must be written directly before what it negates", 1),
    ("-", "'-' must be written directly before what it negates", 1),
    ("()", "expected a condition", 1),
    ("(attributes:a", "expected ')' to close the '(' at 0", 13),
    ("(attributes:a OR attributes:b attributes:c)", "expected AND, OR or ')'", 30),
    ("attributes:a)", "unexpected ')'", 12),
    ("attributes:a;", "expected AND, OR or the end of the filter", 12),
    # hasPrefix
    ('hasPrefix(attributes.domain "co")', "expected ','", 28),
    ('hasPrefix(attributes.domain, co)', "expected a string literal", 29),
    ('hasPrefix(attributes:domain, "co")', "expected attributes.KEY", 10),
    ('hasPrefix(domain, "co")', "expected attributes.KEY", 10),
    ('hasPrefix(attributes.domain, "co"', "expected ')' to close hasPrefix", 33),
    ('hasprefix(attributes.domain, "co")', "expected a condition (attributes, hasPrefix, NOT, '-' or '(')", 0),
    ('hasPrefix attributes.domain', "expected '(' after hasPrefix", 10),
    # data conditions are an extension for alert rules
    ('data.status = "x"', "data conditions are only for alert conditions", 0),
    ('attributes:a AND data:"x"', "data conditions are only for alert conditions", 17),
    # hostile input
    ("(" * 33 + "attributes:a" + ")" * 33, "nesting is deeper than 32 levels", 32),
    ("-" * 33 + "attributes:a", "nesting is deeper than 32 levels", 32),
    ("NOT " * 33 + "attributes:a", "nesting is deeper than 32 levels", 128),
    ('attributes.v = "' + "x" * 240 + '"', "filter is longer than 256 bytes", 256),  # 257 bytes
    ('attributes.v = "' + "é" * 120 + '"', "filter is longer than 256 bytes", 136),  # é is 2 bytes: 16 + 240 + 1
    ('attributes.v = "' + "é" * 119 + 'xx"', "filter is longer than 256 bytes", 137),
    ("attributes:a OR " * 10_000, "filter is longer than 256 bytes", 256),
]

# (expression, data, expected), all parsed with extensions=True
DATA = [
    ('data.status = "FAILURE"', b'{"status": "FAILURE"}', True),
    ('data.status = "FAILURE"', b'{"status": "SUCCESS"}', False),
    ('data.status = "FAILURE"', '{"status": "FAILURE"}', True),  # str data
    ('data.status = "FAILURE"', b"status FAILURE", False),  # not JSON
    ('data.status = "FAILURE"', b'{"other": 1}', False),  # missing path
    ('data.status = "FAILURE"', None, False),
    ('data.status = "FAILURE"', b'{"status": "FAILURE"', False),  # truncated JSON
    ('data.status = "FAILURE"', b'\xff{"status": "FAILURE"}', False),  # not UTF-8
    ('data.a.b[0].c = "v"', b'{"a": {"b": [{"c": "v"}]}}', True),
    ('data.a.b[1].c = "v"', b'{"a": {"b": [{"c": "v"}]}}', False),  # index out of range
    ('data.a.b.c = "v"', b'{"a": {"b": [{"c": "v"}]}}', False),  # key on a list
    ('data.a[0] = "v"', b'{"a": {"0": "v"}}', False),  # index on an object
    ('data[1] = "y"', b'["x", "y"]', True),
    ('data."a.b" = "v"', b'{"a.b": "v", "a": {"b": "w"}}', True),
    ('data.a.b = "w"', b'{"a.b": "v", "a": {"b": "w"}}', True),
    ('data.count = "3"', b'{"count": 3}', True),
    ('data.count = "3"', b'{"count": 3.0}', True),
    ('data.count = "3"', b'{"count": 3e0}', True),
    ('data.count = "03"', b'{"count": 3}', False),
    ('data.count = "3"', b'{"count": "3"}', True),
    ('data.count = "3.0"', b'{"count": "3"}', False),  # strings compare as text
    ('data.count = "0.1"', b'{"count": 0.1}', True),
    ('data.big = "12345678901234567890123"', b'{"big": 12345678901234567890123}', True),
    ('data.ok = "true"', b'{"ok": true}', True),
    ('data.ok = "True"', b'{"ok": true}', False),
    ('data.ok = "null"', b'{"ok": null}', True),
    ('data.ok = "{}"', b'{"ok": {}}', False),  # objects never match
    ('data.x = "NaN"', b'{"x": NaN}', False),  # NaN is not JSON
    ('data:"FAILURE"', b'build FAILURE at step 3', True),
    ('data:"failure"', b'build FAILURE at step 3', False),
    ('data:"caf\\u00e9"', "un café".encode(), True),
    ('data:"x"', b"\xff\xfex", True),  # undecodable bytes are replaced, the rest still counts
    ('data:""', None, True),
    ('data:"x"', None, False),
    ('data.status = "FAILURE" AND attributes.kind = "build"', b'{"status": "FAILURE"}', True),
    ('NOT data:"ok"', b"all ok", False),
    ('(data:"a" OR data:"b") AND NOT data.x = "1"', b'{"x": 2, "y": "b"}', True),
]

DATA_INVALID = [
    ('data = "x"', "expected '.', '[' or ':' directly after data", 4),
    ('data.x != "v"', "expected '=' after a data path", 7),
    ('data.x == "v"', "expected '=' after a data path", 7),
    ('data.x = 3', "expected a string literal", 9),
    ('data[x] = "v"', "expected a list index (digits)", 5),
    ('data[-1] = "v"', "expected a list index (digits)", 5),
    ('data[1 = "v"', "expected ']'", 6),
    ('data:text', "expected a string literal", 5),
    ('data."" = "v"', "attribute key must not be empty", 5),
    ('data.a = "' + "x" * 1020 + '"', "condition is longer than 1024 bytes", 1024),
]


def _id(case):
    return repr(case[0])[:60]


@pytest.mark.parametrize(("expression", "results"), VALID, ids=[_id(case) for case in VALID])
def test_valid_expression_matches_as_pubsub_does(expression, results):
    parsed = parse(expression)
    assert not parsed.uses_data
    for attributes, expected in results:
        assert parsed.matches(attributes) is expected, (expression, attributes)
        assert filterlang.matches(expression, attributes) is expected


@pytest.mark.parametrize(("expression", "message", "position"), INVALID, ids=[_id(case) for case in INVALID])
def test_invalid_expression_names_the_problem_and_its_position(expression, message, position):
    with pytest.raises(FilterSyntaxError) as caught:
        parse(expression)
    assert (caught.value.message, caught.value.position) == (message, position)
    assert str(caught.value) == f"{message} at {position}"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("expression", "data", "expected"), DATA, ids=[f"{_id(c)}-{i}" for i, c in enumerate(DATA)])
def test_data_condition_on_json_and_text(expression, data, expected):
    parsed = parse(expression, extensions=True)
    assert parsed.uses_data
    assert parsed.matches({"kind": "build"}, data) is expected


@pytest.mark.parametrize(("expression", "message", "position"), DATA_INVALID, ids=[_id(c) for c in DATA_INVALID])
def test_invalid_data_condition(expression, message, position):
    with pytest.raises(FilterSyntaxError) as caught:
        parse(expression, extensions=True)
    assert (caught.value.message, caught.value.position) == (message, position)


def test_table_is_large_enough():
    assert len(VALID) + len(INVALID) + len(DATA) + len(DATA_INVALID) >= 90


def test_ast_shapes():
    assert parse("").root == MatchAll()
    assert parse('attributes:"a b"').root == Has("a b")
    assert parse('attributes.k = "v"').root == Equals("k", "v")
    assert parse('attributes.k != "v"').root == NotEquals("k", "v")
    assert parse('hasPrefix(attributes.k, "p")').root == HasPrefix("k", "p")
    assert parse("-attributes:k").root == parse("NOT attributes:k").root == Not(Has("k"))
    assert parse("attributes:a AND attributes:b AND attributes:c").root == And((Has("a"), Has("b"), Has("c")))
    assert parse("attributes:a OR (attributes:b OR attributes:c)").root == Or((Has("a"), Or((Has("b"), Has("c")))))
    assert parse("((attributes:a))").root == Has("a")
    assert parse('data.a[2]."x y" = "v"', extensions=True).root == DataEquals(("a", 2, "x y"), "v")
    assert parse('data:"t"', extensions=True).root == DataContains("t")
    assert parse('data:"t"', extensions=True).expression == 'data:"t"'


def test_position_counts_characters_not_bytes():
    with pytest.raises(FilterSyntaxError) as caught:
        parse('attributes."é€" = x')
    assert caught.value.position == 18


def test_evaluation_never_raises_on_odd_inputs():
    parsed = parse('attributes.k = "v" OR hasPrefix(attributes.k, "v") OR attributes.k != "w"')
    assert parsed.matches(None) is True  # no attributes: k != "w"
    assert parsed.matches({"k": 5}) is True  # a non-string value equals nothing, so != holds
    assert parse('hasPrefix(attributes.k, "v")').matches({"k": None}) is False
    deep = json.dumps(json.loads("[" * 50 + "]" * 50)).encode()
    hostile = b"[" * 100_000 + b"]" * 100_000
    assert parse('data[0] = "x" OR data:"z"', extensions=True).matches({}, deep) is False
    assert parse('data[0][0] = "x" OR data:"]"', extensions=True).matches({}, hostile) is True
    assert parse('data[0] = "x"', extensions=True).matches({}, hostile) is False  # too deep for json: not JSON


def test_parsing_raises_only_filter_syntax_errors_on_hostile_text():
    limit = sys.getrecursionlimit()
    for expression in ("(" * 600, "-" * 200, "NOT " * 64, "\x00" * 10, "\ud800", '"' * 300, "hasPrefix(" * 25):
        with pytest.raises(FilterSyntaxError):
            parse(expression)
        with pytest.raises(FilterSyntaxError):
            parse(expression, extensions=True)
    with pytest.raises(FilterSyntaxError):
        parse(None)  # type: ignore[arg-type]
    assert sys.getrecursionlimit() == limit


def test_syntax_error_survives_pickling():
    with pytest.raises(FilterSyntaxError) as caught:
        parse("attributes:a OR")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.message, copy.position, str(copy)) == ("expected a condition", 15, "expected a condition at 15")


def test_data_of_other_types_is_no_data():
    condition = parse('data:"" AND NOT data:"1" AND NOT data.a = "1"', extensions=True)
    for data in (None, 1, {"a": "1"}, ["1"], bytearray(b"2"), memoryview(b'{"a": 2}')):
        assert condition.matches({}, data) is True


def test_exactly_max_bytes_is_accepted():
    expression = 'attributes.v = "' + "€" * 79 + 'xx"'  # 16 + 237 + 2 + 1 = 256
    assert len(expression.encode()) == MAX_FILTER_BYTES
    assert parse(expression).matches({"v": "€" * 79 + "xx"})


# ---------------------------------------------------------------------------------------------
# Properties

KEYS = st.sampled_from(["a", "b", "my key", "é", "x.y", 'q"t'])
VALUES = st.sampled_from(["", "v", "va", "w", "\n", 'q"', "\\"])
ATTRIBUTE_MAPS = st.dictionaries(KEYS, VALUES, max_size=4)

leaves = st.one_of(
    st.builds(Has, KEYS),
    st.builds(Equals, KEYS, VALUES),
    st.builds(NotEquals, KEYS, VALUES),
    st.builds(HasPrefix, KEYS, VALUES),
)


def _branches(children):
    operand_lists = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, operand_lists), st.builds(Or, operand_lists))


NODES = st.recursive(leaves, _branches, max_leaves=6)


def _reference(node, attributes):
    """An independent, obvious evaluator to compare with."""
    if isinstance(node, Has):
        return node.key in attributes
    if isinstance(node, Equals):
        return node.key in attributes and attributes[node.key] == node.value
    if isinstance(node, NotEquals):
        return not (node.key in attributes and attributes[node.key] == node.value)
    if isinstance(node, HasPrefix):
        return node.key in attributes and attributes[node.key][: len(node.prefix)] == node.prefix
    if isinstance(node, Not):
        return not _reference(node.operand, attributes)
    if isinstance(node, And):
        return all(_reference(operand, attributes) for operand in node.operands)
    return any(_reference(operand, attributes) for operand in node.operands)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NODES, ATTRIBUTE_MAPS)
def test_rendered_ast_reparses_to_the_same_ast_and_result(node, attributes):
    text = node.to_expression()
    assume(len(text.encode()) <= MAX_FILTER_BYTES)
    reparsed = parse(text)
    assert reparsed.root == node
    assert reparsed.matches(attributes) is _reference(node, attributes)


@settings(max_examples=80, deadline=None)
@given(NODES, NODES, ATTRIBUTE_MAPS)
def test_not_and_de_morgan(left, right, attributes):
    def result(expression):
        return parse(expression, extensions=True).matches(attributes)

    x, y = f"({left.to_expression()})", f"({right.to_expression()})"
    assert result(f"NOT {x}") is (not result(x))
    assert result(f"-{x}") is (not result(x))
    assert result(f"NOT ({x} AND {y})") is result(f"NOT {x} OR NOT {y}")
    assert result(f"NOT ({x} OR {y})") is result(f"NOT {x} AND NOT {y}")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_a_positioned_error(text):
    try:
        parsed = parse(text)
    except FilterSyntaxError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert isinstance(parsed.matches({"a": "b"}), bool)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='attributes.:"=!AND OR NOT-()hasPrefix,\\x41 data[0]', max_size=60))
def test_near_miss_text_parses_or_raises_a_positioned_error(text):
    for extensions in (False, True):
        try:
            parsed = parse(text, extensions=extensions)
        except FilterSyntaxError as error:
            assert 0 <= error.position <= len(text)
        else:
            assert parse(parsed.to_expression(), extensions=extensions).root == parsed.root
