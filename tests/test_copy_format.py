"""The COPY data of app/pubsub/writer.py (PostgreSQL's binary format): what it says, and exact on PostgreSQL.

The writer used to COPY in the text format, escaping every value; it now sends the binary
format, which has no escapes. A reader written here from PostgreSQL's description of the
format decodes what the writer formats, for any row; on PostgreSQL, what BatchWriter COPYs is
read back exactly as it was given, every column, for any text PostgreSQL can hold (everything
but NUL, which it refuses, as before: such payloads are stored as bytes, such message ids
quarantined).
"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.alerts.evaluate import RuleEvaluator
from app.extensions import db
from app.models import COMPRESSED_COLUMNS, AlertRule, Task, User, UserItem, lz4_available
from app.pubsub import writer
from app.pubsub.writer import COLUMNS, BatchWriter
from tests.conftest import column_compression, create_user

# What COPY once escaped, and look-alikes (a literal "\N", "\\t"), with any other code point.
SPECIAL = st.sampled_from(["\\", "\t", "\n", "\r", "N", "\\N", "\\\\", "t", "é", "𝄞", "\u2028", "\ufeff"])
STORABLE_TEXT = st.lists(st.one_of(SPECIAL, st.characters(exclude_categories=("Cs",))), max_size=200).map(
    lambda pieces: "".join(pieces).replace("\x00", ""))
TIMES = st.datetimes(timezones=st.just(UTC))
ROWS = st.fixed_dictionaries({
    "user_id": st.integers(1, 2**31 - 1), "subscription": STORABLE_TEXT, "message_id": STORABLE_TEXT,
    "publish_time": st.none() | TIMES, "received_at": TIMES, "data_text": st.none() | STORABLE_TEXT,
    "data_bytes": st.none() | st.binary(max_size=50), "is_json": st.booleans(), "attributes_json": STORABLE_TEXT,
    "ordering_key": st.none() | STORABLE_TEXT, "delivery_attempt": st.none() | st.integers(1, 2**31 - 1),
    "size": st.integers(0, 2**31 - 1),
})


def read_copy(data: bytes) -> list[list[bytes | None]]:
    """The fields of each row of a binary COPY, as PostgreSQL's documentation describes the format."""
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00"
    flags, extension = struct.unpack_from(">iI", data, 11)
    assert flags == 0 and extension == 0
    offset, rows = 19, []
    while True:
        (count,) = struct.unpack_from(">h", data, offset)
        offset += 2
        if count == -1:
            assert offset == len(data), "bytes after the trailer"
            return rows
        fields = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", data, offset)
            offset += 4
            fields.append(None if length == -1 else data[offset : offset + length])
            offset += max(length, 0)
        rows.append(fields)


def microseconds_since_2000(moment: datetime) -> int:
    since = moment - datetime(2000, 1, 1, tzinfo=UTC)
    return (since.days * 86400 + since.seconds) * 1_000_000 + since.microseconds


def expected_fields(row: dict) -> list[bytes | None]:
    def integer(value, size):
        return None if value is None else value.to_bytes(size, "big", signed=True)

    def text(value):
        return None if value is None else value.encode("utf-8")

    def time(value):
        return None if value is None else integer(microseconds_since_2000(value), 8)

    return [integer(row["user_id"], 4), text(row["subscription"]), text(row["message_id"]),
            time(row["publish_time"]), time(row["received_at"]), text(row["data_text"]), row["data_bytes"],
            b"\x01" if row["is_json"] else b"\x00", text(row["attributes_json"]), text(row["ordering_key"]),
            integer(row["delivery_attempt"], 4), integer(row["size"], 4)]


@settings(max_examples=300)
@given(st.lists(ROWS, max_size=5))
def test_copy_data_reads_back_as_the_rows_fields(rows):
    assert len(COLUMNS) == 12
    assert read_copy(writer.copy_data(rows)) == [expected_fields(row) for row in rows]


def test_times_travel_as_microseconds_since_2000_in_utc():
    moment = datetime(2026, 12, 3, 4, 5, 6, 789012, tzinfo=UTC)
    since = ((((26 * 365 + 7) + 336) * 24 + 4) * 3600 + 5 * 60 + 6) * 1_000_000 + 789012  # 7 leap days, Dec 3
    assert microseconds_since_2000(moment) == since
    # The same moment in another zone, and a naive time (read as UTC, as app.models.as_utc does).
    for same in (moment, moment.astimezone(timezone(timedelta(hours=5, minutes=30))), moment.replace(tzinfo=None)):
        assert writer._time(same) == struct.pack(">iq", 8, since)
    assert writer._time(datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == struct.pack(">iq", 8, -1)
    assert writer._time(None) == struct.pack(">i", -1)


def _row(user_id: int, index: int, text: str) -> dict:
    now = datetime.now(UTC)
    return {"user_id": user_id, "subscription": "projects/p/subscriptions/copy-" + text[:100],
            "message_id": f"{uuid.uuid4().hex}-{index}", "publish_time": now, "received_at": now,
            "data_text": text, "data_bytes": None, "is_json": False, "attributes_json": text,
            "ordering_key": text[:1024] or None, "delivery_attempt": None, "size": len(text),
            "quarantine_reason": None, "raw_message": None}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROWS, min_size=1, max_size=10))
def test_postgresql_reads_back_exactly_what_was_copied(app, require_postgres, rows):
    with app.app_context():
        # The app fixture is set up once for all the examples: so is this user.
        user_id = db.session.scalar(sa.select(User.id).where(User.username == "copy")) or create_user(app, "copy")
        rows = [dict(row, user_id=user_id, message_id=f"{uuid.uuid4().hex}-{index}", quarantine_reason=None,
                     raw_message=None) for index, row in enumerate(rows)]
        assert BatchWriter(db.engine, user_id).write(rows) == len(rows)
        stored = {item.message_id: item for item in db.session.scalars(
            sa.select(UserItem).where(UserItem.message_id.in_([row["message_id"] for row in rows])))}
        for row in rows:
            item = stored[row["message_id"]]
            assert {column: getattr(item, column) for column in COLUMNS} == {column: row[column] for column in COLUMNS}
        db.session.rollback()


def test_postgresql_refuses_nul_in_copied_text_as_before(app, require_postgres):
    with app.app_context():
        user_id = create_user(app, "copy-nul")
        with pytest.raises(writer.DATA_ERRORS):
            writer.BatchWriter(db.engine, user_id)._commit([_row(user_id, 0, "a\x00b")])


def test_postgresql_a_row_that_cannot_be_formatted_is_a_data_error_not_an_outage(app, require_postgres):
    # psycopg2 replaces what the COPY data's read() raised with a QueryCanceled (an OperationalError,
    # which the poller takes for an outage: nack and retry for ever); the writer raises a data error,
    # so that write() bisects the batch down to the row.
    with app.app_context():
        user_id = create_user(app, "copy-format-error")
        row = _row(user_id, 0, "too large") | {"size": 2**31}  # beyond a PostgreSQL integer
        with pytest.raises(writer.DATA_ERRORS) as raised:
            writer.BatchWriter(db.engine, user_id)._commit([_row(user_id, 1, "fine"), row])
        assert isinstance(raised.value.__cause__, struct.error)


def test_postgresql_only_a_unique_violation_sends_a_batch_to_the_stage_table(app, require_postgres):
    with app.app_context():
        user_id = create_user(app, "copy-not-null")
        writer_ = BatchWriter(db.engine, user_id)
        with pytest.raises(sa.exc.IntegrityError) as raised:
            writer_._commit([_row(user_id, 0, "no time received") | {"received_at": None}])
        assert raised.value.orig.pgcode == "23502"  # not_null_violation, from the direct COPY
        assert writer_.copy_directly


def test_postgresql_redelivered_rows_are_stored_once_after_a_direct_copy(app, require_postgres):
    """New rows are COPYed straight into user_item; a batch with a redelivery falls back to the stage table."""
    with app.app_context():
        user_id = create_user(app, "copy-redelivery")
        writer_ = BatchWriter(db.engine, user_id)
        first = [_row(user_id, index, f"first {index}") for index in range(3)]
        second = [_row(user_id, index, f"second {index}") for index in range(2)]
        twice = _row(user_id, 0, "twice")
        assert writer_.write(first) == 3  # all new: the direct path
        assert writer_.copy_directly
        assert writer_.write(first[1:] + second) == 2  # a redelivery: the stage table, created now
        assert not writer_.copy_directly  # the next batch goes through the stage table first
        assert writer_.write([twice, dict(twice)] + first[:1]) == 1  # the stage table again, and a duplicate within
        assert not writer_.copy_directly
        assert writer_.write([_row(user_id, 9, "new")]) == 1  # all new, through the stage table
        assert writer_.copy_directly  # and the next batch goes straight in again
        stored = db.session.scalars(sa.select(UserItem.data_text).where(UserItem.user_id == user_id)
                                    .order_by(UserItem.id)).all()
        assert stored == ["first 0", "first 1", "first 2", "second 0", "second 1", "twice", "new"]


def test_postgresql_a_batch_of_new_messages_is_one_statement_and_its_copy(app, require_postgres):
    """The user's lock, the task's count and whether an alert rule watches the messages go to PostgreSQL
    in one round trip (BatchWriter._lock_and_check), where they were three statements: a batch of new
    messages that no rule watches sends that and its COPY (a raw cursor's, not seen here), nothing else.
    A rule that watches is read in a second statement; a redelivery's batch is counted after its insert."""
    with app.app_context():
        user_id = create_user(app, "copy-round-trips")
        task = Task(id=uuid.uuid4().hex, name="polling_subscription", user_id=user_id, description="Polling")
        db.session.add(task)
        db.session.commit()
        subscription = _row(user_id, 0, "new")["subscription"]
        writer_ = BatchWriter(db.engine, user_id, task.id, evaluator=RuleEvaluator(user_id, subscription))
        sent = []

        def note(_connection, _cursor, statement, *_args):
            sent.append(statement)

        def write(rows):
            sent.clear()
            sa.event.listen(db.engine, "before_cursor_execute", note)
            try:
                return writer_.write(rows)
            finally:
                sa.event.remove(db.engine, "before_cursor_execute", note)

        def stored_count():
            count = db.session.scalar(sa.select(Task.stored_count).where(Task.id == task.id))
            db.session.rollback()
            return count

        first = [_row(user_id, index, "new") for index in range(3)]
        assert write(first) == 3
        assert len(sent) == 1 and "pg_advisory_xact_lock" in sent[0] and "UPDATE task" in sent[0], sent
        assert stored_count() == 3
        db.session.add(AlertRule(user_id=user_id, name="never", subscription=subscription,
                                 condition='attributes.kind = "none of these"', url="https://example.com/hook",
                                 secret="s"))
        db.session.commit()
        assert write([_row(user_id, 3, "new")]) == 1
        assert len(sent) == 2 and "FROM alert_rule" in sent[1], sent  # the rule is read, and watches nothing here
        assert stored_count() == 4
        # A redelivery: the direct COPY fails, which undoes the count made before it; the batch goes through
        # the stage table and is counted after its insert, once.
        assert write([first[0], _row(user_id, 4, "new")]) == 1
        # The lock twice: with the undone count, then alone before the stage table's insert.
        assert [statement for statement in sent if "pg_advisory_xact_lock" in statement] == [sent[0], sent[2]], sent
        assert "UPDATE task" in sent[0] and "UPDATE task" not in sent[2], sent
        assert "INSERT INTO user_item" in sent[-2], sent
        assert sent[-1].startswith("UPDATE task"), sent
        assert stored_count() == 5


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
