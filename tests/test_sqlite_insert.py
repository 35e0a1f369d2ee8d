"""BatchWriter's SQLite insert (issue 19) stores exactly what SQLAlchemy's insert stored.

On SQLite the writer used to hand its rows to SQLAlchemy (INSERT ... ON CONFLICT DO NOTHING
RETURNING), whose per-row parameter processing took half the writer's CPU. It now sends the same
statement with exec_driver_sql, the values formatted by writer.sqlite_values. Here both
write the same rows into one SQLite database, under two subscription prefixes, and every stored
column must be the same value of the same SQLite type; both must return the same new rows.
Runs in the SQLite pass and the PostgreSQL pass alike: it needs no service, only a file.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from app.models import DEDUP_KEY, UserItem
from app.pubsub import writer
from app.pubsub.writer import COLUMNS, BatchWriter

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10)
TIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]))
ROWS = st.lists(st.fixed_dictionaries({
    "user_id": st.just(1), "subscription": st.sampled_from(["s1", "s2"]), "message_id": st.sampled_from("abc") | TEXT,
    "publish_time": st.none() | TIMES, "received_at": TIMES, "data_text": st.none() | TEXT,
    "data_bytes": st.none() | st.binary(max_size=10), "is_json": st.booleans(), "attributes_json": TEXT,
    "ordering_key": st.none() | TEXT, "delivery_attempt": st.none() | st.integers(1, 100),
    "size": st.integers(0, 10**7),
}), max_size=8)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('sqlite-insert') / 'items.db'}")
    # The item table alone: this engine does not enforce foreign keys (the app's turns them on).
    UserItem.__table__.create(engine)
    yield engine
    engine.dispose()


def stored(connection, prefix: str) -> list[tuple]:
    """Every column of the rows under the prefix, as SQLite holds it: its type and its quoted value."""
    columns = ", ".join(f"typeof({name}), quote({name})" for name in COLUMNS if name != "subscription")
    rows = connection.execute(sa.text(
        f"SELECT substr(subscription, {len(prefix) + 1}), {columns} FROM user_item "
        f"WHERE subscription LIKE :prefix ORDER BY id"), {"prefix": prefix + "%"}).all()
    return [tuple(row) for row in rows]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ROWS, st.integers())
def test_the_sqlite_insert_stores_and_returns_what_sqlalchemys_did(engine, rows, salt):
    old_prefix, new_prefix = f"old{salt}/", f"new{salt}/"
    reference = sqlite.insert(UserItem.__table__).on_conflict_do_nothing(index_elements=list(DEDUP_KEY)).returning(
        UserItem.__table__.c.message_id)
    with engine.begin() as connection:
        old_rows = [{**row, "subscription": old_prefix + row["subscription"]} for row in rows]
        old_returned = [message_id for (message_id,) in connection.execute(reference, old_rows)] if rows else []
        new_rows = [{**row, "subscription": new_prefix + row["subscription"]} for row in rows]
        new_returned = [message_id for _id, message_id in BatchWriter(engine, 1)._insert_sqlite(connection, new_rows)]
        assert sorted(new_returned) == sorted(old_returned)
        assert stored(connection, new_prefix) == stored(connection, old_prefix)


def test_a_batch_larger_than_one_statement_is_inserted_whole_and_a_redelivery_returns_nothing(engine):
    now = datetime.now(UTC)
    rows = [{"user_id": 1, "subscription": "big", "message_id": str(index), "publish_time": now, "received_at": now,
             "data_text": "x", "data_bytes": None, "is_json": False, "attributes_json": "{}", "ordering_key": None,
             "delivery_attempt": None, "size": 1} for index in range(writer.SQLITE_ROWS_PER_INSERT * 2 + 1)]
    with engine.begin() as connection:
        returned = BatchWriter(engine, 1)._insert_sqlite(connection, rows)
        assert sorted(message_id for _id, message_id in returned) == sorted(row["message_id"] for row in rows)
        assert BatchWriter(engine, 1)._insert_sqlite(connection, rows) == []
