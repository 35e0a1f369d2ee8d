"""Scale: indexed hot queries (EXPLAIN on PostgreSQL), pruned notifications, one task spread over several workers."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from rq.job import Job

from app.extensions import db
from app.models import Notification, Task, User, UserItem, utcnow
from app.polling import job_is_alive, mark_alive
from tests.conftest import LATE_WRITE_WINDOW_SECONDS, create_user, holds_for, wait_until
from tests.test_reliability import SequencePublisher, assert_exactly_once

# --- notifications are pruned at write time ------------------------------------------------------


def test_old_notifications_are_pruned_when_a_new_one_is_added(app):
    alice_id, bob_id = create_user(app, "alice"), create_user(app, "bob")
    now = time.time()
    with app.app_context():
        retention = app.config["NOTIFICATION_RETENTION_SECONDS"]
        for user_id in (alice_id, bob_id):
            db.session.add_all([
                Notification(name="task_progress", user_id=user_id, payload_json="{}", timestamp=now - retention - 60),
                Notification(name="task_progress", user_id=user_id, payload_json="{}", timestamp=now - retention + 60),
            ])
        db.session.commit()
        db.session.get(User, alice_id).add_notification("task_progress", {"progress": "Polling"})
        db.session.commit()
        kept = db.session.execute(sa.select(Notification.user_id, Notification.timestamp)).all()
    alice_kept = sorted(timestamp for user_id, timestamp in kept if user_id == alice_id)
    assert len(alice_kept) == 2 and alice_kept[0] > now - retention  # the old one went, the recent one stayed
    # Another user's notifications are theirs to prune.
    assert len([user_id for user_id, _ in kept if user_id == bob_id]) == 2


# --- the hot queries use indexes (PostgreSQL, with enough rows and real statistics) ---------------

ITEM_ROWS = 200_000
BUSY_USERS = 10


def seed_items(app, user_ids: list[int], rows: int, rare_user_id: int) -> None:
    """COPY `rows` items spread over the users (interleaved, as concurrent subscriptions store them)."""
    lines = io.StringIO()
    now = utcnow().isoformat()
    for index in range(rows):
        lines.write(f"{user_ids[index % len(user_ids)]}\tsub\tm{index}\t{{\"n\":{index}}}\tt\t{{}}\t10\t{now}\n")
    for index in range(60):
        lines.write(f"{rare_user_id}\tsub\tr{index}\t{{\"n\":{index}}}\tt\t{{}}\t10\t{now}\n")
    lines.seek(0)
    with app.app_context():
        raw = db.engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                cursor.copy_expert("COPY user_item (user_id, subscription, message_id, data_text, is_json, "
                                   "attributes_json, size, received_at) FROM STDIN", lines)
                cursor.execute(
                    "INSERT INTO notification (name, user_id, timestamp, payload_json) "
                    "SELECT 'task_progress', u, extract(epoch FROM now()) - n, '{}' "
                    "FROM unnest(%s::int[]) AS u, generate_series(1, 2000) AS n", (user_ids,))
            raw.commit()
        finally:
            raw.close()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("ANALYZE"))


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def scans_of(app, statement: str, parameters) -> list[tuple[str, str]]:
    """(node type, relation) for every scan in the statement's plan."""
    with app.app_context():
        raw = db.engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
                plan = cursor.fetchone()[0][0]["Plan"]
        finally:
            raw.close()
    return [(node["Node Type"], node.get("Relation Name", "")) for node in plan_nodes(plan)]


class CapturedQueries:
    """The SQL the app sends while serving requests, with its parameters, for EXPLAIN."""

    def __init__(self, engine):
        self.engine = engine
        self.queries: list[tuple[str, object]] = []

    def __enter__(self):
        sa.event.listen(self.engine, "before_cursor_execute", self.capture)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, "before_cursor_execute", self.capture)

    def capture(self, conn, cursor, statement, parameters, context, executemany):
        touches_hot_table = "user_item" in statement or "notification" in statement
        if statement.lstrip().upper().startswith("SELECT") and touches_hot_table:
            self.queries.append((statement, parameters))


def test_hot_queries_never_scan_user_item_sequentially(app, client, auth, require_postgres):
    """EXPLAIN every query the page, the polls and the infinite scroll send, on 200,000 items with ANALYZE."""
    user_ids = [create_user(app, f"user{number}") for number in range(BUSY_USERS)]
    rare_id = create_user(app, "alice")
    seed_items(app, user_ids, ITEM_ROWS, rare_id)
    with app.app_context():
        newest = db.session.scalar(sa.select(sa.func.max(UserItem.id)))
    requests = []
    for username in ("user3", "alice"):
        requests += [f"/user/{username}", f"/useritems?after={newest - 500}&user={username}",
                     f"/useritems?after=0&user={username}", f"/useritems?before={newest // 2}&user={username}",
                     f"/useritems?before={newest + 1}&user={username}", f"/notifications?since={time.time() - 100}",
                     "/notifications?since=0"]
    captured = []
    for username in ("user3", "alice"):
        auth.login(username)
        with app.app_context(), CapturedQueries(db.engine) as capture:
            for path in requests:
                if (path.startswith("/user/") or "user=" in path) and username not in path:
                    continue
                assert client.get(path).status_code == 200, path
        captured += capture.queries
        auth.logout()
    item_queries = [query for query in captured if "user_item" in query[0]]
    assert len(item_queries) >= 8, captured

    bad = []
    for statement, parameters in captured:
        scans = scans_of(app, statement, parameters)
        if ("Seq Scan", "user_item") in scans or ("Seq Scan", "notification") in scans:
            bad.append((statement, scans))
    assert not bad, f"sequential scans on a hot path: {bad}"

    # The check can fail: a query that no index serves is flagged.
    assert ("Seq Scan", "user_item") in scans_of(app, "SELECT id FROM user_item WHERE size = %(size)s",
                                                 {"size": 10})


# --- one task, several streams ---------------------------------------------------------------------


def post_polling(client, auth, **fields):
    token = auth.csrf_token("/user/alice")
    return client.post("/polling_pubsub", data=fields, headers={"X-CSRFToken": token})


def test_start_with_streams_enqueues_one_job_per_stream_for_one_task(app, client, auth):
    create_user(app, "alice", subscriptions=("sub-a",))
    auth.login()
    for bad in ("0", "-1", "x", str(app.config["MAX_POLLING_STREAMS"] + 1)):
        response = post_polling(client, auth, action="start", subscription="sub-a", streams=bad)
        assert response.status_code == 400, bad
    response = post_polling(client, auth, action="start", subscription="sub-a", streams="3")
    assert response.status_code == 202
    task_id = response.get_json()["task_id"]
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task.streams == 3
        job_ids = task.job_ids()
    assert job_ids == [task_id, f"{task_id}-1", f"{task_id}-2"]
    assert sorted(app.task_queue.job_ids) == sorted(job_ids)
    assert [Job.fetch(job_id, connection=app.redis).kwargs for job_id in job_ids] == [{}, {"stream": 1},
                                                                                      {"stream": 2}]
    # Still one task per subscription: a second start reports the running one.
    again = post_polling(client, auth, action="start", subscription="sub-a", streams="2")
    assert again.status_code == 200 and again.get_json()["task_id"] == task_id
    assert client.get("/polling_pubsub?subscription=sub-a").get_json()["streams"] == 3


def test_a_task_is_alive_only_while_every_stream_is(app):
    user_id = create_user(app, "alice")
    with app.app_context():
        task = Task(id="a" * 32, name="polling_subscription", user_id=user_id, subscription="s", streams=2,
                    started_at=utcnow() - timedelta(minutes=5), heartbeat_at=utcnow())
        db.session.add(task)
        db.session.commit()
        now = utcnow()
        mark_alive(app.redis, task.id)
        assert not job_is_alive(task, app.redis, now)  # stream 1 is gone, although the Task heartbeats
        # Waiting in the queue for a free worker counts as alive.
        job = app.task_queue.enqueue("app.tasks.polling_subscription", user_id, "s", stream=1,
                                     job_id=f"{task.id}-1")
        assert job_is_alive(task, app.redis, now)
        job.delete()
        assert not job_is_alive(task, app.redis, now)
        mark_alive(app.redis, f"{task.id}-1")
        assert job_is_alive(task, app.redis, now)


@pytest.mark.parametrize("mode", ["batch", "streaming"])
def test_two_workers_share_one_subscription_and_store_each_message_once(
    app, client, auth, emulator, pubsub_names, worker_factory, mode
):
    create_user(app, "alice", subscriptions=(pubsub_names["subscription"],))
    auth.login()
    workers = [worker_factory(PUBSUB_PULL_MODE=mode) for _ in range(2)]
    response = post_polling(client, auth, action="start", subscription=pubsub_names["subscription"], streams="2")
    assert response.status_code == 202
    task_id = response.get_json()["task_id"]
    with app.app_context():
        job_ids = db.session.get(Task, task_id).job_ids()

    def both_running() -> bool:
        return all(Job.fetch(job_id, connection=app.redis).get_status(refresh=True) == "started"
                   for job_id in job_ids)

    wait_until(both_running, 60, message="both streams to run; logs:\n" + "\n".join(w.log() for w in workers))
    # Each stream runs in its own worker's work horse.
    workers_used = {Job.fetch(job_id, connection=app.redis).worker_name for job_id in job_ids}
    assert len(workers_used) == 2

    publisher = SequencePublisher(pubsub_names["topic_path"], 3000, rate=3000)
    publisher.start()
    publisher.finish()
    wait_until(lambda: task_count(app, task_id) >= 3000, 60, interval=0.5, message="3,000 stored")
    holds_for(lambda: task_count(app, task_id) == 3000, LATE_WRITE_WINDOW_SECONDS, message="3,000 stored")
    assert_exactly_once(app, 3000)
    assert task_count(app, task_id) == 3000  # the streams add to one count

    response = post_polling(client, auth, action="stop", subscription=pubsub_names["subscription"])
    assert response.status_code == 202
    wait_until(lambda: all(Job.fetch(job_id, connection=app.redis).get_status(refresh=True) == "finished"
                           for job_id in job_ids), 15, interval=0.2, message="both streams to finish")
    stages = [entry["data"]["progress"] for entry in client.get("/notifications?since=0").get_json()]
    assert stages.count("Finished") == 1, stages
    assert stages[-1] == "Finished"


def task_count(app, task_id: str) -> int:
    with app.app_context():
        count = db.session.scalar(sa.select(Task.stored_count).where(Task.id == task_id))
        db.session.rollback()
        return count or 0


# --- rendered rows are cached per process, keyed by the message ----------------------------------


def test_a_reused_item_id_never_shows_the_cached_row_of_another_message(app, client, auth):
    from tests.conftest import store_item

    user_id = create_user(app, "alice")
    auth.login()
    item_id = store_item(app, user_id, {"first": "message"}, message_id="m-1")
    first = client.get("/useritems?after=0").get_json()
    assert "first" in first["items"][0]
    assert client.get("/useritems?after=0").get_json()["items"] == first["items"]  # served again, the same
    with app.app_context():
        db.session.execute(sa.delete(UserItem).where(UserItem.id == item_id))
        db.session.add(UserItem(id=item_id, user_id=user_id, subscription=app.config["SUBSCRIPTION_NAME"],
                                message_id="m-2", data_text='{"second": "message"}', is_json=True, size=21))
        db.session.commit()
    row = client.get("/useritems?after=0").get_json()["items"][0]
    assert "second" in row and "first" not in row
