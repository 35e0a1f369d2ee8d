"""Retention: a real worker's maintenance pass deletes what is past retention, per-subscription
overrides, batches, the schedule in Redis, the size warning, and a full database in words."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app import retention
from app.extensions import db
from app.models import Task, User, UserItem
from app.names import canonical_subscription
from tests.bulk import insert_rows, item_row
from tests.conftest import TEST_PROJECT, create_user, wait_until


def full(name: str) -> str:
    return canonical_subscription(name, TEST_PROJECT)


def store_aged(app, user_id: int, subscription: str, days_old: float, count: int) -> list[str]:
    """Store `count` messages received `days_old` days ago; return their message ids."""
    received_at = datetime.now(UTC) - timedelta(days=days_old)
    rows = [item_row(user_id, f"{subscription} {days_old} {number}", subscription=subscription,
                     received_at=received_at) for number in range(count)]
    insert_rows(app, rows)
    return [row["message_id"] for row in rows]


def stored_message_ids(app) -> set[str]:
    with app.app_context():
        ids = set(db.session.scalars(sa.select(UserItem.message_id)))
        db.session.rollback()
        return ids


def set_override(app, user_id: int, subscription: str, days: int | None) -> None:
    with app.app_context():
        retention.set_retention_days(user_id, full(subscription), days)
        db.session.commit()


def test_a_worker_maintenance_pass_deletes_messages_past_retention_and_honours_overrides(app, worker_factory):
    alice = create_user(app, "alice", subscriptions=(full("audit"), full("noisy"), full("archive")))
    bob = create_user(app, "bob")
    kept = set()
    gone = set()
    # The default rule (MESSAGE_RETENTION_DAYS=30): a day past it goes, a day before it stays.
    gone |= set(store_aged(app, alice, "monitor-sub", 31, 40))
    kept |= set(store_aged(app, alice, "monitor-sub", 29, 5))
    gone |= set(store_aged(app, bob, "monitor-sub", 45, 7))
    kept |= set(store_aged(app, bob, "monitor-sub", 0, 3))
    # alice keeps "audit" for 90 days, "noisy" for 2, and "archive" forever (0).
    set_override(app, alice, "audit", 90)
    set_override(app, alice, "noisy", 2)
    set_override(app, alice, "archive", 0)
    kept |= set(store_aged(app, alice, "audit", 60, 4))
    gone |= set(store_aged(app, alice, "audit", 91, 2))
    gone |= set(store_aged(app, alice, "noisy", 3, 6))
    kept |= set(store_aged(app, alice, "noisy", 1, 2))
    kept |= set(store_aged(app, alice, "archive", 4000, 3))
    # bob has no override on "audit": his messages there follow the default.
    gone |= set(store_aged(app, bob, "audit", 60, 2))
    assert stored_message_ids(app) == kept | gone

    worker = worker_factory(MESSAGE_RETENTION_DAYS="30", RETENTION_INTERVAL_SECONDS="3600")
    wait_until(lambda: stored_message_ids(app) == kept, timeout=60,
               message=f"the worker's retention pass; its log:\n{worker.log()}")

    with app.app_context():
        record = wait_until(lambda: (found := retention.last_pass()) and found.finished_at and found,
                            timeout=10, message="the pass's record")
        assert record.deleted == len(gone)
        assert record.default_days == 30
        assert record.size_bytes > 0
        # The next pass is an interval away, and another worker does not run one before then.
        next_at = retention.next_pass_at()
        assert next_at is not None and timedelta(minutes=59) < next_at - datetime.now(UTC) <= timedelta(hours=1)
    assert "Retention pass" in worker.log()


def test_a_pass_that_is_not_due_deletes_nothing_and_a_due_one_resumes_where_it_stopped(app):
    alice = create_user(app, "alice")
    store_aged(app, alice, "monitor-sub", 40, 30)
    with app.app_context():
        app.redis.set(retention.redis_key("next"), "x", ex=60)
        assert retention.run_if_due() is None
        assert len(stored_message_ids(app)) == 30
        app.redis.delete(retention.redis_key("next"))
        # A slice with no time left deletes nothing and leaves the pass to go on.
        first = retention.run_if_due(slice_seconds=0)
        assert first is not None and first.finished_at is None and first.deleted == 0
        assert retention.next_pass_at() is None  # due again at the next maintenance step
        second = retention.run_if_due()
        assert second.finished_at is not None and second.deleted == 30 and second.slices == 2
        assert second.started_at == first.started_at
        assert stored_message_ids(app) == set()


def test_delete_older_than_works_in_batches_of_the_given_size(app):
    alice = create_user(app, "alice")
    store_aged(app, alice, "monitor-sub", 10, 23)
    kept = set(store_aged(app, alice, "monitor-sub", 1, 2))
    progress = []
    with app.app_context():
        deleted, finished = retention.delete_older_than(datetime.now(UTC) - timedelta(days=5), alice,
                                                        batch_rows=5, progress=progress.append)
    assert (deleted, finished) == (23, True)
    assert progress == [5, 10, 15, 20, 23]
    assert stored_message_ids(app) == kept


def test_zero_days_keeps_everything(app):
    app.config["MESSAGE_RETENTION_DAYS"] = 0
    alice = create_user(app, "alice")
    kept = set(store_aged(app, alice, "monitor-sub", 5000, 3))
    with app.app_context():
        assert retention.apply_retention() == (0, True)
    assert stored_message_ids(app) == kept


# --- size ------------------------------------------------------------------------------------------


def test_size_levels_follow_the_limit(app):
    app.config["DATABASE_SIZE_LIMIT_MB"] = 100
    mb = 1024 * 1024
    with app.app_context():
        assert retention.size_status(79 * mb).level == "ok"
        assert retention.size_status(80 * mb).level == "warning"
        assert retention.size_status(95 * mb).level == "critical"
        assert "95%" in retention.size_status(95 * mb).words()
        app.config["DATABASE_SIZE_LIMIT_MB"] = 0
        assert retention.size_status(10_000 * mb).level == "ok"
        assert retention.database_size_bytes() > 0


def test_a_finished_pass_logs_the_size_warning_once(app, caplog):
    with app.app_context():
        size_mb = retention.database_size_bytes() / 1024 / 1024
        app.config["DATABASE_SIZE_LIMIT_MB"] = size_mb / 0.85  # the database is at 85% of its limit
        with caplog.at_level("WARNING", logger="app.retention"):
            assert retention.run_if_due().finished_at
            assert retention.run_if_due() is None  # not due again: no second line
    lines = [record.getMessage() for record in caplog.records if record.name == "app.retention"]
    assert len(lines) == 1 and "filling up" in lines[0] and "(85%)" in lines[0]


# --- a full database --------------------------------------------------------------------------------


def provoke_full_database_error(app) -> sa.exc.DBAPIError:
    """A real "no space" error from this test's database engine."""
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            # What PostgreSQL raises when its disk is full (SQLSTATE 53100), raised for real by a trigger.
            with db.engine.begin() as connection:
                connection.execute(sa.text(
                    "CREATE FUNCTION disk_is_full() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
                    "USING ERRCODE = 'disk_full'; END $$"))
                connection.execute(sa.text("CREATE TRIGGER disk_is_full BEFORE INSERT ON user_item "
                                           "FOR EACH ROW EXECUTE FUNCTION disk_is_full()"))
            try:
                insert_rows(app, [item_row(1, "x")])
            except sa.exc.DBAPIError as error:
                return error
            finally:
                with db.engine.begin() as connection:
                    connection.execute(sa.text("DROP TRIGGER disk_is_full ON user_item"))
                    connection.execute(sa.text("DROP FUNCTION disk_is_full()"))
        else:
            # SQLite's own limit: a page count no bigger than the file has now.
            with db.engine.connect() as connection:
                pages = connection.execute(sa.text("PRAGMA page_count")).scalar()
                connection.execute(sa.text(f"PRAGMA max_page_count = {pages}"))
                try:
                    connection.execute(sa.insert(UserItem), [item_row(1, "x" * 4000) for _ in range(200)])
                    connection.commit()
                except sa.exc.DBAPIError as error:
                    connection.rollback()
                    return error
    raise AssertionError("the database did not refuse the write")


def test_a_full_database_is_told_in_words_on_the_polling_task(app):
    alice = create_user(app, "alice")
    error = provoke_full_database_error(app)
    assert retention.is_disk_full(error)
    if isinstance(error.orig, sqlite3.Error):
        assert error.orig.sqlite_errorcode == sqlite3.SQLITE_FULL
    else:
        assert error.orig.pgcode == "53100"
    assert retention.write_failure_reason(error) == retention.DATABASE_FULL_REASON
    assert retention.write_failure_reason(sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))) is None

    from app.polling import TaskState, status

    with app.app_context():
        task = Task(id="t" * 32, name="polling_subscription", user_id=alice, subscription=full("monitor-sub"),
                    state=TaskState.POLLING.value)
        db.session.add(task)
        db.session.commit()
        retention.report_write_failure(task.id, error, mode="batch")
        # The same reason is told once, not with a notification per failed batch.
        retention.report_write_failure(task.id, error, mode="batch")
        user = db.session.get(User, alice)
        answer = status(user, full("monitor-sub"))
        assert answer["state"] == "polling" and answer["reason"] == retention.DATABASE_FULL_REASON
        assert retention.DATABASE_FULL_REASON in answer["words"]
        notes = [json.loads(payload) for payload in db.session.scalars(
            sa.text("SELECT payload_json FROM notification WHERE name = 'task_progress'"))]
        assert [note["reason"] for note in notes] == [retention.DATABASE_FULL_REASON]
        # Other errors leave the task as it is.
        retention.report_write_failure(task.id, sa.exc.OperationalError("INSERT", {}, Exception("timeout")))
        assert db.session.get(Task, task.id).state_reason == retention.DATABASE_FULL_REASON


@pytest.mark.parametrize("pgcode", ["53200", "53300"])
def test_other_resource_errors_are_not_called_full(pgcode):
    class Original(Exception):
        pass

    original = Original("out of memory")
    original.pgcode = pgcode
    assert not retention.is_disk_full(sa.exc.OperationalError("INSERT", {}, original))


def test_a_polling_worker_whose_writes_fail_for_lack_of_space_says_so_then_stores_once_there_is_room(
    app, client, auth, emulator, pubsub_names, worker_factory, require_postgres
):
    from google.cloud import pubsub_v1

    create_user(app, "alice", subscriptions=(pubsub_names["subscription_path"],))
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(sa.text(
            "CREATE FUNCTION disk_is_full() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
            "USING ERRCODE = 'disk_full'; END $$"))
        connection.execute(sa.text("CREATE TRIGGER disk_is_full BEFORE INSERT ON user_item "
                                   "FOR EACH ROW EXECUTE FUNCTION disk_is_full()"))
    auth.login()
    worker = worker_factory()
    subscription = pubsub_names["subscription_path"]
    response = client.post("/polling_pubsub", data={"action": "start", "subscription": subscription},
                           headers={"X-CSRFToken": auth.csrf_token("/user/alice")})
    assert response.status_code == 202, response.get_data(as_text=True)
    publisher = pubsub_v1.PublisherClient()
    for number in range(5):
        publisher.publish(pubsub_names["topic_path"], f"message {number}".encode()).result(timeout=30)

    def polling_status() -> dict:
        return client.get("/polling_pubsub", query_string={"subscription": subscription}).get_json()

    answer = wait_until(lambda: (found := polling_status())["reason"] and found, 60,
                        message=f"the task to say the database is full; worker log:\n{worker.log()}")
    assert answer["state"] == "polling" and answer["status"] == "polling"
    assert answer["reason"] == retention.DATABASE_FULL_REASON
    assert answer["words"] == f"Polling: {retention.DATABASE_FULL_REASON}"
    assert "the database is full" in worker.log()
    assert len(stored_message_ids(app)) == 0

    with app.app_context(), db.engine.begin() as connection:
        connection.execute(sa.text("DROP TRIGGER disk_is_full ON user_item"))
        connection.execute(sa.text("DROP FUNCTION disk_is_full()"))
    # Nothing was lost: the nacked messages come again and are stored, and the reason goes.
    wait_until(lambda: len(stored_message_ids(app)) == 5, 60, message=f"the messages; log:\n{worker.log()}")
    wait_until(lambda: polling_status()["reason"] is None, 30, message="the reason to clear")
    client.post("/polling_pubsub", data={"action": "stop", "subscription": subscription},
                headers={"X-CSRFToken": auth.csrf_token("/user/alice")})


def test_a_worker_busy_polling_still_runs_the_retention_pass_when_it_is_due(
    app, client, auth, emulator, pubsub_names, worker_factory, require_postgres
):
    alice = create_user(app, "alice", subscriptions=(pubsub_names["subscription_path"],))
    auth.login()
    worker = worker_factory(MESSAGE_RETENTION_DAYS="30")
    with app.app_context():
        wait_until(retention.next_pass_at, 60, message=f"the first pass at start; log:\n{worker.log()}")
    response = client.post("/polling_pubsub", data={"action": "start", "subscription": pubsub_names["subscription"]},
                           headers={"X-CSRFToken": auth.csrf_token("/user/alice")})
    assert response.status_code == 202, response.get_data(as_text=True)
    task_id = response.get_json()["task_id"]
    with app.app_context():
        wait_until(lambda: db.session.scalar(sa.select(Task.heartbeat_at).where(Task.id == task_id)), 60,
                   message=f"the worker to be busy polling; log:\n{worker.log()}")
        db.session.rollback()
    old = set(store_aged(app, alice, "monitor-sub", 40, 12))
    kept = set(store_aged(app, alice, "monitor-sub", 1, 2))
    # The next pass is due now; the only worker is busy, so its heartbeat loop must run it.
    with app.app_context():
        app.redis.delete(retention.redis_key("next"))
    wait_until(lambda: not (stored_message_ids(app) & old), 90,
               message=f"the busy worker's retention pass; log:\n{worker.log()}")
    assert kept <= stored_message_ids(app)
    client.post("/polling_pubsub", data={"action": "stop", "subscription": pubsub_names["subscription"]},
                headers={"X-CSRFToken": auth.csrf_token("/user/alice")})
