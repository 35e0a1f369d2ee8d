"""Security against the real web server: gunicorn with two workers, as on Heroku."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from app.extensions import db
from app.models import Notification, Task
from helpers.services import free_port, stop_process, wait_for_port
from tests.conftest import ROOT, create_user, service_env, wait_until
from tests.test_security_secrets import FAKE_PRIVATE_KEY, fake_service_account

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
# Generous: other suites may be loading the machine.
REQUEST_TIMEOUT = 30
ACCESS_LINE = re.compile(r'^pid=<?(\d+)>? status=(\d+) "(\w+) (\S+)')


class Gunicorn:
    """`gunicorn gcpubsub:app` on a free port, logging to a file; access lines carry the worker's pid."""

    def __init__(self, app, log_path: Path, workers: int = 2, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.workers = workers
        self.env = service_env(app, PORT=self.port, **env)
        self.process: subprocess.Popen | None = None

    def start(self) -> Gunicorn:
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [gunicorn, "-w", str(self.workers), "-b", f"127.0.0.1:{self.port}",
                 "--access-logformat", 'pid=%(p)s status=%(s)s "%(r)s"', "gcpubsub:app"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for_port(self.port, 30, self.process)
        wait_until(lambda: len(self.worker_pids()) == self.workers, 60, message="gunicorn workers to boot")
        # Workers import the app after booting, which takes seconds on a busy machine.
        wait_until(lambda: self.get_status("/index") == 200, 90, message="the app to answer")
        return self

    def get_status(self, path: str) -> int | None:
        try:
            return requests.get(self.url + path, timeout=REQUEST_TIMEOUT).status_code
        except requests.RequestException:
            return None

    def worker_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", self.log())]

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def access_lines(self) -> list[tuple[int, int, str, str]]:
        lines = []
        for line in self.log().splitlines():
            match = ACCESS_LINE.match(line)
            if match:
                lines.append((int(match[1]), int(match[2]), match[3], match[4]))
        return lines


@pytest.fixture
def gunicorn_factory(app, tmp_path):
    servers: list[Gunicorn] = []

    def start(workers: int = 2, **env) -> Gunicorn:
        server = Gunicorn(app, tmp_path / f"gunicorn-{len(servers)}.log", workers=workers, **env)
        servers.append(server)  # before start(), so a server that never answers is stopped too
        return server.start()

    yield start
    for server in servers:
        server.stop()


def browser_session() -> requests.Session:
    session = requests.Session()
    # A new connection per request, so that any worker may take it.
    session.headers["Connection"] = "close"
    return session


def csrf_token(session: requests.Session, url: str) -> str:
    match = CSRF_META.search(session.get(url, timeout=REQUEST_TIMEOUT).text)
    assert match, f"no csrf-token on {url}"
    return match.group(1)


def sign_in(session, server, username, password) -> requests.Response:
    token = csrf_token(session, server.url + "/index")
    return session.post(server.url + "/index", allow_redirects=False, timeout=REQUEST_TIMEOUT,
                        data={"username": username, "password": password, "csrf_token": token})


# --- the rate limit holds across workers ---------------------------------------------------------


def test_eleventh_failed_sign_in_gets_429_across_two_gunicorn_workers(app, gunicorn_factory):
    server = gunicorn_factory(workers=2)
    first_worker, second_worker = server.worker_pids()
    session = browser_session()
    statuses = []
    try:
        # Pause one worker at a time, so that each serves exactly half of the attempts.
        for paused, attempts in [(second_worker, range(0, 5)), (first_worker, range(5, 10))]:
            os.kill(paused, signal.SIGSTOP)
            try:
                for attempt in attempts:
                    statuses.append(sign_in(session, server, f"nobody-{attempt}", "wrong-password").status_code)
            finally:
                os.kill(paused, signal.SIGCONT)
        eleventh = sign_in(session, server, "nobody-10", "wrong-password")
    finally:
        for pid in (first_worker, second_worker):
            os.kill(pid, signal.SIGCONT)
    assert statuses == [401] * 10
    assert eleventh.status_code == 429
    assert "Too many attempts; try again in" in eleventh.text  # the sign-in form, with the wait (issue 16)
    # Each worker writes its own access lines, so their order in the shared log is not exact.
    failed_by = Counter(pid for pid, status, method, _ in server.access_lines() if (method, status) == ("POST", 401))
    assert failed_by == {first_worker: 5, second_worker: 5}


def test_sign_in_keeps_working_and_limiting_when_redis_is_down(app, gunicorn_factory):
    """Fail soft: with Redis unreachable, each worker counts in memory and says so in the log."""
    create_user(app, "alice")
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    # As behind Heroku's router, whose X-Forwarded-For gives each client its own address.
    server = gunicorn_factory(workers=1, REDIS_URL=dead_redis, TRUSTED_PROXIES=1)
    session = browser_session()
    statuses = [sign_in(session, server, f"nobody-{attempt}", "wrong-password").status_code for attempt in range(11)]
    assert statuses == [401] * 10 + [429]
    other_client = browser_session()
    other_client.headers["X-Forwarded-For"] = "10.9.8.7"
    assert sign_in(other_client, server, "alice", "correct-horse-battery").status_code == 302
    assert "Rate limit storage unreachable" in server.log()
    assert "Traceback" not in server.log()


# --- no secrets in the logs after a full journey -------------------------------------------------


def test_full_journey_leaves_no_password_or_private_key_in_the_logs(app, gunicorn_factory, worker_factory, tmp_path):
    password = f"first-password-{uuid.uuid4().hex[:12]}"
    new_password = f"second-password-{uuid.uuid4().hex[:12]}"
    typed_in_username_box = f"{password}-oops"
    create_user(app, "alice", password=password)
    credentials = json.dumps(fake_service_account())
    # No emulator: the worker must read the (unusable) service-account key and fail on it.
    env = {"GOOGLE_APPLICATION_CREDENTIALS": credentials, "PUBSUB_EMULATOR_HOST": "", "LOG_TO_STDOUT": "1"}
    server = gunicorn_factory(workers=2, **env)
    worker = worker_factory(**env)
    session = browser_session()

    assert sign_in(session, server, typed_in_username_box, password).status_code == 401
    assert sign_in(session, server, "alice", new_password).status_code == 401
    assert sign_in(session, server, "alice", password).status_code == 302
    token = csrf_token(session, server.url + "/user/alice")
    change = server.url + "/change_password"
    headers = {"X-CSRFToken": token}
    assert session.post(change, headers=headers, data={"current_password": new_password, "new_password": password,
                                                       "confirm_password": password}).status_code == 400
    assert session.post(change, headers=headers, data={"current_password": password, "new_password": new_password,
                                                       "confirm_password": f"{new_password}x"}).status_code == 400
    assert session.post(change, headers=headers, data={"current_password": password, "new_password": new_password,
                                                       "confirm_password": new_password}).status_code == 200
    started = session.post(server.url + "/polling_pubsub", headers=headers, json={"action": "start"})
    assert started.status_code == 202, f"{started.text}\n{server.log()[-4000:]}"

    def failure_notification():
        notes = session.get(server.url + "/notifications?since=0", timeout=REQUEST_TIMEOUT).json()
        return [note for note in notes if "Failed" in json.dumps(note)]

    failures = wait_until(failure_notification, 60, message="the task to fail on the unusable key")
    session.post(server.url + "/polling_pubsub", headers=headers, json={"action": "stop"})
    session.post(server.url + "/logout", data={"csrf_token": csrf_token(session, server.url + "/user/alice")},
                 timeout=REQUEST_TIMEOUT)
    assert sign_in(session, server, "alice", new_password).status_code == 302
    server.stop()
    worker.stop()

    logs = {"gunicorn": server.log(), "worker": worker.log()}
    assert "Failed sign-in for user alice" in logs["gunicorn"]
    assert "POST /change_password" in logs["gunicorn"]
    assert "failed" in logs["worker"].lower()
    key_lines = [line for line in FAKE_PRIVATE_KEY.splitlines() if "-----" not in line]
    for name, text in logs.items():
        for secret in [password, new_password, typed_in_username_box, *key_lines]:
            assert secret not in text, f"{name} log contains a secret: {secret[:12]}..."
    shown_to_user = json.dumps(failures)
    assert not any(line in shown_to_user for line in key_lines)
    with app.app_context():
        stored = [note.payload_json for note in db.session.scalars(sa.select(Notification))]
        stored += [task.last_error or "" for task in db.session.scalars(sa.select(Task))]
    assert stored
    for text in stored:
        for secret in [password, new_password, *key_lines]:
            assert secret not in text, f"a notification or task error holds a secret: {secret[:12]}..."
