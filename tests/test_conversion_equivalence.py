"""Message conversion (app/pubsub/messages.py) after issue 19's speed-ups gives what it gave before.

is_json_text now turns plain text away on its first character instead of parsing it, and the
attributes are encoded by one prebuilt encoder; the versions they replaced are kept here as
references, and Hypothesis compares them on any text and any attributes.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from app.pubsub import messages

_REFERENCE_DECODER = json.JSONDecoder(parse_constant=messages._reject_constant)


def reference_is_json_text(text: str) -> bool:
    if not text or text.isspace():
        return False
    try:
        _REFERENCE_DECODER.decode(text)
    except (ValueError, RecursionError):
        return False
    return True


# JSON documents, JSON look-alikes and plain text, with every kind of leading whitespace.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)
LEADING = st.text(st.sampled_from([" ", "\t", "\n", "\r", "\x0b", "\x0c", "\u00a0", "\u2028", "\ufeff"]), max_size=3)
TEXTS = st.one_of(
    st.text(),
    st.builds(lambda lead, value, tail: lead + json.dumps(value) + tail, LEADING, JSON_VALUES, LEADING),
    st.sampled_from(["", " ", "NaN", "-Infinity", "Infinity", "nul", "null", "tru", "[1,]", "{}x", "01", "-", '"'])
    .flatmap(lambda text: LEADING.map(lambda lead: lead + text)),
)


@settings(max_examples=300)
@given(TEXTS)
def test_json_check_is_as_before(text):
    assert messages.is_json_text(text) == reference_is_json_text(text)


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=6))
def test_attributes_are_encoded_as_before(attributes):
    row = messages.build_row(user_id=1, subscription="s", message_id="1", data=b"x", attributes=attributes,
                             publish_time=None, ordering_key="", delivery_attempt=None, size=1, received_at=None)
    assert row["attributes_json"] == json.dumps(dict(attributes), sort_keys=True, ensure_ascii=True)
