"""CSRF on every state-changing request, and no state change over GET."""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Notification, Task, User, UserItem
from tests.conftest import TEST_PASSWORD, create_user, csrf_token_from, store_item

STATE_CHANGING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def password_hash(app, username):
    with app.app_context():
        return db.session.scalar(sa.select(User.password_hash).where(User.username == username))


def tasks(app):
    with app.app_context():
        return [(task.id, task.complete) for task in db.session.scalars(sa.select(Task).order_by(Task.started_at))]


def database_state(app):
    """Everything a request could change, apart from last_seen."""
    with app.app_context():
        return {
            "tasks": [(t.id, t.complete, t.finished_at) for t in db.session.scalars(sa.select(Task))],
            "notifications": db.session.scalar(sa.select(sa.func.count(Notification.id))),
            "items": db.session.scalar(sa.select(sa.func.count(UserItem.id))),
            "users": [(u.username, u.password_hash, u.is_admin) for u in db.session.scalars(sa.select(User))],
        }


def queued_jobs(app):
    return app.task_queue.count


def other_sessions_token(app) -> str:
    """A valid token, but minted for a different browser session."""
    create_user(app, "mallory")
    other = app.test_client()
    token = csrf_token_from(other)
    other.post("/index", data={"username": "mallory", "password": TEST_PASSWORD, "csrf_token": token})
    return csrf_token_from(other, "/user/mallory")


def assert_csrf_rejection(response):
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)


# --- sign-in -------------------------------------------------------------------------------------


@pytest.mark.parametrize("token_kind", ["missing", "other session"])
def test_sign_in_without_a_valid_csrf_token_is_refused_and_signs_nobody_in(app, client, token_kind):
    create_user(app, "alice")
    client.get("/index")  # this session has a token of its own
    data = {"username": "alice", "password": TEST_PASSWORD}
    if token_kind == "other session":
        data["csrf_token"] = csrf_token_from(app.test_client())
    assert_csrf_rejection(client.post("/index", data=data))
    assert client.get("/user/alice").status_code == 302


def test_sign_in_with_this_sessions_token_works(app, client):
    create_user(app, "alice")
    token = csrf_token_from(client)
    response = client.post("/index", data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert client.get("/user/alice").status_code == 200


# --- change password -----------------------------------------------------------------------------

NEW_PASSWORD = "a-brand-new-password"
CHANGE = {"current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}


@pytest.mark.parametrize("token_kind", ["missing", "other session in form", "other session in header"])
def test_change_password_without_a_valid_csrf_token_changes_nothing(app, client, auth, token_kind):
    create_user(app, "alice")
    stolen = other_sessions_token(app)
    auth.login()
    before = password_hash(app, "alice")
    if token_kind == "missing":
        response = client.post("/change_password", data=CHANGE)
    elif token_kind == "other session in form":
        response = client.post("/change_password", data={**CHANGE, "csrf_token": stolen})
    else:
        response = client.post("/change_password", data=CHANGE, headers={"X-CSRFToken": stolen})
    assert_csrf_rejection(response)
    assert password_hash(app, "alice") == before


@pytest.mark.parametrize("where", ["form", "header"])
def test_change_password_with_this_sessions_token_works(app, client, auth, where):
    create_user(app, "alice")
    auth.login()
    before = password_hash(app, "alice")
    token = auth.csrf_token("/user/alice")
    if where == "form":
        response = client.post("/change_password", data={**CHANGE, "csrf_token": token})
    else:
        response = client.post("/change_password", data=CHANGE, headers={"X-CSRFToken": token})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert password_hash(app, "alice") != before


# --- start and stop polling ----------------------------------------------------------------------


@pytest.mark.parametrize("action", ["start", "stop"])
@pytest.mark.parametrize("token_kind", ["missing", "other session in form", "other session in header"])
def test_polling_without_a_valid_csrf_token_neither_starts_nor_stops(app, client, auth, action, token_kind):
    create_user(app, "alice")
    stolen = other_sessions_token(app)
    auth.login()
    if action == "stop":
        token = auth.csrf_token("/user/alice")
        started = client.post("/polling_pubsub", data={"action": "start"}, headers={"X-CSRFToken": token})
        assert started.status_code == 202
    before_tasks, before_jobs = tasks(app), queued_jobs(app)
    if token_kind == "missing":
        response = client.post("/polling_pubsub", json={"action": action})
    elif token_kind == "other session in form":
        response = client.post("/polling_pubsub", data={"action": action, "csrf_token": stolen})
    else:
        response = client.post("/polling_pubsub", json={"action": action}, headers={"X-CSRFToken": stolen})
    assert_csrf_rejection(response)
    assert tasks(app) == before_tasks
    assert queued_jobs(app) == before_jobs


def test_polling_start_and_stop_with_this_sessions_token_work(app, client, auth):
    create_user(app, "alice")
    auth.login()
    token = auth.csrf_token("/user/alice")
    started = client.post("/polling_pubsub", json={"action": "start"}, headers={"X-CSRFToken": token})
    assert started.status_code == 202, started.get_data(as_text=True)
    task_id = started.get_json()["task_id"]
    assert tasks(app) == [(task_id, False)]
    assert queued_jobs(app) == 1
    stopped = client.post("/polling_pubsub", data={"action": "stop", "csrf_token": token})
    assert stopped.status_code == 202
    assert tasks(app) == [(task_id, True)]


# --- no state change over GET --------------------------------------------------------------------


def test_get_polling_pubsub_never_starts_a_task(app, client, auth):
    create_user(app, "alice")
    auth.login()
    for query in [{}, {"action": "start"}, {"action": "start", "subscription": "monitor-sub"}]:
        response = client.get("/polling_pubsub", query_string=query)
        assert response.status_code == 200
        assert response.get_json()["status"] == "idle"
    assert tasks(app) == []
    assert queued_jobs(app) == 0


def test_get_polling_pubsub_never_stops_a_task(app, client, auth):
    create_user(app, "alice")
    auth.login()
    token = auth.csrf_token("/user/alice")
    task_id = client.post("/polling_pubsub", json={"action": "start"}, headers={"X-CSRFToken": token}).get_json()[
        "task_id"
    ]
    for query in [{"action": "stop"}, {"action": "stop", "subscription": app.config["SUBSCRIPTION_NAME"]}]:
        response = client.get("/polling_pubsub", query_string=query)
        assert response.get_json()["status"] == "queued"  # no worker in this test: it waits for one
    assert tasks(app) == [(task_id, False)]


SAMPLE_ARGUMENTS = {"username": "alice", "item_id": 1, "filename": "style.css"}


def concrete_path(app, rule, **overrides) -> str:
    """The rule's path with sample values for its arguments."""
    values = {name: overrides.get(name, SAMPLE_ARGUMENTS.get(name, "1")) for name in rule.arguments}
    with app.test_request_context():
        return app.url_map.bind("localhost").build(rule.endpoint, values, method=sorted(rule.methods)[0])


def test_no_get_request_to_any_endpoint_changes_the_database(app, client, auth):
    alice = create_user(app, "alice")
    store_item(app, alice, {"hello": "world"})
    auth.login()
    token = auth.csrf_token("/user/alice")
    client.post("/polling_pubsub", json={"action": "start"}, headers={"X-CSRFToken": token})
    before = database_state(app)
    query = {"action": "stop", "current_password": TEST_PASSWORD, "new_password": "x" * 12,
             "confirm_password": "x" * 12, "csrf_token": token}
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and rule.endpoint != "auth.logout":
            client.get(concrete_path(app, rule), query_string=query)
    assert database_state(app) == before


def test_every_state_changing_endpoint_refuses_a_request_without_csrf_token(app, client, auth):
    create_user(app, "alice")
    auth.login()
    checked = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods & STATE_CHANGING_METHODS):
            response = client.open(concrete_path(app, rule), method=method, data={"action": "start"})
            assert response.status_code == 400, f"{method} {rule.rule} answered {response.status_code} without a token"
            checked.append(f"{method} {rule.rule}")
    assert {"POST /index", "POST /change_password", "POST /polling_pubsub"} <= set(checked)
    assert tasks(app) == []


def test_a_forged_x_forwarded_host_cannot_make_a_foreign_referer_pass(app, client):
    """Over HTTPS Flask-WTF compares the Referer with the host, so the host must not come from the client."""
    create_user(app, "alice")
    token = csrf_token_from(client)
    response = client.post(
        "/index", data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
                 "Referer": "https://evil.example/phish"},
    )
    assert response.status_code == 400
    assert "referrer does not match" in response.get_data(as_text=True)
    assert client.get("/user/alice").status_code == 302
