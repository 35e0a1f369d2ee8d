"""The list's one-pass JSON pretty-printer and highlighter writes exactly what Pygments writes, or steps aside."""

import json
import math
import random

import pytest
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import JsonLexer

from app.jsonhtml import highlight_value

LEXER = JsonLexer()
FORMATTER = HtmlFormatter(style="friendly")

CORPUS = [
    {},
    [],
    {"a": {}},
    {"a": []},
    [[], {}, [[]], [{}]],
    0,
    -1,
    1.5,
    -0.0,
    1e-05,
    1e300,
    12345678901234567890123,
    True,
    None,
    "",
    "plain",
    'say "hi" \\ back\\slash',
    "tab\there\nnewline\r\u0000\u001f",
    "<img src=x onerror=\"alert(1)\"> & '</script>'",
    "ünïcödé ☃ 𝄞 \u2028 \u00a0 \ufeff",
    {"nested": {"deeper": [1, 2.5, "x", False, None, {"k": [True]}]}, "empty": "", "n": -12.75e10},
    {"key with: colon": "value, with {braces} [and] brackets", "\"quoted\"": ":"},
    {"id": "bc065f08", "status": "SUCCESS", "steps": [{"name": "gcr.io/cloud-builders/docker",
                                                        "args": ["build", "-t", "app:1", "."]}]},
]


def pygments_html(value, sort_keys: bool = False) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=sort_keys)
    return highlight(text, LEXER, FORMATTER)


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10 if depth < 4 else 6)
    alphabet = 'ab "\\/<>&\'\n\t:,{}[]é☃\u2028\u0001-0.5e+'
    if kind == 0:
        return rng.randint(-(10**20), 10**20)
    if kind == 1:
        return rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-30, 30)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind in (3, 4, 5):
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind in (6, 7):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {"".join(rng.choice(alphabet) for _ in range(rng.randrange(6))): random_value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


@pytest.mark.parametrize("value", CORPUS, ids=range(len(CORPUS)))
@pytest.mark.parametrize("sort_keys", [False, True])
def test_same_markup_as_pygments(value, sort_keys):
    assert highlight_value(value, sort_keys=sort_keys) == pygments_html(value, sort_keys)


def test_same_markup_as_pygments_for_random_documents():
    rng = random.Random(20261129)
    for _ in range(3000):
        value = random_value(rng)
        assert highlight_value(value) == pygments_html(value), value


def test_deep_nesting_is_indented_like_json_dumps():
    value = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{"deep": 1}]]]]]]]]]]]]]]]]]]]]
              ]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    assert highlight_value(value) == pygments_html(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, [-math.inf], {"x": math.nan}])
def test_values_json_cannot_hold_are_left_to_pygments(value):
    assert highlight_value(value) is None
