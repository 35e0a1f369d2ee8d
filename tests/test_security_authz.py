"""Authorization: users see and act only on their own items, notifications and tasks."""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Subscription, Task, User
from tests.conftest import TEST_PASSWORD, create_user, store_item
from tests.test_security_csrf import concrete_path

SECRET_DATA = "alice-private-message-7f3a"
SECRET_ATTRIBUTE = "alice-private-attribute-91c2"
ALICE_SUBSCRIPTION = "alice-subscription"

# Every endpoint, and how it is guarded. A new endpoint fails
# test_every_endpoint_is_classified until it is added here and tested below.
PUBLIC_ENDPOINTS = {"static", "bootstrap.static", "vendor_jquery.static", "auth.index", "auth.logout",
                    "main.pygments_css", "health.healthz"}
OWNER_SCOPED_ENDPOINTS = {"main.user", "main.useritems", "main.useritem", "main.useritem_data", "main.notifications",
                          "main.polling_status", "main.polling_pubsub", "auth.change_password",
                          # Issue 8: each queries only the signed-in user's rows (tests/test_explore.py,
                          # test_subscriptions.py); the admin ones answer 403 to others (test_admin.py).
                          "explore.explore", "explore.explore_items", "explore.export_jsonl", "explore.export_csv",
                          "explore.activity", "subscriptions.subscriptions", "subscriptions.start",
                          "subscriptions.stop", "subscriptions.dismiss", "subscriptions.delete",
                          "admin.publish_message", "admin.replay",
                          # Issue 16: the account page is the user's own; the users pages answer 403 to
                          # non-admins (test_users_admin.py).
                          "auth.account", "admin.users_list", "admin.users_reset_password", "admin.users_set_admin",
                          "admin.users_delete",
                          # Issue 20: admin only, 403 to others (tests/test_storage_page.py).
                          "admin.storage", "admin.set_retention",
                          # Issue 17: the user's own rows (test_taps.py); the project page lists what the
                          # app's credentials can list, for any signed-in user, and changes nothing
                          # (test_browse.py).
                          "subscriptions.subscriptions_json", "subscriptions.project",
                          # Issue 17: the filter dry-run scans only the signed-in user's messages (below, and
                          # tests/test_filter_check.py).
                          "explore.filter_check",
                          # Issue 18: a rule's pages answer 404 to anyone but its owner, admins included
                          # (tests/test_alerts.py::test_users_only_ever_see_their_own_rules).
                          "alerts.alerts", "alerts.rule_page", "alerts.rule_json", "alerts.set_enabled",
                          "alerts.delete", "alerts.send_test"}


@pytest.fixture
def alice_data(app):
    """Alice's item, notification and running task; returns their ids."""
    alice = create_user(app, "alice")
    item_id = store_item(app, alice, {"secret": SECRET_DATA}, attributes={"note": SECRET_ATTRIBUTE})
    with app.app_context():
        user = db.session.get(User, alice)
        user.add_notification("task_progress", {"message": SECRET_DATA, "task_id": "alice-task"})
        db.session.add(Task(id="alice-task", name="polling_subscription", description="Alice's polling",
                            user=user, subscription=ALICE_SUBSCRIPTION))
        db.session.commit()
    return {"item_id": item_id, "task_id": "alice-task"}


def alice_task_complete(app) -> bool:
    with app.app_context():
        return db.session.get(Task, "alice-task").complete


def test_every_endpoint_is_classified(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    unclassified = endpoints - PUBLIC_ENDPOINTS - OWNER_SCOPED_ENDPOINTS
    assert not unclassified, f"add these to the authorization tests: {sorted(unclassified)}"


def test_every_non_public_endpoint_needs_a_signed_in_user(app, client, alice_data):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            # CSRF is checked first for POST; without a session there is no valid token anyway.
            response = client.open(concrete_path(app, rule), method=method)
            assert response.status_code in (302, 400, 401), f"{method} {rule.rule}: {response.status_code}"
            if response.status_code == 302:
                assert response.headers["Location"].startswith("/index"), rule.rule
            assert SECRET_DATA not in response.get_data(as_text=True)


def test_alice_sees_her_own_data_through_every_endpoint(app, client, auth, alice_data):
    """The positive control: the checks below fail for the right reason."""
    auth.login("alice")
    assert SECRET_DATA in client.get("/user/alice").get_data(as_text=True)
    assert alice_data["item_id"] in client.get("/useritems?after=0").get_json()["ids"]
    detail = client.get(f"/useritems/{alice_data['item_id']}").get_data(as_text=True)
    assert SECRET_DATA in detail and SECRET_ATTRIBUTE in detail
    assert SECRET_DATA in client.get(f"/useritems/{alice_data['item_id']}/data").get_data(as_text=True)
    assert SECRET_DATA in client.get("/notifications?since=0").get_data(as_text=True)
    status = client.get("/polling_pubsub", query_string={"subscription": ALICE_SUBSCRIPTION}).get_json()
    assert status["task_id"] == alice_data["task_id"]


def test_bob_cannot_read_alices_page_or_item_list(app, client, auth, alice_data):
    create_user(app, "bob")
    auth.login("bob")
    for response in [
        client.get("/user/alice"),
        client.get("/useritems", query_string={"user": "alice", "after": 0}),
        client.get("/useritems", query_string={"user": "alice", "before": 10**9}),
    ]:
        assert response.status_code == 403
        assert SECRET_DATA not in response.get_data(as_text=True)
    for query in [{"after": 0}, {"before": 10**9}]:
        own = client.get("/useritems", query_string=query).get_json()
        assert alice_data["item_id"] not in own["ids"]
        assert SECRET_DATA not in "".join(own["items"])
    assert SECRET_DATA not in client.get("/user/bob").get_data(as_text=True)


@pytest.mark.parametrize("suffix", ["", "/data"])
def test_bob_cannot_read_alices_item_detail_or_download_it(app, client, auth, alice_data, suffix):
    create_user(app, "bob")
    auth.login("bob")
    for accept in ("text/html", "application/json"):
        response = client.get(f"/useritems/{alice_data['item_id']}{suffix}", headers={"Accept": accept})
        assert response.status_code == 404  # the same answer as for an id that does not exist
        body = response.get_data(as_text=True)
        assert SECRET_DATA not in body and SECRET_ATTRIBUTE not in body


def test_bob_cannot_read_alices_notifications(app, client, auth, alice_data):
    create_user(app, "bob")
    auth.login("bob")
    for query in [{"since": 0}, {"since": 0, "user": "alice"}, {"since": -1, "user_id": 1}]:
        response = client.get("/notifications", query_string=query)
        assert response.status_code == 200
        assert response.get_json() == []


def test_bob_cannot_read_alices_task_status(app, client, auth, alice_data):
    create_user(app, "bob")
    auth.login("bob")
    for query in [{}, {"subscription": ALICE_SUBSCRIPTION}, {"task_id": alice_data["task_id"], "user": "alice"}]:
        status = client.get("/polling_pubsub", query_string=query).get_json()
        assert status["status"] == "idle"
        assert alice_data["task_id"] not in str(status)


@pytest.mark.parametrize("payload", [
    {"action": "stop"},
    {"action": "stop", "subscription": ALICE_SUBSCRIPTION},
    {"action": "stop", "subscription": ALICE_SUBSCRIPTION, "task_id": "alice-task", "user": "alice"},
])
def test_bob_cannot_stop_alices_task(app, client, auth, alice_data, payload):
    create_user(app, "bob")
    auth.login("bob")
    token = auth.csrf_token("/user/bob")
    response = client.post("/polling_pubsub", json=payload, headers={"X-CSRFToken": token})
    assert response.status_code < 500
    assert response.get_json().get("task_id") != alice_data["task_id"]
    assert alice_task_complete(app) is False


def test_bob_polls_alices_subscription_only_from_his_own_list_and_in_his_own_task(app, client, auth, alice_data):
    bob = create_user(app, "bob")
    auth.login("bob")
    token = auth.csrf_token("/user/bob")
    # Not in Bob's list: refused (a non-admin polls only subscriptions in their own list).
    refused = client.post("/polling_pubsub", json={"action": "start", "subscription": ALICE_SUBSCRIPTION},
                          headers={"X-CSRFToken": token})
    assert refused.status_code == 403 and "not in your subscriptions" in refused.get_json()["error"]
    with app.app_context():
        db.session.add(Subscription(user_id=bob, name=ALICE_SUBSCRIPTION))
        db.session.commit()
    response = client.post("/polling_pubsub", json={"action": "start", "subscription": ALICE_SUBSCRIPTION},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 202
    assert response.get_json()["task_id"] != alice_data["task_id"]
    with app.app_context():
        task = db.session.get(Task, response.get_json()["task_id"])
        assert task.user_id == bob
    assert alice_task_complete(app) is False


def test_bob_cannot_change_alices_password(app, client, auth, alice_data):
    create_user(app, "bob")
    with app.app_context():
        alice_hash = db.session.scalar(sa.select(User.password_hash).where(User.username == "alice"))
    auth.login("bob")
    token = auth.csrf_token("/user/bob")
    client.post("/change_password", query_string={"user": "alice"}, headers={"X-CSRFToken": token},
                data={"username": "alice", "current_password": TEST_PASSWORD,
                      "new_password": "taken-over-password", "confirm_password": "taken-over-password"})
    with app.app_context():
        assert db.session.scalar(sa.select(User.password_hash).where(User.username == "alice")) == alice_hash


def test_admin_may_view_alices_page_and_items(app, client, auth, alice_data):
    create_user(app, "root", is_admin=True)
    auth.login("root")
    assert SECRET_DATA in client.get("/user/alice").get_data(as_text=True)
    listed = client.get("/useritems", query_string={"user": "alice", "after": 0}).get_json()
    assert alice_data["item_id"] in listed["ids"]
    assert client.get(f"/useritems/{alice_data['item_id']}").status_code == 200
    assert client.get(f"/useritems/{alice_data['item_id']}/data").status_code == 200


# --- the issue 8 endpoints: search, export, activity, subscriptions panel, admin ----------------


@pytest.fixture
def alice_subscription(app, alice_data):
    from app.models import Subscription

    with app.app_context():
        alice = db.session.scalar(sa.select(User).where(User.username == "alice"))
        subscription = Subscription(user_id=alice.id, name=ALICE_SUBSCRIPTION)
        db.session.add(subscription)
        db.session.commit()
        return subscription.id


def test_bob_finds_nothing_of_alices_through_search_export_or_activity(app, client, auth, alice_data):
    create_user(app, "bob")
    auth.login("bob")
    # The search box echoes the query, so search for a part of the secret and look for all of it.
    paths = ["/explore", "/explore?q=alice-private", f"/explore?sub={ALICE_SUBSCRIPTION}&user=alice",
             "/explore/items?after=0", "/explore/items?after=0&q=alice-private&user=alice",
             "/explore/export.jsonl", "/explore/export.csv?user=alice", "/activity", "/activity?user=alice",
             "/explore?filter=attributes:note", "/explore/items?after=0&filter=attributes:note",
             "/filter_check?filter=attributes:note", f"/filter_check?subscription={ALICE_SUBSCRIPTION}&user=alice"]
    for path in paths:
        response = client.get(path)
        assert response.status_code in (200, 400, 403), f"{path}: {response.status_code}"
        body = response.get_data(as_text=True)
        assert SECRET_DATA not in body and SECRET_ATTRIBUTE not in body, path


def test_alice_finds_her_own_message_through_search_and_export(app, client, auth, alice_data):
    """The positive control for the test above."""
    auth.login("alice")
    assert SECRET_DATA in client.get("/explore/export.jsonl").get_data(as_text=True)
    assert SECRET_DATA in client.get("/explore/export.csv").get_data(as_text=True)
    assert SECRET_DATA in client.get("/explore/items?after=0&q=alice-private").get_data(as_text=True)
    assert SECRET_ATTRIBUTE in client.get("/filter_check?filter=attributes:note").get_data(as_text=True)
    assert SECRET_DATA in client.get("/explore/items?after=0&filter=attributes:note").get_data(as_text=True)


@pytest.mark.parametrize("action", ["start", "stop", "delete"])
def test_bob_cannot_act_on_alices_subscription(app, client, auth, alice_data, alice_subscription, action):
    from app.models import Subscription

    create_user(app, "bob")
    auth.login("bob")
    token = auth.csrf_token("/user/bob")
    response = client.post(f"/subscriptions/{alice_subscription}/{action}", data={"csrf_token": token})
    assert response.status_code in (403, 404)
    assert alice_task_complete(app) is False
    with app.app_context():
        assert db.session.get(Subscription, alice_subscription) is not None
        assert db.session.scalar(sa.select(sa.func.count(Task.id))) == 1  # no task started for anyone


def test_alice_can_stop_polling_from_her_subscription_panel(app, client, auth, alice_data, alice_subscription):
    """The positive control: the same request by the owner works."""
    auth.login("alice")
    token = auth.csrf_token("/user/alice")
    client.post(f"/subscriptions/{alice_subscription}/stop", data={"csrf_token": token})
    assert alice_task_complete(app) is True


def test_only_admins_may_publish_or_replay(app, client, auth, alice_data):
    create_user(app, "bob")
    auth.login("bob")
    token = auth.csrf_token("/user/bob")
    assert client.get("/admin/publish").status_code == 403
    assert client.post("/admin/publish", data={"csrf_token": token, "topic": "t", "data": "x"}).status_code == 403
    response = client.post(f"/admin/replay/{alice_data['item_id']}", data={"csrf_token": token})
    assert response.status_code == 403
    assert SECRET_DATA not in response.get_data(as_text=True)
