"""The whole journey through HTTP, a real `rq worker`, the emulator and the publish helper, in each mode."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from rq.job import Job

from app.extensions import db
from app.models import Notification, Task, UserItem
from app.polling import RESUMED_STAGE
from tests.conftest import (
    LATE_WRITE_WINDOW_SECONDS,
    ROOT,
    TEST_PROJECT,
    WorkerProcess,
    create_user,
    holds_for,
    service_env,
    wait_until,
)

MODES = ["batch", "streaming"]
STOP_PROMISE_SECONDS = 2.0  # README: a stop takes effect within two seconds


def post_polling(client, auth, action: str, subscription: str):
    token = auth.csrf_token("/user/alice")
    return client.post("/polling_pubsub", data={"action": action, "subscription": subscription},
                       headers={"X-CSRFToken": token})


def progress_notifications(client) -> list[dict]:
    response = client.get("/notifications?since=0")
    assert response.status_code == 200
    return [entry["data"] for entry in response.get_json() if entry["name"] == "task_progress"]


def job_status(app, task_id: str) -> str | None:
    job = Job.fetch(task_id, connection=app.redis)
    return job.get_status(refresh=True)


def seconds_from_stop_to_finished(app, task_id: str) -> float:
    """From the stop request to the job's end, on the app's own records rather than the test's clock.

    The stop request marks the Task complete and sets its finished_at; the job posts its
    "Finished" notification once it has written what it held and closed the subscriber.
    """
    with app.app_context():
        stop_requested_at = db.session.get(Task, task_id).finished_at
        notifications = db.session.scalars(
            sa.select(Notification).where(Notification.name == "task_progress").order_by(Notification.timestamp)
        ).all()
        finished = [note.timestamp for note in notifications
                    if note.get_data().get("task_id") == task_id and note.get_data().get("progress") == "Finished"]
    assert stop_requested_at is not None and len(finished) == 1, finished
    return finished[0] - stop_requested_at.timestamp()


def stored_items(app) -> list[UserItem]:
    with app.app_context():
        items = db.session.scalars(sa.select(UserItem).order_by(UserItem.id)).all()
        db.session.expunge_all()
        return items


def item_count(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(UserItem))


def publish_with_helper(app, topic: str, count: int) -> dict[str, bytes]:
    """Run helpers/publish.py as a user would; return the published data by message id."""
    result = subprocess.run(
        [sys.executable, "helpers/publish.py", "--project", TEST_PROJECT, "--topic", topic,
         "--count", str(count), "--size", "1000", "--json"],
        cwd=ROOT, env=service_env(app), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert f"Published {count} messages" in result.stderr
    return {record["message_id"]: base64.b64decode(record["data_base64"]) for record in records}


@pytest.mark.parametrize("mode", MODES)
def test_whole_journey_stores_every_published_message_once_and_stops(
    app, client, auth, emulator, pubsub_names, worker_factory, mode
):
    create_user(app, "alice", subscriptions=(pubsub_names["subscription"],))
    auth.login()
    worker = worker_factory(PUBSUB_PULL_MODE=mode)
    subscription = pubsub_names["subscription"]

    response = post_polling(client, auth, "start", subscription)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["status"] == "success"
    task_id = response.get_json()["task_id"]
    wait_until(lambda: any(n["progress"] == "Polling" for n in progress_notifications(client)), 60,
               message=f"the job to start polling; worker log:\n{worker.log()}")
    assert progress_notifications(client)[0]["mode"] == mode

    published = publish_with_helper(app, pubsub_names["topic"], 1000)
    assert len(published) == 1000
    wait_until(lambda: item_count(app) >= 1000, 30, interval=0.5, message="1,000 stored messages")
    holds_for(lambda: item_count(app) == 1000, LATE_WRITE_WINDOW_SECONDS, message="1,000 stored")
    items = stored_items(app)
    assert len(items) == 1000
    assert len({item.message_id for item in items}) == 1000
    assert {item.message_id: item.data for item in items} == published
    assert all(item.subscription == pubsub_names["subscription_path"] for item in items)

    response = post_polling(client, auth, "stop", subscription)
    assert response.status_code == 202 and response.get_json() == {"status": "terminated", "task_id": task_id}
    wait_until(lambda: job_status(app, task_id) == "finished", 30, interval=0.1,
               message=f"the job to finish; worker log:\n{worker.log()}")
    stop_seconds = seconds_from_stop_to_finished(app, task_id)
    print(f"{mode}: stopped {stop_seconds:.2f} s after the stop request")
    assert 0 < stop_seconds <= STOP_PROMISE_SECONDS
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task.complete and task.finished_at is not None and task.stored_count == 1000
        assert task.heartbeat_at is not None
    last = progress_notifications(client)[-1]
    assert last["progress"] == "Finished"
    assert last["stored_count"] == 1000 and last["task_id"] == task_id and last["mode"] == mode
    assert last["state"] == "finished"
    status = client.get("/polling_pubsub", query_string={"subscription": subscription}).get_json()
    assert (status["status"], status["state"]) == ("idle", "finished")


def assert_fails_once_without_a_crash_loop(app, client, auth, worker, subscription: str, cause: str) -> dict:
    response = post_polling(client, auth, "start", subscription)
    assert response.status_code == 202
    task_id = response.get_json()["task_id"]
    wait_until(lambda: job_status(app, task_id) in {"finished", "failed"}, 60,
               message=f"the job to end; worker log:\n{worker.log()}")
    # No crash loop, shown by state rather than by waiting: the job ended normally (it is not
    # scheduled for a retry), the queue is empty, and the Task is complete, so no reconcile
    # pass resumes it.
    notifications = progress_notifications(client)
    failed = [n for n in notifications if n["progress"].startswith("Failed: ")]
    assert len(failed) == 1, notifications
    assert cause in failed[0]["progress"]
    assert notifications[-1] == failed[0]
    assert job_status(app, task_id) == "finished"
    assert len(app.task_queue) == 0
    assert worker.process.poll() is None, "the worker died"
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task.complete and cause in task.last_error
    # The failure stays on the status until the user starts again or dismisses it.
    status = client.get("/polling_pubsub", query_string={"subscription": subscription}).get_json()
    assert (status["status"], status["state"], status["task_id"]) == ("failed", "failed", task_id)
    assert cause in status["reason"] and failed[0]["state"] == "failed"
    return failed[0]


def test_subscription_that_does_not_exist_ends_the_task_with_the_cause(
    app, client, auth, emulator, worker_factory
):
    create_user(app, "alice", subscriptions=("no-such-subscription",))
    auth.login()
    worker = worker_factory()
    assert_fails_once_without_a_crash_loop(
        app, client, auth, worker, "no-such-subscription", "no-such-subscription does not exist"
    )


def test_missing_credentials_end_the_task_with_the_cause(app, client, auth, worker_factory, tmp_path):
    create_user(app, "alice")
    auth.login()
    # Google Cloud instead of the emulator, with no key and no gcloud default credentials.
    worker = worker_factory(PUBSUB_EMULATOR_HOST="", GOOGLE_APPLICATION_CREDENTIALS="", HOME=str(tmp_path))
    failed = assert_fails_once_without_a_crash_loop(
        app, client, auth, worker, "monitor-sub", "no Google Cloud credentials"
    )
    assert failed["mode"] == "streaming"


class RestartableWorker(WorkerProcess):
    """An `rq worker` of a given class, which can be sent Heroku's restart signal (SIGTERM to every process)."""

    def __init__(self, app, log_path, worker_class: str, **env):
        super().__init__(app, log_path, **env)
        self.worker_class = worker_class

    def start(self) -> RestartableWorker:
        rq_command = str(Path(sys.executable).with_name("rq"))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [rq_command, "worker", "-u", self.env["REDIS_URL"], "-w", self.worker_class, "--with-scheduler",
                 self.queue],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def restart_signal(self) -> None:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        for pid in [self.process.pid, *map(int, children)]:
            os.kill(pid, signal.SIGTERM)


@pytest.mark.parametrize("worker_class", ["rq.worker.Worker", "rq.worker.HerokuWorker"])
def test_polling_resumes_by_itself_after_a_worker_restart(
    app, client, auth, emulator, pubsub_names, tmp_path, require_postgres, worker_class
):
    create_user(app, "alice", subscriptions=(pubsub_names["subscription"],))
    auth.login()
    workers = []

    def start_worker() -> RestartableWorker:
        worker = RestartableWorker(app, tmp_path / f"worker-{len(workers)}.log", worker_class,
                                   PUBSUB_PULL_MODE="batch").start()
        workers.append(worker)
        return worker

    try:
        first = start_worker()
        response = post_polling(client, auth, "start", pubsub_names["subscription"])
        task_id = response.get_json()["task_id"]
        published = publish_with_helper(app, pubsub_names["topic"], 200)
        wait_until(lambda: item_count(app) >= 200, 60, message=f"200 stored; worker log:\n{first.log()}")

        first.restart_signal()
        first.process.wait(60)
        with app.app_context():
            assert not db.session.get(Task, task_id).complete
        assert job_status(app, task_id) in {"scheduled", "queued"}, first.log()

        published |= publish_with_helper(app, pubsub_names["topic"], 200)
        second = start_worker()
        wait_until(lambda: item_count(app) >= 400, 90, message=f"400 stored; worker log:\n{second.log()}")
        response = post_polling(client, auth, "stop", pubsub_names["subscription"])
        assert response.get_json()["status"] == "terminated"
        wait_until(lambda: job_status(app, task_id) == "finished", 15, message="the resumed job to finish")
        items = stored_items(app)
        assert {item.message_id: item.data for item in items} == published
        assert len(items) == 400
        progress = [n["progress"] for n in progress_notifications(client)]
        # The first job polled, the second said it resumed (a "Polling" of its own would come only at
        # its first 5-second progress tick, which a quick drain and stop may not reach), and it finished.
        assert progress[0] == "Polling" and RESUMED_STAGE in progress[1:] and progress[-1] == "Finished"
        if worker_class.endswith("HerokuWorker"):
            # Heroku's worker gives the job notice, so it says goodbye before the restart.
            assert "Reconnecting" in progress
    finally:
        for worker in workers:
            worker.stop()
