"""Message conversion (app/pubsub/messages.py) after issue 19's speed-ups gives what it gave before.

is_json_text now turns plain text away on its first character instead of parsing it, and parses
with orjson, asking the json module only about what orjson refuses; the
attributes are encoded string by string rather than by json.dumps; publish times are built from
the epoch by adding a timedelta; and the writer formats a batch's COPY data in one loop
(writer.copy_tuples), encoding what the batch's rows share once. The versions they replaced (and,
for the COPY data, the batch written a row at a time) serve as references here, and Hypothesis
compares them on any input.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.pubsub import messages, writer

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
    # The way split_payload asks, with the bytes it decoded (a text with a lone surrogate has none).
    if not any(0xD800 <= ord(character) <= 0xDFFF for character in text):
        assert messages.is_json_text(text, text.encode()) == reference_is_json_text(text)


def test_what_orjson_refuses_and_the_json_module_takes_is_still_json():
    for text in ('"\\ud800"', '["\\udfff", 1]', "1e400", '{"big": -1e999}'):
        assert reference_is_json_text(text), text
        assert messages.is_json_text(text), text
        assert messages.split_payload(text.encode())[2], text
    for text in ("NaN", "[Infinity]", '{"a": -Infinity}', "[1,]", '{"a" 1}', "[" * 5):
        assert not messages.is_json_text(text), text


def test_a_document_nested_deeper_than_the_json_module_goes_is_json_and_shown_as_text():
    from types import SimpleNamespace

    from app.rendering import render_data

    deep = "[" * 1010 + "]" * 1010
    assert not reference_is_json_text(deep)  # RecursionError in the json module
    assert messages.is_json_text(deep)
    assert not messages.is_json_text("[" * 1100 + "]" * 1100)  # deeper than orjson goes, too
    item = SimpleNamespace(data_text=deep, data_bytes=None, is_json=True, size=len(deep))
    shown = render_data(item, limit=None)
    assert shown.kind == "text" and deep in str(shown.html)


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=6))
def test_attributes_are_encoded_as_before(attributes):
    row = messages.build_row(user_id=1, subscription="s", message_id="1", data=b"x", attributes=attributes,
                             publish_time=None, ordering_key="", delivery_attempt=None, size=1, received_at=None)
    assert row["attributes_json"] == json.dumps(dict(attributes), sort_keys=True, ensure_ascii=True)


@settings(max_examples=300)
@given(st.integers(0, 253402300799), st.integers(0, 999_999_999))
def test_publish_times_are_built_as_before(seconds, nanos):
    expected = None if not seconds and not nanos else \
        datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)
    assert messages._timestamp(seconds, nanos) == expected


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12) | \
    st.sampled_from(["", "\\", "\t", "\n", "\r", "\\N", "a\tb\\tc\n\r\\"])
TIMES = st.datetimes(timezones=st.just(UTC))
ROWS = st.fixed_dictionaries({
    "user_id": st.integers(1, 2**31 - 1), "subscription": TEXT, "message_id": TEXT,
    "publish_time": st.none() | TIMES, "received_at": TIMES, "data_text": st.none() | TEXT,
    "data_bytes": st.none() | st.binary(max_size=20), "is_json": st.booleans(), "attributes_json": TEXT,
    "ordering_key": st.none() | TEXT, "delivery_attempt": st.none() | st.integers(1, 100),
    "size": st.integers(0, 10**7),
})


@settings(max_examples=200)
@given(st.lists(ROWS, max_size=6), st.data())
def test_a_batchs_copy_data_is_its_rows_copy_data_one_by_one(rows, data):
    # Rows of one batch share the subscription and time-received objects; copy_tuples formats those
    # once, so batches here mix shared objects, equal copies and different values.
    shared_subscription, shared_time = "projects/p/subscriptions/shared", datetime(2026, 12, 1, tzinfo=UTC)
    for row in rows:
        if data.draw(st.booleans()):
            row["subscription"] = shared_subscription
        if data.draw(st.booleans()):
            row["received_at"] = shared_time + timedelta(0) if data.draw(st.booleans()) else shared_time
    assert writer.copy_tuples(rows) == b"".join(writer.copy_tuples([row]) for row in rows)


@settings(max_examples=200)
@given(st.lists(ROWS, max_size=12), st.integers(1, 5), st.integers(-1, 400), st.integers(0, 3), st.integers(0, 6))
def test_a_streamed_batch_reads_as_its_copy_data_however_it_is_read(rows, rows_per_chunk, size, rewinds, partial):
    # The writer hands PostgreSQL a CopyStream, formatted a chunk at a time as psycopg2 reads it, and
    # rewinds it to COPY the batch a second time (into the stage table) when the first COPY fails,
    # which may be before the first COPY read it all.
    stream = writer.CopyStream(rows, rows_per_chunk=rows_per_chunk)
    read_size = size if size != 0 else -1
    for _ in range(partial):
        stream.read(read_size)
    stream.rewind()
    for _ in range(rewinds + 1):
        pieces = []
        while piece := stream.read(read_size):
            assert read_size < 0 or len(piece) <= read_size
            pieces.append(piece)
        assert b"".join(pieces) == writer.copy_data(rows)
        assert stream.read(read_size) == b""  # and stays at its end
        stream.rewind()


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=6), st.binary(max_size=40),
       st.text(max_size=20), st.integers(0, 2**31 - 1))
def test_a_pulled_message_converts_as_its_fields_would(attributes, data, ordering_key, seconds):
    # row_from_pulled reads the protobuf's attribute map key by key into a dict (its items() view
    # iterates in Python); the row is the one build_row makes from the same fields as plain values.
    from google.pubsub_v1.types import ReceivedMessage

    received = ReceivedMessage.pb()()
    received.ack_id = "ack"
    received.delivery_attempt = 3
    received.message.message_id = "m-1"
    received.message.data = data
    received.message.attributes.update(attributes)
    received.message.ordering_key = ordering_key
    received.message.publish_time.seconds = seconds
    received = ReceivedMessage.pb().FromString(received.SerializeToString())  # as the client gets it
    at = datetime(2026, 12, 3, tzinfo=UTC)
    row = messages.row_from_pulled(received, user_id=7, subscription="s", received_at=at)
    assert row == messages.build_row(
        user_id=7, subscription="s", message_id="m-1", data=data, attributes=dict(attributes),
        publish_time=messages._timestamp(seconds, 0), ordering_key=ordering_key, delivery_attempt=3,
        size=received.message.ByteSize(), received_at=at)
    assert row["attributes"] == attributes
    assert row["attributes_json"] == json.dumps(attributes, sort_keys=True, ensure_ascii=True)
