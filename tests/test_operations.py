"""Operating commands and checks: flask users, flask purge, /healthz."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import User, UserItem
from tests.bulk import insert_rows, item_row
from tests.conftest import create_user, make_config
from tests.support import answer_within, silent_server


def item_count(app, user_id: int | None = None) -> int:
    with app.app_context():
        query = sa.select(sa.func.count()).select_from(UserItem)
        if user_id is not None:
            query = query.where(UserItem.user_id == user_id)
        return db.session.scalar(query)


def surviving_message_ids(app) -> set[str]:
    with app.app_context():
        return set(db.session.scalars(sa.select(UserItem.message_id)))


def test_purge_deletes_exactly_the_rows_older_than_the_cutoff_and_dry_run_none(app, runner):
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    now = datetime.now(UTC)
    ages = {"fresh": timedelta(hours=1), "just-inside": timedelta(days=29, hours=23),
            "just-outside": timedelta(days=30, minutes=5), "old": timedelta(days=90)}
    rows = [item_row(owner, "x", message_id=f"{owner}-{label}-{copy}", received_at=now - age)
            for owner in (alice, bob) for label, age in ages.items() for copy in range(1200)]
    insert_rows(app, rows)
    total = item_count(app)

    dry = runner.invoke(args=["purge", "--older-than", "30d", "--dry-run", "--user", "alice"])
    assert dry.exit_code == 0, dry.output
    assert "Dry run: 2400 messages" in dry.output
    assert item_count(app) == total

    only_alice = runner.invoke(args=["purge", "--older-than", "30d", "--user", "alice"])
    assert only_alice.exit_code == 0, only_alice.output
    assert "Deleted 2400 messages" in only_alice.output and "deleted 2400..." in only_alice.output
    left = surviving_message_ids(app)
    assert not any(mid.startswith(f"{alice}-just-outside") or mid.startswith(f"{alice}-old") for mid in left)
    assert item_count(app, alice) == 2400 and item_count(app, bob) == 4800

    everyone = runner.invoke(args=["purge", "--older-than", "720h"])
    assert "Deleted 2400 messages" in everyone.output
    assert {mid.split("-", 1)[1].rsplit("-", 1)[0] for mid in surviving_message_ids(app)} == {"fresh", "just-inside"}
    assert item_count(app) == 4800

    bad = runner.invoke(args=["purge", "--older-than", "thirty days"])
    assert bad.exit_code != 0 and "not a duration" in bad.output
    assert item_count(app) == 4800


def test_users_create_list_set_password_and_delete(app, runner):
    created = runner.invoke(args=["users", "create", "carol", "--password", "carol-password-1", "--admin"])
    assert created.exit_code == 0, created.output
    generated = runner.invoke(args=["users", "create", "dave"])
    assert "Password: " in generated.output
    assert runner.invoke(args=["users", "create", "dave"]).exit_code != 0
    listing = runner.invoke(args=["users", "list"]).output
    assert "carol\tcarol@localhost\tadmin" in listing and "dave\tdave@localhost\tuser" in listing
    assert runner.invoke(args=["users", "set-password", "dave", "--password", "short"]).exit_code != 0
    assert runner.invoke(args=["users", "set-password", "dave", "--password", "dave-password-2"]).exit_code == 0
    with app.app_context():
        dave = db.session.scalar(sa.select(User).where(User.username == "dave"))
        assert dave.check_password("dave-password-2")
        dave_id = dave.id
    insert_rows(app, [item_row(dave_id, "bye")])
    deleted = runner.invoke(args=["users", "delete", "dave", "--yes"])
    assert deleted.exit_code == 0, deleted.output
    with app.app_context():
        assert db.session.get(User, dave_id) is None
    assert item_count(app, dave_id) == 0
    assert runner.invoke(args=["users", "delete", "nobody", "--yes"]).exit_code != 0


def test_healthz_is_200_when_database_and_redis_answer(app, client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["redis"]["status"] == "ok"
    assert "workers" in body["checks"] and "polling" in body["checks"]
    assert "password" not in response.get_data(as_text=True).lower()
    assert app.config["REDIS_URL"] not in response.get_data(as_text=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz_is_503_when_redis_is_down(app, database_url):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    down = create_app(make_config(database_url, dead_redis))
    response = down.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error" and body["checks"]["redis"]["status"] == "error"
    assert body["checks"]["database"]["status"] == "ok"
    assert dead_redis not in response.get_data(as_text=True)
    with down.app_context():
        db.engine.dispose()


def test_deploy_gives_the_admin_the_default_subscription_once(app, runner):
    from app.models import Subscription
    from tests.conftest import drop_schema

    drop_schema(app)
    app.config["SUBSCRIPTION_NAME"] = "projects/test-project/subscriptions/builds"
    for _ in range(2):
        result = runner.invoke(args=["deploy"])
        assert result.exit_code == 0, result.output
    with app.app_context():
        rows = db.session.execute(sa.select(User.username, Subscription.name).join(Subscription.user)).all()
    assert rows == [("admin", "projects/test-project/subscriptions/builds")]


def test_healthz_is_503_within_the_redis_timeout_when_redis_accepts_and_never_answers(app, database_url):
    # Without a socket timeout, the request (and any page that asks Redis) waited for ever.
    with silent_server() as port:
        down = create_app(make_config(database_url, f"redis://127.0.0.1:{port}/0", REDIS_TIMEOUT_SECONDS=1.0))
        response, elapsed = answer_within(lambda: down.test_client().get("/healthz"), 20)
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["redis"] == {"status": "error", "error": "TimeoutError"}
    assert body["checks"]["database"]["status"] == "ok"
    assert elapsed < 1.0 + 2.0, f"{elapsed:.1f} s"
    with down.app_context():
        db.engine.dispose()


def test_healthz_is_503_within_the_connect_timeout_when_postgresql_accepts_and_never_answers(app, redis_server):
    # libpq waits for ever on a server that takes the connection and never answers its start-up message.
    with silent_server() as port:
        url = f"postgresql+psycopg2://nobody:secret@127.0.0.1:{port}/nothing"
        down = create_app(make_config(url, app.config["REDIS_URL"], DATABASE_CONNECT_TIMEOUT_SECONDS=2))
        response, elapsed = answer_within(lambda: down.test_client().get("/healthz"), 20)
        with down.app_context():
            db.engine.dispose()
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"] == {"status": "error", "error": "OperationalError"}
    assert body["checks"]["redis"]["status"] == "ok"
    assert "secret" not in response.get_data(as_text=True)
    # pool_pre_ping's check and the query each connect once: two timeouts at most.
    assert elapsed < 2 * 2 + 2, f"{elapsed:.1f} s"


def keepalive_settings(app) -> dict[str, int]:
    """The TCP keepalive options on the socket of one of the app's PostgreSQL connections."""
    with app.app_context():
        raw = db.engine.raw_connection()
        try:
            with socket.fromfd(raw.driver_connection.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
                return {"on": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                        "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                        "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)}
        finally:
            raw.close()


def test_postgresql_connections_give_up_on_a_vanished_server_within_a_minute(app, database_url, require_postgres):
    # A server gone without a word (failover, a dropped NAT mapping) answers no keepalive probe: the
    # connection fails after 30 + 3 x 10 s instead of the system's default of two hours and more.
    assert keepalive_settings(app) == {"on": 1, "idle": 30, "interval": 10, "count": 3}
    # DATABASE_URL's own settings win.
    separator = "&" if "?" in database_url else "?"
    own = create_app(make_config(database_url + f"{separator}keepalives_idle=5", app.config["REDIS_URL"]))
    try:
        assert keepalive_settings(own) == {"on": 1, "idle": 5, "interval": 10, "count": 3}
    finally:
        with own.app_context():
            db.engine.dispose()


def test_a_page_of_statuses_waits_on_a_silent_redis_once_not_once_per_subscription(app, database_url):
    import uuid

    from app import polling
    from app.models import Task

    alice = create_user(app, "alice")
    names = [f"projects/test-project/subscriptions/silent-{number}" for number in range(3)]
    with app.app_context():
        db.session.add_all(Task(id=uuid.uuid4().hex, name=polling.POLLING_TASK, user_id=alice, subscription=name,
                                state="polling") for name in names)
        db.session.commit()
    with silent_server() as port:
        down = create_app(make_config(database_url, f"redis://127.0.0.1:{port}/0", REDIS_TIMEOUT_SECONDS=1.0))
        with down.test_request_context("/subscriptions.json"):
            user = db.session.get(User, alice)
            started = time.monotonic()
            answers = [polling.status(user, name) for name in names]
            elapsed = time.monotonic() - started
            db.engine.dispose()
    # The database still says what it says: polling, not stalled (whether the job lives is unknown).
    assert [answer["status"] for answer in answers] == ["polling"] * 3
    assert elapsed < 1.0 + 1.5, f"{elapsed:.1f} s: Redis was waited on for each subscription"
