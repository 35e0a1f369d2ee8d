"""Several subscriptions per user: the panel checks them with Pub/Sub, and each polls in its own task."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from google.cloud import pubsub_v1

from app.extensions import db
from app.models import Subscription, Task, UserItem
from app.names import canonical_subscription
from tests.conftest import create_user, make_pubsub_names, wait_until


@pytest.fixture(autouse=True)
def on_emulator(app, emulator):
    """The app checks subscriptions on the emulator (its Config was read before the emulator started)."""
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host


def make_subscription() -> dict:
    names = make_pubsub_names()
    return {"topic_path": names["topic_path"], "name": names["subscription"], "path": names["subscription_path"]}


def panel_token(client) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                     client.get("/subscriptions").get_data(as_text=True)).group(1)


def add(client, name: str):
    return client.post("/subscriptions", data={"name": name, "csrf_token": panel_token(client)},
                       follow_redirects=True)


def saved_names(app, user_id: int) -> set[str]:
    with app.app_context():
        return set(db.session.scalars(sa.select(Subscription.name).where(Subscription.user_id == user_id)))


def subscription_id(app, user_id: int, name: str) -> int:
    with app.app_context():
        full_path = canonical_subscription(name, app.config["GCP_PROJECT_ID"])
        return db.session.scalar(sa.select(Subscription.id).where(Subscription.user_id == user_id,
                                                                  Subscription.name == full_path))


def test_panel_adds_only_subscriptions_that_exist(app, client, auth, emulator):
    alice = create_user(app, "alice")
    auth.login("alice")
    real = make_subscription()
    missing = add(client, "no-such-subscription")
    assert "projects/test-project/subscriptions/no-such-subscription does not exist" in missing.get_data(as_text=True)
    malformed = add(client, "bad name; DROP TABLE user")
    assert "Give a subscription id" in malformed.get_data(as_text=True)
    assert saved_names(app, alice) == set()

    assert "Added " + real["name"] in add(client, real["name"]).get_data(as_text=True)
    # The short name and the full path are one subscription, stored once by its full path.
    assert "already in your list" in add(client, real["path"]).get_data(as_text=True)
    assert "already in your list" in add(client, real["name"]).get_data(as_text=True)
    assert saved_names(app, alice) == {real["path"]}


def test_panel_says_polling_is_shared_and_shows_who_else_polls(app, client, auth, emulator):
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    shared = make_subscription()
    with app.app_context():
        db.session.add_all([Subscription(user_id=alice, name=shared["name"]),
                            Subscription(user_id=bob, name=shared["name"]),
                            Task(id="bob-task", name="polling_subscription", user_id=bob,
                                 subscription=shared["name"], description="Bob polling")])
        db.session.commit()
    auth.login("alice")
    page = client.get("/subscriptions").get_data(as_text=True)
    assert "share its messages" in page
    pattern = rf'<tr class="subscription-row" data-name="{shared["path"]}"[^>]*>(.*?)</tr>'
    row = re.search(pattern, page, re.S).group(1)
    assert '<td class="others small">bob</td>' in row
    assert "idle" in row and "start-button" in row


def test_panel_starts_polling_on_the_number_of_streams_asked_for(app, client, auth, emulator):
    alice = create_user(app, "alice")
    auth.login("alice")
    name = make_subscription()["name"]
    add(client, name)
    start_url = f"/subscriptions/{subscription_id(app, alice, name)}/start"
    page = client.get("/subscriptions").get_data(as_text=True)
    assert f'name="streams" id="streams-{subscription_id(app, alice, name)}" min="1" ' \
           f'max="{app.config["MAX_POLLING_STREAMS"]}" value="1"' in " ".join(page.split())

    for bad in ("0", "-2", "two", str(app.config["MAX_POLLING_STREAMS"] + 1)):
        response = client.post(start_url, data={"csrf_token": panel_token(client), "streams": bad},
                               follow_redirects=True)
        assert "Not started: streams must be a whole number from 1 to" in response.get_data(as_text=True), bad
        with app.app_context():
            assert db.session.scalar(sa.select(sa.func.count()).select_from(Task)) == 0, bad
    assert app.task_queue.count == 0

    response = client.post(start_url, data={"csrf_token": panel_token(client), "streams": "3"})
    assert response.status_code == 302
    with app.app_context():
        task = db.session.scalars(sa.select(Task).where(Task.complete.is_(False))).one()
        assert (task.subscription, task.streams) == (canonical_subscription(name, app.config["GCP_PROJECT_ID"]), 3)
        job_ids = task.job_ids()
    assert sorted(app.task_queue.job_ids) == sorted(job_ids) and len(job_ids) == 3
    row = client.get("/subscriptions").get_data(as_text=True)
    assert "· 3 streams" in row and "stop-button" in row


def test_user_with_two_subscriptions_polls_both_at_once(app, client, auth, emulator, worker_factory):
    alice = create_user(app, "alice")
    auth.login("alice")
    first, second = make_subscription(), make_subscription()
    # One by short name, one by full path: both are stored, and their messages kept, by the full path.
    names = {"first": first["name"], "second": second["path"]}
    paths = {"first": first["path"], "second": second["path"]}
    for name in names.values():
        add(client, name)
    for name in names.values():
        token = panel_token(client)
        response = client.post(f"/subscriptions/{subscription_id(app, alice, name)}/start", data={"csrf_token": token})
        assert response.status_code == 302
    with app.app_context():
        running = db.session.scalars(sa.select(Task.subscription).where(Task.complete.is_(False))).all()
    assert sorted(running) == sorted(paths.values())
    # Each polling task is a long-running job; one worker each, as on Heroku with two worker dynos.
    worker_factory(), worker_factory()

    publisher = pubsub_v1.PublisherClient()
    futures = []
    for which, source in (("first", first), ("second", second)):
        for index in range(25):
            futures.append(publisher.publish(source["topic_path"], json.dumps({"n": index}).encode(), which=which))
    for future in futures:
        future.result(timeout=30)

    def stored():
        with app.app_context():
            return db.session.execute(sa.select(UserItem.subscription, UserItem.attributes_json)).all()

    wait_until(lambda: len(stored()) >= 50, 90, message="50 messages from both subscriptions")
    rows = stored()
    assert len(rows) == 50
    for subscription, attributes in rows:
        assert subscription == paths[json.loads(attributes)["which"]]
    page = client.get("/subscriptions").get_data(as_text=True)
    assert page.count('data-status="polling"') == 2

    # The per-subscription filter shows only its own.
    for which, name in names.items():
        exported = client.get("/explore/export.jsonl", query_string={"sub": name}).get_data(as_text=True)
        records = [json.loads(line) for line in exported.splitlines()]
        assert len(records) == 25 and {r["attributes"]["which"] for r in records} == {which}
        listed = client.get("/explore/items", query_string={"sub": name, "after": 0}).get_json()
        assert len(listed["ids"]) == 25

    for name in names.values():
        token = panel_token(client)
        client.post(f"/subscriptions/{subscription_id(app, alice, name)}/stop", data={"csrf_token": token})
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Task).where(Task.complete.is_(False))) == 0
