"""The polling task's life as a user meets it: queued behind a busy worker, failed until dismissed,
refused when not theirs; its state as a value in every notification; views that share modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sqlalchemy as sa
from google.cloud import pubsub_v1

from app.extensions import db
from app.models import Notification, Task, UserItem
from app.worker import MAINTENANCE_SECONDS
from tests.conftest import ROOT, TEST_PROJECT, create_user, holds_for, wait_until
from tests.test_subscriptions import make_subscription


def post(client, auth, **fields):
    token = auth.csrf_token("/user/alice")
    return client.post("/polling_pubsub", data=fields, headers={"X-CSRFToken": token, "Accept": "application/json"})


def status(client, subscription: str) -> dict:
    return client.get("/polling_pubsub", query_string={"subscription": subscription}).get_json()


def progress_notifications(app) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(sa.select(Notification).where(Notification.name == "task_progress")
                                  .order_by(Notification.timestamp)).all()
        return [row.get_data() for row in rows]


def panel_row(client, path: str) -> str:
    page = client.get("/subscriptions").get_data(as_text=True)
    match = re.search(rf'<tr class="subscription-row" data-name="{re.escape(path)}"[^>]*>(.*?)</tr>', page, re.S)
    assert match, f"no row for {path}"
    return match.group(0)


def test_with_one_worker_a_second_subscription_waits_queued_then_polls_when_the_first_stops(
    app, client, auth, emulator, worker_factory
):
    first, second = make_subscription(), make_subscription()
    create_user(app, "alice", subscriptions=(first["name"], second["name"]))
    auth.login()
    worker = worker_factory()
    assert post(client, auth, action="start", subscription=first["name"]).status_code == 202
    wait_until(lambda: status(client, first["name"])["status"] == "polling", 60, message="first polling")
    assert post(client, auth, action="start", subscription=second["path"]).status_code == 202

    waiting = status(client, second["name"])
    assert (waiting["status"], waiting["state"]) == ("queued", "queued")
    assert (waiting["queue_position"], waiting["workers"], waiting["busy_workers"]) == (1, 1, 1)
    assert waiting["words"] == "Waiting for a free worker (1 running, 1 busy)"
    assert "Waiting for a free worker (1 running, 1 busy)" in panel_row(client, second["path"])
    live = client.get("/user/alice", query_string={"subscription": second["name"]}).get_data(as_text=True)
    assert 'data-status="queued"' in live and "Waiting for a free worker (1 running, 1 busy)" in live
    # The short name and the full path are the same subscription.
    assert status(client, second["path"])["task_id"] == waiting["task_id"]

    assert post(client, auth, action="stop", subscription=first["name"]).status_code == 202
    wait_until(lambda: status(client, second["name"])["status"] == "polling", 60, message="second polling")
    # Each work horse left what it inherited and the app out of garbage collection (app.tasks), and
    # the first job's CPU line, logged as it ended, says what collection cost it (a job this short may
    # have made none; tests/test_subscriber.py shows them counted).
    frozen = [int(count) for count in re.findall(r"(\d+) objects \(inherited from the worker, and the app\) "
                                                  r"left out of garbage collection", worker.log())]
    assert len(frozen) == 2 and min(frozen) > 10_000, frozen
    cpu_line = re.search(r'ingest CPU per message \(µs\) \{[^}]*"gc": [\d.]+\} over \d+ messages in \d+ writes; '
                         r"(\d+) garbage collections; wall time per message \(µs\) "
                         r'\{"write": [\d.]+, "waiting": [\d.]+\}', worker.log())
    assert cpu_line, worker.log()[-2000:]
    assert 'data-status="polling"' in panel_row(client, second["path"])
    assert status(client, first["name"])["state"] == "finished"

    publisher = pubsub_v1.PublisherClient()
    publisher.publish(second["topic_path"], b'{"n": 1}', which="second").result(timeout=30)

    def stored() -> list[str]:
        with app.app_context():
            return list(db.session.scalars(sa.select(UserItem.subscription)))

    assert wait_until(stored, 30, message="the second subscription's message") == [second["path"]]
    wait_until(lambda: status(client, second["name"])["stored_count"] == 1, 15, message="the count")

    # Every task_progress notification carries the state as a value beside the words.
    notes = progress_notifications(app)
    assert notes and all({"state", "task_id", "subscription", "progress"} <= set(note) for note in notes)
    states = [(note["subscription"], note["state"]) for note in notes]
    assert (first["path"], "polling") in states and (first["path"], "finished") in states
    assert (second["path"], "polling") in states


def test_a_subscription_deleted_in_pubsub_fails_with_its_reason_until_dismissed(
    app, client, auth, emulator, worker_factory, require_postgres
):
    doomed = make_subscription()
    create_user(app, "alice", subscriptions=(doomed["name"],))
    auth.login()
    worker_factory()
    assert post(client, auth, action="start", subscription=doomed["name"]).status_code == 202
    wait_until(lambda: status(client, doomed["name"])["status"] == "polling", 60, message="polling")
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.delete_subscription(subscription=doomed["path"])
    subscriber.close()
    failed = wait_until(lambda: (answer := status(client, doomed["name"]))["status"] == "failed" and answer, 60,
                        message="failed")
    assert failed["state"] == "failed" and doomed["path"] in failed["reason"]
    assert "not found" in failed["reason"]

    # Nothing fades: the failure is reported all through the next two worker maintenance passes
    # (MAINTENANCE_SECONDS apart) and the page polls between them, and after them.
    failure_kept_window_seconds = 2 * MAINTENANCE_SECONDS + 2
    holds_for(lambda: (status(client, doomed["name"])["status"], status(client, doomed["name"])["reason"])
              == ("failed", failed["reason"]), failure_kept_window_seconds, interval=2,
              message="the failure on GET /polling_pubsub")
    row = panel_row(client, doomed["path"])
    assert 'data-status="failed"' in row and f"Failed: {failed['reason']}" in row and "dismiss-button" in row

    assert post(client, auth, action="dismiss", subscription=doomed["name"]).get_json()["status"] == "dismissed"
    assert status(client, doomed["name"])["status"] == "idle"
    assert "dismiss-button" not in panel_row(client, doomed["path"])


def test_a_failure_clears_when_the_user_starts_the_subscription_again(app, client, auth):
    from app import polling

    create_user(app, "alice")
    auth.login()
    started = post(client, auth, action="start")
    assert started.status_code == 202
    with app.app_context():
        polling.end(started.get_json()["task_id"], polling.TaskState.FAILED, "permission denied")
    assert status(client, "")["status"] == "failed"
    again = post(client, auth, action="start")
    assert again.status_code == 202
    answer = status(client, "")
    assert (answer["status"], answer["state"], answer["task_id"]) == ("queued", "queued", again.get_json()["task_id"])


def test_non_admins_are_refused_what_is_not_theirs_and_a_sixth_task(app, client, auth):
    listed = [f"listed-{index}" for index in range(6)]
    create_user(app, "alice", subscriptions=tuple(listed))
    auth.login()
    foreign = post(client, auth, action="start", subscription="projects/other-project/subscriptions/their-sub")
    assert foreign.status_code == 403 and "not in your subscriptions" in foreign.get_json()["error"]
    assert post(client, auth, action="start", subscription="not-listed").status_code == 403
    for bad in ("bad name; DROP TABLE user", "x" * 300, "ab", "9starts-with-digit", "goog-reserved",
                "projects/p/topics/t", "a/b"):
        answer = post(client, auth, action="start", subscription=bad)
        assert answer.status_code == 400, bad
        assert "subscription" in answer.get_json()["error"].lower(), bad
    assert client.get("/polling_pubsub", query_string={"subscription": "x" * 300}).status_code == 400
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Task)) == 0

    for name in listed[:5]:
        assert post(client, auth, action="start", subscription=name).status_code == 202
    sixth = post(client, auth, action="start", subscription=listed[5])
    assert sixth.status_code == 429
    assert "5 subscriptions" in sixth.get_json()["error"] and "MAX_TASKS_PER_USER" in sixth.get_json()["error"]
    # The default subscription is in everyone's list, and is refused here only for the cap.
    assert post(client, auth, action="start").status_code == 429
    assert post(client, auth, action="stop", subscription=listed[0]).status_code == 202
    assert post(client, auth, action="start", subscription=listed[5]).status_code == 202


def test_an_admin_may_poll_any_subscription(app, client, auth):
    create_user(app, "alice", is_admin=True)
    auth.login()
    answer = post(client, auth, action="start", subscription="projects/other-project/subscriptions/their-sub")
    assert answer.status_code == 202
    with app.app_context():
        assert db.session.get(Task, answer.get_json()["task_id"]).subscription == \
            "projects/other-project/subscriptions/their-sub"


def test_status_without_a_subscription_answers_for_the_default_one(app, client, auth):
    create_user(app, "alice")
    auth.login()
    assert status(client, "")["status"] == "idle"
    task_id = post(client, auth, action="start").get_json()["task_id"]
    default_path = f"projects/{TEST_PROJECT}/subscriptions/{app.config['SUBSCRIPTION_NAME']}"
    for asked in ({}, {"subscription": app.config["SUBSCRIPTION_NAME"]}, {"subscription": default_path}):
        answer = client.get("/polling_pubsub", query_string=asked).get_json()
        assert (answer["task_id"], answer["subscription"], answer["state"]) == (task_id, default_path, "queued")
        assert answer["started_at"].endswith("Z")
    assert status(client, "some-other-sub")["status"] == "idle"


def test_no_script_reads_the_state_from_words():
    scripts = "\n".join(path.read_text() for path in (ROOT / "app" / "static").glob("*.js"))
    for words in ("Failed", "Finished", "Polling\"", "Reconnecting", "Waiting for"):
        assert words not in scripts, f"a script looks for the words {words!r}"
    assert ".progress" not in scripts and "indexOf(" not in scripts


def blueprint_packages() -> set[str]:
    return {path.parent.name for path in (ROOT / "app").glob("*/__init__.py")
            if "Blueprint(" in path.read_text()}


def test_no_routes_module_imports_another_blueprints_routes():
    blueprints = blueprint_packages()
    assert {"main", "explore", "subscriptions"} <= blueprints
    offences = []
    for routes in (ROOT / "app").glob("*/routes.py"):
        own = routes.parent.name
        for node in ast.walk(ast.parse(routes.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if len(parts) >= 3 and parts[0] == "app" and parts[1] in blueprints and parts[1] != own \
                        and parts[2] == "routes":
                    offences.append(f"{routes.relative_to(ROOT)} imports {name}")
    assert offences == []


def test_migration_stores_subscriptions_by_their_full_path(app, tmp_path):
    """Rows written before the canonical form, by short name, move to the full path; states are derived."""
    from flask_migrate import upgrade

    from tests.conftest import drop_schema

    drop_schema(app)
    migrations = str(Path(ROOT) / "migrations")
    with app.app_context():
        upgrade(directory=migrations, revision="90ab819f910d")
        with db.engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO \"user\" (id, username, email, is_admin) VALUES (1, 'alice', 'a@example.com', false)"))
            connection.execute(sa.text(
                "INSERT INTO task (id, name, user_id, subscription, complete, started_at, stored_count, streams, "
                "last_error) VALUES ('t1', 'polling_subscription', 1, 'old-sub', true, CURRENT_TIMESTAMP, 0, 1, "
                "'subscription not found'), ('t2', 'polling_subscription', 1, 'old-sub', false, CURRENT_TIMESTAMP, "
                "0, 1, NULL)"))
            connection.execute(sa.text(
                "INSERT INTO subscription (user_id, name, created_at) VALUES (1, 'old-sub', CURRENT_TIMESTAMP), "
                "(1, 'projects/test-project/subscriptions/old-sub', CURRENT_TIMESTAMP)"))
            for subscription in ("old-sub", "projects/test-project/subscriptions/old-sub"):
                connection.execute(sa.text(
                    "INSERT INTO user_item (user_id, subscription, message_id, publish_time, received_at, is_json, "
                    "attributes_json, size) VALUES (1, :subscription, '7', '2026-12-01 10:00:00', "
                    "'2026-12-01 10:00:01', false, '{}', 0)"), {"subscription": subscription})
            connection.execute(sa.text(
                "INSERT INTO user_item (user_id, subscription, message_id, publish_time, received_at, is_json, "
                "attributes_json, size) VALUES (1, 'old-sub', '8', '2026-12-01 10:00:00', '2026-12-01 10:00:01', "
                "false, '{}', 0)"))
        upgrade(directory=migrations)
        full = "projects/test-project/subscriptions/old-sub"
        with db.engine.connect() as connection:
            tasks = connection.execute(sa.text(
                "SELECT id, subscription, state, state_reason FROM task ORDER BY id")).all()
            assert [tuple(row) for row in tasks] == [("t1", full, "failed", "subscription not found"),
                                                     ("t2", full, "polling", None)]
            assert connection.execute(sa.text("SELECT name FROM subscription")).scalars().all() == [full]
            items = connection.execute(sa.text("SELECT subscription, message_id FROM user_item "
                                               "ORDER BY message_id")).all()
            assert [tuple(row) for row in items] == [(full, "7"), (full, "8")]
