"""The COPY text formatting of app/pubsub/writer.py (issue 19): the same as before, and exact on PostgreSQL.

The formatting used to escape with `str.translate` and a one-to-two map; it is now a chain
of `str.replace`. The old one is kept below as the reference: for any text, and for whole
rows, both give the same characters. On PostgreSQL, what BatchWriter COPYs is read back
exactly as it was given, for any text PostgreSQL can hold (everything but NUL, which it
refuses, as before: such payloads are stored as bytes, such message ids quarantined).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.extensions import db
from app.models import COMPRESSED_COLUMNS, User, UserItem, lz4_available
from app.pubsub import writer
from app.pubsub.writer import BatchWriter
from tests.conftest import column_compression, create_user

# The formatting before issue 19, the reference (bench/copy_format.py times against it too).
_OLD_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_OLD_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")


def reference_text(value: str | None) -> str:
    if value is None:
        return "\\N"
    return value.translate(_OLD_ESCAPES) if _OLD_NEEDS_ESCAPE.search(value) else value


_REFERENCE_PLAN = [(name, reference_text if write is writer._text else write) for name, write in writer._COPY_PLAN]


def reference_copy_line(row: dict) -> str:
    return "\t".join([write(row[name]) for name, write in _REFERENCE_PLAN]) + "\n"


# Heavy on what COPY escapes, and on its look-alikes (a literal "\N", "\\t"), with any other code
# point, surrogates included (Python strings can hold them).
SPECIAL = st.sampled_from(["\\", "\t", "\n", "\r", "\x00", "N", "\\N", "\\\\", "t", "é", "𝄞", "\u2028", "\ufeff"])
ANY_TEXT = st.lists(st.one_of(SPECIAL, st.characters()), max_size=200).map("".join)
STORABLE_TEXT = st.lists(st.one_of(SPECIAL, st.characters(exclude_categories=("Cs",))), max_size=200).map(
    lambda pieces: "".join(pieces).replace("\x00", ""))


@settings(max_examples=500)
@given(st.one_of(st.none(), ANY_TEXT))
def test_text_is_formatted_as_before(value):
    assert writer._text(value) == reference_text(value)


@settings(max_examples=150)
@given(st.fixed_dictionaries({
    "user_id": st.integers(1, 2**31), "subscription": ANY_TEXT, "message_id": ANY_TEXT,
    "publish_time": st.none() | st.datetimes(timezones=st.just(UTC)),
    "received_at": st.datetimes(timezones=st.just(UTC)), "data_text": st.none() | ANY_TEXT,
    "data_bytes": st.none() | st.binary(max_size=50), "is_json": st.booleans(), "attributes_json": ANY_TEXT,
    "ordering_key": st.none() | ANY_TEXT, "delivery_attempt": st.none() | st.integers(1, 100),
    "size": st.integers(0, 10**7),
}))
def test_rows_are_formatted_as_before(row):
    assert writer.copy_line(row) == reference_copy_line(row)


def test_escapes_are_applied_backslash_first():
    # A tab becomes backslash-t, and the backslash it adds is not doubled; a literal backslash-t is.
    assert writer._text("a\tb\\tc\n\r\\") == "a\\tb\\\\tc\\n\\r\\\\"
    assert writer._text("\\N") == "\\\\N" and writer._text(None) == "\\N"


def _row(user_id: int, index: int, text: str) -> dict:
    now = datetime.now(UTC)
    return {"user_id": user_id, "subscription": "projects/p/subscriptions/copy-" + text[:100],
            "message_id": f"{uuid.uuid4().hex}-{index}", "publish_time": now, "received_at": now,
            "data_text": text, "data_bytes": None, "is_json": False, "attributes_json": text,
            "ordering_key": text[:1024] or None, "delivery_attempt": None, "size": len(text),
            "quarantine_reason": None, "raw_message": None}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(STORABLE_TEXT, min_size=1, max_size=20))
def test_postgresql_reads_back_exactly_what_was_copied(app, require_postgres, texts):
    with app.app_context():
        # The app fixture is set up once for all the examples: so is this user.
        user_id = db.session.scalar(sa.select(User.id).where(User.username == "copy")) or create_user(app, "copy")
        rows = [_row(user_id, index, text) for index, text in enumerate(texts)]
        assert BatchWriter(db.engine, user_id).write(rows) == len(rows)
        stored = {item.message_id: item for item in db.session.scalars(
            sa.select(UserItem).where(UserItem.message_id.in_([row["message_id"] for row in rows])))}
        for row in rows:
            item = stored[row["message_id"]]
            assert (item.data_text, item.attributes_json, item.ordering_key, item.subscription) == (
                row["data_text"], row["attributes_json"], row["ordering_key"], row["subscription"])
        db.session.rollback()


def test_postgresql_refuses_nul_in_copied_text_as_before(app, require_postgres):
    with app.app_context():
        user_id = create_user(app, "copy-nul")
        with pytest.raises(writer.DATA_ERRORS):
            writer.BatchWriter(db.engine, user_id)._commit([_row(user_id, 0, "a\x00b")])


def test_postgresql_redelivered_rows_are_stored_once_after_a_direct_copy(app, require_postgres):
    """New rows are COPYed straight into user_item; a batch with a redelivery falls back to the stage table."""
    with app.app_context():
        user_id = create_user(app, "copy-redelivery")
        writer_ = BatchWriter(db.engine, user_id)
        first = [_row(user_id, index, f"first {index}") for index in range(3)]
        second = [_row(user_id, index, f"second {index}") for index in range(2)]
        twice = _row(user_id, 0, "twice")
        assert writer_.write(first) == 3  # all new: the direct path
        assert writer_.write(first[1:] + second) == 2  # a redelivery: the stage table, created now
        assert writer_.write([twice, dict(twice)] + first[:1]) == 1  # the stage table again, and a duplicate within
        stored = db.session.scalars(sa.select(UserItem.data_text).where(UserItem.user_id == user_id)
                                    .order_by(UserItem.id)).all()
        assert stored == ["first 0", "first 1", "first 2", "second 0", "second 1", "twice"]


def test_postgresql_a_redelivery_met_chunks_into_a_copy_stores_the_whole_batch_once(app, require_postgres):
    """The COPY is streamed a chunk at a time (writer.CopyStream); a redelivery that fails it several chunks
    in sends the batch again, whole, to the stage table: every new row once, the redelivered one not again."""
    with app.app_context():
        user_id = create_user(app, "copy-late-redelivery")
        writer_ = BatchWriter(db.engine, user_id)
        count = 3 * writer.COPY_ROWS_PER_CHUNK + 50
        rows = [_row(user_id, index, f"row {index}\twith\\escapes") for index in range(count)]
        late = count - 20  # in the last chunk
        assert writer_.write(rows[late : late + 1]) == 1
        assert writer_.write(rows) == count - 1
        stored = db.session.scalars(sa.select(UserItem.data_text).where(UserItem.user_id == user_id)
                                    .order_by(UserItem.id)).all()
        assert sorted(stored) == sorted(row["data_text"] for row in rows)
        assert len(stored) == count


def _compression(user_id: int) -> dict[str, str | None]:
    """Each stored row's data_text compression (None: stored as it is, too small to compress)."""
    return dict(db.session.execute(sa.text(
        "SELECT message_id, pg_column_compression(data_text) FROM user_item WHERE user_id = :user"),
        {"user": user_id}).all())


def test_postgresql_large_payloads_are_compressed_with_lz4_on_either_path(app, require_postgres):
    """user_item's payload columns compress with lz4 (app.models.compress_with_lz4, which create_all runs; a
    migrated database gets it from its migration), and so does the stage table: a batch with a redelivery
    stores lz4 too. Values read back exact."""
    with app.app_context():
        with db.engine.connect() as connection:
            if not lz4_available(connection):
                pytest.skip("this PostgreSQL has no lz4: the app leaves pglz")
        columns = column_compression(app)
        assert {name: columns[name] for name in COMPRESSED_COLUMNS} == dict.fromkeys(COMPRESSED_COLUMNS, "l")
        assert {name for name, method in columns.items() if method} == set(COMPRESSED_COLUMNS)
        user_id = create_user(app, "copy-lz4")
        writer_ = BatchWriter(db.engine, user_id)
        # Compressible, in rows over the 2 kB beyond which PostgreSQL compresses.
        trace = "at frame\\n" * 3000
        rows = [_row(user_id, index, f'{{"entry": {index}, "trace": "{trace}"}}') for index in range(4)]
        assert writer_.write(rows[:2]) == 2  # all new: COPYed straight in
        assert writer_.write(rows) == 2  # with a redelivery: through the stage table
        assert _compression(user_id) == dict.fromkeys([row["message_id"] for row in rows], "lz4")
        stored = dict(db.session.execute(sa.select(UserItem.message_id, UserItem.data_text)
                                         .where(UserItem.user_id == user_id)).all())
        assert stored == {row["message_id"]: row["data_text"] for row in rows}
        db.session.rollback()
