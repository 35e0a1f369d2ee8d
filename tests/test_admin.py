"""Publish and replay, admin only, against the Pub/Sub emulator."""

from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1

from app.extensions import db
from app.models import UserItem
from tests.bulk import insert_rows, item_row
from tests.conftest import create_user


def pull_all(subscription_path: str, expected: int, timeout: float = 20) -> list:
    """Pull and ack until `expected` messages have arrived (or the time is up)."""
    subscriber = pubsub_v1.SubscriberClient()
    received = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < expected and time.monotonic() < deadline:
            # The emulator holds an empty pull open until its deadline: never wait past ours.
            wait = max(0.5, min(10.0, deadline - time.monotonic()))
            try:
                reply = subscriber.pull(request={"subscription": subscription_path, "max_messages": 1000},
                                        timeout=wait)
            except api_exceptions.DeadlineExceeded:
                continue
            if reply.received_messages:
                subscriber.acknowledge(request={"subscription": subscription_path,
                                                "ack_ids": [m.ack_id for m in reply.received_messages]})
                received += [m.message for m in reply.received_messages]
    finally:
        subscriber.close()
    return received


def form_token(client, path: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"|<meta name="csrf-token" content="([^"]+)"',
                      client.get(path).get_data(as_text=True))
    assert match
    return match.group(1) or match.group(2)


@pytest.fixture(autouse=True)
def on_emulator(app, emulator):
    """The app publishes to the emulator (its Config was read before the emulator started)."""
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host


@pytest.fixture
def stored_message(app, pubsub_names):
    """A stored message with binary data, odd attributes and an ordering key, from the test's subscription."""
    owner = create_user(app, "owner")
    insert_rows(app, [item_row(owner, b"\x00\xffbinary \xc3\x28 payload\n",
                               {"status": "FAILURE", "emoji": "\u2603 snow", "empty": "", "q": "' OR 1=1 --"},
                               subscription=pubsub_names["subscription"], ordering_key="key-1", message_id="orig-1")])
    with app.app_context():
        return db.session.scalar(sa.select(UserItem.id).where(UserItem.message_id == "orig-1"))


def test_non_admin_gets_403_on_publish_and_replay(app, client, auth, stored_message, pubsub_names):
    create_user(app, "alice")
    auth.login("alice")
    token = auth.csrf_token("/explore")
    assert client.get("/admin/publish").status_code == 403
    publish = client.post("/admin/publish", data={"topic": pubsub_names["topic"], "data": "x", "csrf_token": token})
    assert publish.status_code == 403
    replay = client.post(f"/admin/replay/{stored_message}", data={"csrf_token": token})
    assert replay.status_code == 403
    json_replay = client.post(f"/admin/replay/{stored_message}", json={}, headers={"X-CSRFToken": token})
    assert json_replay.status_code == 403 and json_replay.get_json()["code"] == 403
    # Nothing reached Pub/Sub.
    assert pull_all(pubsub_names["subscription_path"], 1, timeout=3) == []
    # The detail view offers no replay to a non-admin (the owner is someone else; alice cannot see it at all).
    assert client.get(f"/useritems/{stored_message}").status_code == 404


def test_admin_publishes_from_the_ui_and_sees_the_message_id(app, client, auth, pubsub_names):
    create_user(app, "root", is_admin=True)
    auth.login("root")
    token = form_token(client, "/admin/publish")
    page = client.post("/admin/publish", data={
        "topic": pubsub_names["topic"], "data": '{"hello": "<world>"}',
        "attributes": "status=SUCCESS\nbuildId=b-1\n", "ordering_key": "ok-1", "csrf_token": token,
    })
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html[:500]
    message_id = re.search(r'id="published-id">([^<]+)<', html).group(1)
    [message] = pull_all(pubsub_names["subscription_path"], 1)
    assert message.message_id == message_id
    assert message.data == b'{"hello": "<world>"}'
    assert dict(message.attributes) == {"status": "SUCCESS", "buildId": "b-1"}
    assert message.ordering_key == "ok-1"
    missing = client.post("/admin/publish", data={"topic": "no-such-topic", "data": "x", "csrf_token": token})
    assert missing.status_code == 502 and "does not exist" in missing.get_data(as_text=True)


def test_replayed_message_arrives_with_identical_data_and_attributes(app, client, auth, stored_message, pubsub_names):
    create_user(app, "root", is_admin=True)
    auth.login("root")
    detail = client.get(f"/useritems/{stored_message}").get_data(as_text=True)
    assert 'id="replay-form"' in detail
    token = form_token(client, f"/useritems/{stored_message}")
    # No topic given: the topic of the message's subscription, looked up in Pub/Sub.
    page = client.post(f"/admin/replay/{stored_message}", data={"csrf_token": token, "topic": ""})
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html[:500]
    new_id = re.search(r'id="replayed-id">([^<]+)<', html).group(1)
    [message] = pull_all(pubsub_names["subscription_path"], 1)
    assert message.message_id == new_id != "orig-1"
    assert message.data == b"\x00\xffbinary \xc3\x28 payload\n"
    assert dict(message.attributes) == {"status": "FAILURE", "emoji": "\u2603 snow", "empty": "", "q": "' OR 1=1 --"}
    assert message.ordering_key == "key-1"
