"""Faults with real processes: worker deaths and restarts, database and Redis outages, races, stale state.

Each test uses a fresh topic and subscription, publishes messages that carry a unique `seq`
attribute, and checks at the end that every sequence number is stored exactly once. The
slow ones run once, in the PostgreSQL pass. They run in the emulator's default pull mode
(batch): the emulator leaks the stream of a killed StreamingPull client, so a crash test in
streaming mode would measure that leak rather than this app.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1
from rq.worker import HerokuWorker

from app import create_app, polling
from app.extensions import db
from app.models import Task, User, UserItem, utcnow
from app.polling import RESUMED_STAGE
from app.worker import PollingWorker
from config import normalise_database_url
from helpers.services import RedisServer, free_port, wait_for_port
from tests.conftest import (
    LATE_WRITE_WINDOW_SECONDS,
    WorkerProcess,
    create_user,
    holds_for,
    make_config,
    wait_until,
)

POLLING = "polling_subscription"


# --- helpers ------------------------------------------------------------------------------------


class SequencePublisher(threading.Thread):
    """Publishes `count` messages with seq=0..count-1 at about `rate` per second, in the background."""

    def __init__(self, topic_path: str, count: int, rate: float, first: int = 0):
        super().__init__(daemon=True)
        self.topic_path, self.count, self.rate, self.first = topic_path, count, rate, first
        self.published = 0
        self.error: BaseException | None = None

    def run(self):
        try:
            publisher = pubsub_v1.PublisherClient()
            started = time.monotonic()
            futures = []
            for number in range(self.count):
                seq = self.first + number
                data = json.dumps({"status": "WORKING", "seq": seq, "pad": "x" * 200}).encode()
                futures.append(publisher.publish(self.topic_path, data, seq=str(seq)))
                delay = started + (number + 1) / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            for future in futures:
                future.result(timeout=60)
                self.published += 1
        except BaseException as error:  # reported by finish()
            self.error = error

    def finish(self) -> int:
        self.join(120)
        assert self.error is None, self.error
        assert self.published == self.count
        return self.published


def sequence_counts(app) -> Counter:
    with app.app_context():
        rows = db.session.scalars(sa.select(UserItem.attributes_json)).all()
        db.session.rollback()
    return Counter(json.loads(attributes)["seq"] for attributes in rows)


def stored_count(app) -> int:
    with app.app_context():
        count = db.session.scalar(sa.select(sa.func.count()).select_from(UserItem))
        db.session.rollback()
        return count


def assert_exactly_once(app, count: int) -> None:
    seen = sequence_counts(app)
    duplicates = {seq: n for seq, n in seen.items() if n > 1}
    missing = [seq for seq in range(count) if str(seq) not in seen]
    assert not duplicates, f"duplicates: {list(duplicates.items())[:10]}"
    assert not missing, f"{len(missing)} missing, e.g. {missing[:10]}"
    assert stored_count(app) == count


def start_polling(app, user_id: int, subscription: str) -> str:
    with app.app_context():
        user = db.session.get(User, user_id)
        return polling.launch(user, polling.canonical(subscription)).id


def active_tasks(app) -> list[Task]:
    with app.app_context():
        tasks = list(db.session.scalars(sa.select(Task).where(Task.complete.is_(False))))
        db.session.expunge_all()
        return tasks


def progress_stages(app, user_id: int) -> list[str]:
    with app.app_context():
        user = db.session.get(User, user_id)
        notes = db.session.scalars(user.notifications.select().order_by(sa.text("timestamp"))).all()
        stages = [n.get_data().get("progress") for n in notes if n.name == "task_progress"]
        db.session.rollback()
        return stages


def children_of(pid: int) -> list[int]:
    found = []
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(path).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(path.split("/")[2]))
    return found


def wait_for_exit(process: subprocess.Popen, timeout: float) -> float:
    started = time.monotonic()
    process.wait(timeout)
    return time.monotonic() - started


def wait_until_stored(app, at_least: int, timeout: float) -> None:
    wait_until(lambda: stored_count(app) >= at_least, timeout, interval=0.1, message=f"{at_least} stored")


def stays_at(app, count: int) -> None:
    """Nothing more is written once `count` are stored: a duplicate would be written in the next cycle."""
    holds_for(lambda: stored_count(app) == count, LATE_WRITE_WINDOW_SECONDS, message=f"{count} stored")


MAINTENANCE_LINE = "cleaning registries for queue"  # rq logs it at the start of each maintenance pass


def wait_for_full_maintenance_pass(worker: WorkerProcess, timeout: float = 60) -> None:
    """Wait until the worker has run a whole maintenance pass (and so a reconcile pass) from now on.

    A pass begins with rq's line; once the next one begins, the pass after now has ended.
    """
    seen = worker.log().count(MAINTENANCE_LINE)
    wait_until(lambda: worker.log().count(MAINTENANCE_LINE) >= seen + 2, timeout,
               message=f"two maintenance passes; worker log:\n{worker.log()[-3000:]}")


# --- worker deaths ------------------------------------------------------------------------------


def _kill_mid_stream(app, pubsub_names, worker_factory, kill) -> dict:
    """Kill the worker half way through 4,500 messages, start another, then publish the last 500.

    The last 500 are published only once the old worker is gone, so storing them proves that polling
    resumed; the first 4,500 check that what the old worker held is stored once, not lost or doubled.
    """
    user_id = create_user(app, "alice")
    total, tail = 5000, 500
    first = worker_factory()
    start_polling(app, user_id, pubsub_names["subscription"])
    publisher = SequencePublisher(pubsub_names["topic_path"], total - tail, rate=400)
    publisher.start()
    wait_until_stored(app, (total - tail) // 2, 90)
    at_kill = stored_count(app)
    kill(first)
    killed_at = time.monotonic()
    before = stored_count(app)  # the old worker is gone: whatever is stored from now on, the new one stored
    publisher.finish()
    second = worker_factory()
    second_started = time.monotonic()
    wait_until(lambda: RESUMED_STAGE in progress_stages(app, user_id), 90, message="polling to resume")
    resumed_after = time.monotonic() - second_started
    SequencePublisher(pubsub_names["topic_path"], tail, rate=1000, first=total - tail).run()
    wait_until_stored(app, total, 120)
    stays_at(app, total)
    assert_exactly_once(app, total)
    assert len(active_tasks(app)) == 1
    second.stop()
    return {"published": total, "stored": stored_count(app), "stored_at_kill": at_kill,
            "stored_when_old_worker_gone": before, "seconds_to_resume": round(resumed_after, 1),
            "seconds_since_kill": round(time.monotonic() - killed_at)}


def test_sigkill_of_worker_and_horse_resumes_by_itself_and_stores_each_once(
    app, require_postgres, emulator, pubsub_names, worker_factory, record_property
):
    def sigkill(worker: WorkerProcess):
        horses = children_of(worker.process.pid)
        os.kill(worker.process.pid, signal.SIGKILL)
        for pid in horses:
            os.kill(pid, signal.SIGKILL)
        worker.process.wait(10)

    outcome = _kill_mid_stream(app, pubsub_names, worker_factory, sigkill)
    record_property("sigkill", outcome)
    print("SIGKILL outcome:", outcome)


def test_sigterm_to_worker_group_exits_within_25s_and_the_next_worker_resumes(
    app, require_postgres, emulator, pubsub_names, worker_factory, record_property
):
    exit_seconds = {}

    def sigterm(worker: WorkerProcess):
        # Heroku signals every process of the dyno; the horse has a process group of its own.
        horses = children_of(worker.process.pid)
        os.killpg(worker.process.pid, signal.SIGTERM)
        for pid in horses:
            os.kill(pid, signal.SIGTERM)
        exit_seconds["worker"] = wait_for_exit(worker.process, 25)
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in horses), 25, message="horse exit")

    outcome = _kill_mid_stream(app, pubsub_names, worker_factory, sigterm)
    outcome["seconds_to_exit"] = round(exit_seconds["worker"], 1)
    record_property("sigterm", outcome)
    print("SIGTERM outcome:", outcome)
    assert exit_seconds["worker"] < 25


def pull_now(subscription_path: str, timeout: float = 2.0) -> list:
    """What a pull from the subscription gets right now; it takes the messages for the ack deadline."""
    subscriber = pubsub_v1.SubscriberClient()
    try:
        return list(subscriber.pull(subscription=subscription_path, max_messages=1000, timeout=timeout,
                                    retry=None).received_messages)
    except api_exceptions.DeadlineExceeded:
        return []
    finally:
        subscriber.close()


def worker_holds_everything(subscription_path: str) -> bool:
    """True when nothing is left to pull: the worker holds every message. Gives back what it finds."""
    found = pull_now(subscription_path)
    if found:
        subscriber = pubsub_v1.SubscriberClient()
        subscriber.modify_ack_deadline(subscription=subscription_path, ack_ids=[m.ack_id for m in found],
                                       ack_deadline_seconds=0)
        subscriber.close()
    return not found


def backends_waiting_on_a_lock(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ))


# A nacked message is handed out again at once; no pull for this long means none was nacked.
NACK_REDELIVERY_WINDOW_SECONDS = 5


def test_sigterm_drain_stores_and_acks_the_messages_the_job_holds(
    app, require_postgres, emulator, pubsub_names, worker_factory
):
    """On SIGTERM, rq raises ShutDownImminentException in the job at once (PollingWorker's
    imminent_shutdown_delay is 0). Whatever the job has pulled by then is written and acked on the
    way out, not nacked.

    To hold messages at that moment, the test locks the task table first: the job's next stop check
    waits on the lock while its puller keeps pulling. The signal's handler runs, and raises, when
    the job's query returns, the moment the lock is released.
    """
    assert PollingWorker.imminent_shutdown_delay == 0 < HerokuWorker.imminent_shutdown_delay
    user_id = create_user(app, "alice")
    worker = worker_factory()
    start_polling(app, user_id, pubsub_names["subscription"])
    wait_until(lambda: "Polling" in progress_stages(app, user_id), 60, message="Polling")
    locker = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    lock = locker.connect()
    try:
        transaction = lock.begin()
        lock.execute(sa.text("LOCK TABLE task IN ACCESS EXCLUSIVE MODE"))
        wait_until(lambda: backends_waiting_on_a_lock(locker), 30, interval=0.05,
                   message="the job to wait on the task table")
        total = 100
        SequencePublisher(pubsub_names["topic_path"], total, rate=1000).run()
        wait_until(lambda: worker_holds_everything(pubsub_names["subscription_path"]), 30,
                   message="the job to pull every message")
        assert stored_count(app) == 0
        os.kill(worker.process.pid, signal.SIGTERM)
        wait_until(lambda: "warm shut down requested, sending horse SIGRTMIN" in worker.log(), 10, interval=0.05,
                   message="the worker to signal its work horse")
        transaction.commit()
    finally:
        lock.close()
        locker.dispose()
    wait_for_exit(worker.process, 30)
    log = worker.log()
    assert "raising ShutDownImminentException to cancel job" in log, log
    assert "the worker is shutting down" in log, log
    assert_exactly_once(app, total)
    assert pull_now(pubsub_names["subscription_path"], timeout=NACK_REDELIVERY_WINDOW_SECONDS) == []
    assert "could not store" not in log


# --- stale state, races, deleted subscription ---------------------------------------------------


def test_task_left_in_progress_without_a_job_is_resumed_within_60s(
    app, client, auth, emulator, pubsub_names, worker_factory
):
    user_id = create_user(app, "alice")
    with app.app_context():
        # What a Redis flush leaves behind: the row says polling, no job exists anywhere.
        stale = Task(id="stale-task-0001", name=POLLING, description="Polling", user_id=user_id,
                     subscription=pubsub_names["subscription"], started_at=utcnow() - timedelta(minutes=5))
        db.session.add(stale)
        db.session.commit()
    auth.login()
    started = time.monotonic()
    worker_factory()

    def replaced():
        tasks = active_tasks(app)
        return tasks and tasks[0].id != "stale-task-0001"

    wait_until(replaced, 60, message="the stale task to be reconciled")
    assert time.monotonic() - started < 60
    # The replacement is queued, then polling once the worker takes it.
    status = wait_until(lambda: (answer := client.get("/polling_pubsub", query_string={
        "subscription": pubsub_names["subscription"]}).get_json())["status"] == "polling" and answer, 30,
        message="the replacement polling")
    assert status["task_id"] != "stale-task-0001"
    with app.app_context():
        old = db.session.get(Task, "stale-task-0001")
        assert old.complete and "stopped" in old.last_error
    wait_until(lambda: RESUMED_STAGE in [n["data"]["progress"] for n in client.get("/notifications").get_json()],
               10, message="the resumption to be announced")
    # and the resumed task really polls
    SequencePublisher(pubsub_names["topic_path"], 20, rate=1000).run()
    wait_until_stored(app, 20, 30)
    assert_exactly_once(app, 20)


def test_status_endpoint_reports_a_task_without_a_job_as_stalled(app, client, auth):
    user_id = create_user(app, "alice")
    with app.app_context():
        db.session.add(Task(id="stale-task-0002", name=POLLING, description="Polling", user_id=user_id,
                            subscription="sub-x", started_at=utcnow() - timedelta(minutes=5), state="polling"))
        db.session.commit()
    auth.login()
    assert client.get("/polling_pubsub?subscription=sub-x").get_json()["status"] == "stalled"
    with app.app_context():
        db.session.execute(sa.update(Task).values(heartbeat_at=utcnow()))
        db.session.commit()
    # a fresh heartbeat means a job is running, even if Redis knows nothing of it
    assert client.get("/polling_pubsub?subscription=sub-x").get_json()["status"] == "polling"


def test_ten_concurrent_starts_leave_exactly_one_polling_job(app, auth, client):
    user_id = create_user(app, "alice")
    clients = []
    for _ in range(10):
        each = app.test_client()
        token = _login(each)
        clients.append((each, token))
    barrier = threading.Barrier(10)
    answers = []

    def start(each, token):
        barrier.wait()
        answers.append(each.post("/polling_pubsub", data={"action": "start"}, headers={"X-CSRFToken": token}))

    threads = [threading.Thread(target=start, args=pair) for pair in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    codes = Counter(answer.status_code for answer in answers)
    assert codes[202] == 1 and codes[200] == 9, codes
    task_ids = {answer.get_json()["task_id"] for answer in answers}
    assert len(task_ids) == 1
    with app.app_context():
        tasks = db.session.scalars(sa.select(Task).where(Task.user_id == user_id)).all()
        assert len(tasks) == 1 and not tasks[0].complete
    assert app.task_queue.count == 1
    assert app.task_queue.job_ids == [tasks[0].id]


def _login(each) -> str:
    from tests.conftest import TEST_PASSWORD, csrf_token_from

    token = csrf_token_from(each)
    response = each.post("/index", data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    return csrf_token_from(each, "/user/alice")


def test_deleted_subscription_fails_with_reason_and_is_not_retried(
    app, emulator, pubsub_names, worker_factory, require_postgres
):
    user_id = create_user(app, "alice")
    worker = worker_factory()
    start_polling(app, user_id, pubsub_names["subscription"])
    wait_until(lambda: "Polling" in progress_stages(app, user_id), 60, message="Polling")
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.delete_subscription(subscription=pubsub_names["subscription_path"])
    wait_until(lambda: any(s and s.startswith("Failed") for s in progress_stages(app, user_id)), 60,
               message="a Failed notification")
    failed = [stage for stage in progress_stages(app, user_id) if stage and stage.startswith("Failed")]
    assert failed[0].startswith("Failed: subscription not found"), failed
    wait_for_full_maintenance_pass(worker)  # the reconcile pass runs in it: nothing restarts the task
    assert active_tasks(app) == []
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Task)) == 1


# --- outages ------------------------------------------------------------------------------------


class PostgresCluster:
    """A PostgreSQL server of this test's own, so that stopping it disturbs nothing else."""

    def __init__(self, root: Path):
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        self.bin = Path(binaries[-1]) if binaries else Path(shutil.which("pg_ctl")).parent
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "postgres.log"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["su", "postgres", "-c", " ".join(f"'{part}'" for part in command)]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> PostgresCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "pubsub", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        wait_for_port(self.port, 30)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://pubsub@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def own_postgres(require_postgres):
    root = Path(tempfile.mkdtemp(prefix="pubsub-monitor-pg-"))
    os.chmod(root, 0o755)
    cluster = PostgresCluster(root / "cluster").init()
    cluster.start()
    yield cluster
    try:
        cluster.stop()
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(root, ignore_errors=True)


OUTAGE_SECONDS = 20  # how long the database is down: several backoffs of the writer


def test_database_outage_loses_nothing_and_backs_off(
    own_postgres, redis_server, emulator, pubsub_names, tmp_path
):
    app = create_app(make_config(normalise_database_url(own_postgres.url), redis_server.url))
    with app.app_context():
        db.create_all()
    user_id = create_user(app, "alice")
    worker = WorkerProcess(app, tmp_path / "worker.log").start()
    try:
        total = 2000
        start_polling(app, user_id, pubsub_names["subscription"])
        publisher = SequencePublisher(pubsub_names["topic_path"], total, rate=100)
        publisher.start()
        wait_until_stored(app, 300, 90)
        with app.app_context():
            db.engine.dispose()
        own_postgres.stop()
        outage_started = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        own_postgres.start()
        outage_seconds = time.monotonic() - outage_started
        publisher.finish()
        wait_until_stored(app, total, 120)
        stays_at(app, total)
        assert_exactly_once(app, total)
        failed_writes = worker.log().count("could not store")
        print(f"database outage of {outage_seconds:.0f}s: {failed_writes} failed writes logged")
        assert 1 <= failed_writes <= 40, failed_writes  # backoff, not thousands of retries
    finally:
        worker.stop()
        with app.app_context():
            db.engine.dispose()


def test_redis_restart_loses_nothing_and_status_endpoints_never_500(
    require_postgres, database_url, emulator, pubsub_names, tmp_path
):
    redis = RedisServer().start()
    app = create_app(make_config(database_url, redis.url))
    with app.app_context():
        db.drop_all()
        db.create_all()
    create_user(app, "alice", subscriptions=(pubsub_names["subscription"],))
    client = app.test_client()
    token = _login(client)
    worker = WorkerProcess(app, tmp_path / "worker.log").start()
    try:
        total = 2000
        assert client.post("/polling_pubsub", data={"action": "start", "subscription": pubsub_names["subscription"]},
                           headers={"X-CSRFToken": token}).status_code == 202
        publisher = SequencePublisher(pubsub_names["topic_path"], total, rate=100)
        publisher.start()
        wait_until_stored(app, 300, 90)
        redis.stop()
        codes = Counter()
        down_until = time.monotonic() + 8
        while time.monotonic() < down_until:
            for path in ("/polling_pubsub", "/notifications", "/useritems", "/user/alice"):
                codes[client.get(path).status_code] += 1
            time.sleep(0.5)
        redis.start()  # the same port, and empty: a restart without persistence
        publisher.finish()
        wait_until_stored(app, total, 120)
        stays_at(app, total)
        assert_exactly_once(app, total)
        assert 500 not in codes, codes
        for _ in range(10):
            for path in ("/polling_pubsub", "/notifications", "/useritems"):
                assert client.get(path).status_code == 200
    finally:
        worker.stop()
        redis.stop()
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()
