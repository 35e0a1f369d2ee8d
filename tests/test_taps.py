"""Taps: a subscription the app creates on a topic for one user, polled like any other, deleted from
Pub/Sub when removed. All against the emulator; polling with real `rq worker` processes."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1

from app import polling
from app.extensions import db
from app.models import SUBSCRIPTION_EXISTING, SUBSCRIPTION_TAP, Notification, Subscription, Task, UserItem
from app.subscriptions import taps
from tests.conftest import TEST_PROJECT, AuthActions, create_user, wait_until


@pytest.fixture(autouse=True)
def on_emulator(app, emulator):
    """The app talks to the emulator (its Config was read before the emulator started)."""
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host


def panel_token(client) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/subscriptions").get_data(as_text=True)).group(1)


def watch(client, topic: str, expression: str | None = None):
    """Submit the tap form as the page does."""
    data = {"topic": topic, "csrf_token": panel_token(client)}
    if expression is not None:
        data["filter"] = expression
    return client.post("/subscriptions", data=data)


def rows_of(app, user_id: int) -> list[Subscription]:
    with app.app_context():
        rows = list(db.session.scalars(sa.select(Subscription).where(Subscription.user_id == user_id)))
        db.session.expunge_all()
        return rows


def topic_subscriptions(topic_path: str) -> set[str]:
    publisher = pubsub_v1.PublisherClient()
    return set(publisher.list_topic_subscriptions(topic=topic_path))


def get_subscription(path: str):
    subscriber = pubsub_v1.SubscriberClient()
    try:
        return subscriber.get_subscription(subscription=path)
    finally:
        subscriber.close()


def sign_in_client(app, username: str):
    client = app.test_client()
    AuthActions(client).login(username)
    return client


def test_tap_is_created_with_the_expiration_policy_and_labels_and_removed_with_its_subscription(app, pubsub_names):
    app.config["TAP_EXPIRATION_DAYS"] = 3
    alice, bob = create_user(app, "Alice.O'Neil"), create_user(app, "bob")
    alice_client, bob_client = sign_in_client(app, "Alice.O'Neil"), sign_in_client(app, "bob")
    expression = 'attributes.status = "FAILURE"'
    response = watch(alice_client, pubsub_names["topic"], expression)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert watch(bob_client, pubsub_names["topic_path"]).status_code == 302

    [alice_tap], [bob_tap] = rows_of(app, alice), rows_of(app, bob)
    topic_path = pubsub_names["topic_path"]
    assert (alice_tap.kind, alice_tap.topic, alice_tap.filter) == (SUBSCRIPTION_TAP, topic_path, expression)
    assert (bob_tap.kind, bob_tap.topic, bob_tap.filter) == (SUBSCRIPTION_TAP, pubsub_names["topic_path"], None)
    assert alice_tap.name != bob_tap.name
    tap_id = alice_tap.name.rsplit("/", 1)[1]
    assert re.fullmatch(rf"tap-Alice\.O-Neil-{pubsub_names['topic']}-[0-9a-f]{{6}}", tap_id), tap_id

    created = get_subscription(alice_tap.name)
    assert created.topic == pubsub_names["topic_path"]
    assert created.filter == expression
    assert created.expiration_policy.ttl == timedelta(days=3)
    assert dict(created.labels) == {"created-by": "pubsub-monitor", "user": "alice-o-neil"}
    assert dict(get_subscription(bob_tap.name).labels)["user"] == "bob"
    assert {alice_tap.name, bob_tap.name} <= topic_subscriptions(pubsub_names["topic_path"])

    page = alice_client.get("/subscriptions").get_data(as_text=True)
    row = re.search(rf'<tr class="subscription-row" data-name="{alice_tap.name}" data-kind="tap"[^>]*>(.*?)</tr>',
                    page, re.S).group(1)
    assert "kind-badge" in row and ">tap<" in row
    assert pubsub_names["topic_path"] in row and "attributes.status = &#34;FAILURE&#34;" in row

    removed = alice_client.post(f"/subscriptions/{alice_tap.id}/delete", data={"csrf_token": panel_token(alice_client)},
                                follow_redirects=True)
    assert "deleted its Pub/Sub subscription" in removed.get_data(as_text=True)
    with pytest.raises(api_exceptions.NotFound):
        get_subscription(alice_tap.name)
    assert rows_of(app, alice) == []
    # Bob's tap on the same topic is untouched, in Pub/Sub and in his list.
    assert get_subscription(bob_tap.name).name == bob_tap.name
    assert [row.name for row in rows_of(app, bob)] == [bob_tap.name]
    # Another user cannot remove it.
    assert alice_client.post(f"/subscriptions/{bob_tap.id}/delete",
                             data={"csrf_token": panel_token(alice_client)}).status_code == 404
    assert get_subscription(bob_tap.name).name == bob_tap.name


def test_two_users_watching_one_topic_each_store_every_message(app, pubsub_names, worker_factory):
    alice, bob = create_user(app, "alice"), create_user(app, "bob")
    clients = {"alice": sign_in_client(app, "alice"), "bob": sign_in_client(app, "bob")}
    for client in clients.values():
        assert watch(client, pubsub_names["topic"]).status_code == 302
    taps_by_user = {"alice": rows_of(app, alice)[0], "bob": rows_of(app, bob)[0]}
    for username, client in clients.items():
        started = client.post(f"/subscriptions/{taps_by_user[username].id}/start",
                              data={"csrf_token": panel_token(client)})
        assert started.status_code == 302
    # Each polling task is a long-running job: one worker each.
    worker_factory(), worker_factory()

    publisher = pubsub_v1.PublisherClient()
    count = 40
    futures = [publisher.publish(pubsub_names["topic_path"], json.dumps({"n": number}).encode(), n=str(number))
               for number in range(count)]
    for future in futures:
        future.result(timeout=30)

    def stored(user_id: int) -> list[str]:
        with app.app_context():
            return list(db.session.scalars(sa.select(UserItem.attributes_json).where(UserItem.user_id == user_id)))

    for user_id in (alice, bob):
        wait_until(lambda user_id=user_id: len(stored(user_id)) >= count, 90, message=f"{count} messages for {user_id}")
        numbers = sorted(int(json.loads(attributes)["n"]) for attributes in stored(user_id))
        assert numbers == list(range(count))  # every message, once each
    with app.app_context():
        assert set(db.session.scalars(sa.select(UserItem.subscription).where(UserItem.user_id == alice))) == \
            {taps_by_user["alice"].name}

    # Removing a tap while it is polled: polling stops first, then its subscription is deleted, and the
    # user sees no failure for it. Bob goes on polling his own.
    removed = clients["alice"].post(f"/subscriptions/{taps_by_user['alice'].id}/delete",
                                    data={"csrf_token": panel_token(clients["alice"])})
    assert removed.status_code == 302
    with pytest.raises(api_exceptions.NotFound):
        get_subscription(taps_by_user["alice"].name)
    with app.app_context():
        task = db.session.scalars(sa.select(Task).where(Task.user_id == alice)).one()
        assert task.state == "finished", (task.state, task.state_reason)
        payloads = [note.get_data() for note in db.session.scalars(
            sa.select(Notification).where(Notification.user_id == alice, Notification.name == "task_progress"))]
        assert all(payload["state"] != "failed" for payload in payloads), payloads
        bob_task = db.session.scalars(sa.select(Task).where(Task.user_id == bob)).one()
        assert bob_task.state == "polling"
    publisher.publish(pubsub_names["topic_path"], b"{}", n=str(count)).result(timeout=30)
    wait_until(lambda: len(stored(bob)) == count + 1, 60, message="bob's tap still delivers")
    assert len(stored(alice)) == count


def test_a_job_that_meets_its_removed_subscription_ends_finished_not_failed(app):
    alice = create_user(app, "alice")
    name = f"projects/{TEST_PROJECT}/subscriptions/tap-alice-gone-abcdef"
    with app.app_context():
        db.session.add(Subscription(user_id=alice, name=name, kind=SUBSCRIPTION_TAP))
        db.session.add(Task(id=uuid.uuid4().hex, name=polling.POLLING_TASK, user_id=alice, subscription=name,
                            state="polling"))
        db.session.commit()
        # A stop that is not a removal still ends failed when the job fails: only removals are excused.
        other = Task(id=uuid.uuid4().hex, name=polling.POLLING_TASK, user_id=alice, subscription=name + "x",
                     state="polling")
        db.session.add(other)
        db.session.commit()
        polling.transition(other.id, polling.TaskState.STOPPING)
        polling.end(other.id, polling.TaskState.FAILED, "subscription not found")
        assert db.session.get(Task, other.id).state == "failed"

        # The removal's wait is bounded: no worker runs this job, so the wait ends after the timeout.
        assert polling.stop_for_removal(alice, [name], timeout=0.5) is False
        task = db.session.scalars(sa.select(Task).where(Task.subscription == name)).one()
        assert (task.state, task.state_reason) == ("stopping", polling.REMOVED_REASON)
        polling.end(task.id, polling.TaskState.FAILED, f"subscription not found: {name} does not exist")
        db.session.expire_all()
        task = db.session.get(Task, task.id)
        assert task.state == "finished"
        assert polling.status(db.session.get(Task, task.id).user, name)["status"] != "failed"


def test_subscriptions_json_lists_only_the_users_own_rows(app, pubsub_names):
    alice = create_user(app, "alice")
    create_user(app, "bob")
    alice_client, bob_client = sign_in_client(app, "alice"), sign_in_client(app, "bob")
    assert watch(alice_client, pubsub_names["topic"], 'attributes:kind').status_code == 302
    added = alice_client.post("/subscriptions", data={"name": pubsub_names["subscription"],
                                                      "csrf_token": panel_token(alice_client)})
    assert added.status_code == 302
    assert watch(bob_client, pubsub_names["topic"]).status_code == 302
    tap = next(row for row in rows_of(app, alice) if row.kind == SUBSCRIPTION_TAP)
    started = alice_client.post(f"/subscriptions/{tap.id}/start", data={"csrf_token": panel_token(alice_client)})
    assert started.status_code == 302

    listed = alice_client.get("/subscriptions.json").get_json()["subscriptions"]
    by_kind = {row["kind"]: row for row in listed}
    assert len(listed) == 2 and set(by_kind) == {SUBSCRIPTION_TAP, SUBSCRIPTION_EXISTING}
    assert by_kind["tap"] == {"id": tap.id, "name": tap.name, "kind": "tap", "topic": pubsub_names["topic_path"],
                              "filter": "attributes:kind", "state": "queued", "status": "queued"}
    existing = by_kind["existing"]
    assert (existing["name"], existing["topic"], existing["filter"], existing["state"], existing["status"]) == \
        (pubsub_names["subscription_path"], pubsub_names["topic_path"], None, None, "idle")

    bob_listed = bob_client.get("/subscriptions.json").get_json()["subscriptions"]
    assert [row["kind"] for row in bob_listed] == ["tap"]
    assert {row["id"] for row in bob_listed}.isdisjoint(row["id"] for row in listed)
    assert app.test_client().get("/subscriptions.json").status_code in (302, 401)


def test_an_existing_subscription_records_its_topic_and_filter_from_pubsub(app, pubsub_names):
    alice = create_user(app, "alice")
    client = sign_in_client(app, "alice")
    subscriber = pubsub_v1.SubscriberClient()
    filtered = f"projects/{TEST_PROJECT}/subscriptions/filtered-{uuid.uuid4().hex[:8]}"
    subscriber.create_subscription(request={"name": filtered, "topic": pubsub_names["topic_path"],
                                            "filter": 'hasPrefix(attributes.env, "prod")'})
    subscriber.close()
    page = client.get("/subscriptions").get_data(as_text=True)
    assert "shares its messages with its other consumers" in page
    response = client.post("/subscriptions", data={"name": filtered, "csrf_token": panel_token(client)})
    assert response.status_code == 302
    [row] = rows_of(app, alice)
    assert (row.kind, row.topic, row.filter) == (SUBSCRIPTION_EXISTING, pubsub_names["topic_path"],
                                                 'hasPrefix(attributes.env, "prod")')
    # Adding an existing subscription creates nothing in Pub/Sub.
    assert topic_subscriptions(pubsub_names["topic_path"]) == {pubsub_names["subscription_path"], filtered}


@pytest.mark.parametrize("case", ["missing topic", "malformed topic", "bad filter", "long filter", "expiration 0"])
def test_bad_requests_give_a_clear_error_and_create_nothing(app, pubsub_names, case):
    alice = create_user(app, "alice")
    client = sign_in_client(app, "alice")
    topic, expression, expected = pubsub_names["topic"], None, None
    if case == "missing topic":
        topic = f"no-such-topic-{uuid.uuid4().hex[:6]}"
        expected = f"Topic projects/{TEST_PROJECT}/topics/{topic} does not exist"
    elif case == "malformed topic":
        topic, expected = "goog-topic", "does not start with &#39;goog&#39;"
    elif case == "bad filter":
        # The message and position come from app.filterlang; the form shows them.
        expression = "attributes.status = FAILURE"
        expected = "The filter is not valid: expected a string literal at 20."
    elif case == "long filter":
        expression = "attributes:" + "k" * 300
        expected = "The filter is not valid: filter is longer than 256 bytes at 256."
    else:
        app.config["TAP_EXPIRATION_DAYS"] = 0
        expected = "TAP_EXPIRATION_DAYS is 0, but Pub/Sub&#39;s shortest expiration policy is 1 day"
    before = topic_subscriptions(pubsub_names["topic_path"])
    response = watch(client, topic, expression)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert expected in page, page[-3000:]
    assert "invalid-feedback" in page
    if case in ("bad filter", "long filter"):
        assert re.search(r'name="filter"[^>]*is-invalid|is-invalid[^>]*name="filter"', page)
    assert rows_of(app, alice) == []
    assert topic_subscriptions(pubsub_names["topic_path"]) == before
    subscriber = pubsub_v1.SubscriberClient()
    names = [sub.name for sub in subscriber.list_subscriptions(project=f"projects/{TEST_PROJECT}")]
    subscriber.close()
    # Nor on a topic that does not exist (the emulator is shared, so look for this test's topic only).
    assert not any(f"-{topic}-" in name for name in names)


def test_tap_names_and_labels_stay_within_pubsubs_limits():
    long_user = "Ünïcode User " * 10
    topic = "projects/p-123/topics/" + "t" * 255
    name = taps.tap_id(long_user, topic)
    assert 3 <= len(name) <= 255
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}", name)
    assert not name.lower().startswith("goog")
    assert taps.tap_id("bob", "projects/p-123/topics/orders") != taps.tap_id("bob", "projects/p-123/topics/orders")
    label = taps.label_value(long_user)
    assert re.fullmatch(r"[a-z0-9_-]{1,63}", label)
    assert taps.label_value("Alice_Smith-2") == "alice_smith-2"
    assert taps.label_value("!!!") == "unnamed"


def test_pubsub_refusals_name_the_permission_or_what_to_do():
    """The pure error-mapping functions, given the exceptions the client raises."""
    name, topic = "projects/p/subscriptions/tap-x", "projects/p/topics/t"
    denied = taps.describe_create_error(api_exceptions.PermissionDenied("denied"), name, topic)
    assert "pubsub.subscriptions.create" in denied and "roles/pubsub.editor" in denied
    assert "already exists" in taps.describe_create_error(api_exceptions.AlreadyExists("x"), name, topic)
    assert f"Topic {topic} does not exist" in taps.describe_create_error(api_exceptions.NotFound("x"), name, topic)
    delete_denied = taps.describe_delete_error(api_exceptions.PermissionDenied("denied"), name)
    assert "pubsub.subscriptions.delete" in delete_denied and "roles/pubsub.editor" in delete_denied
    assert "stays in your list" in delete_denied


def test_a_tap_with_a_filter_stores_only_matching_messages(app, pubsub_names, worker_factory):
    """The emulator ignores filters; the worker applies the tap's own (read back from Pub/Sub) and acks the rest."""
    alice = create_user(app, "alice")
    client = sign_in_client(app, "alice")
    assert watch(client, pubsub_names["topic"], 'attributes.status = "FAILURE"').status_code == 302
    [tap] = rows_of(app, alice)
    assert client.post(f"/subscriptions/{tap.id}/start", data={"csrf_token": panel_token(client)}).status_code == 302
    worker_factory()
    publisher = pubsub_v1.PublisherClient()
    statuses = ["SUCCESS", "FAILURE", "WORKING", "FAILURE", "failure", "FAILURE"]
    for number, status in enumerate(statuses):
        publisher.publish(pubsub_names["topic_path"], b"{}", status=status, n=str(number)).result(timeout=30)

    def stored() -> list[dict]:
        with app.app_context():
            return [json.loads(attributes) for attributes in db.session.scalars(
                sa.select(UserItem.attributes_json).where(UserItem.user_id == alice))]

    def filtered_count() -> int:
        with app.app_context():
            notes = [note.get_data() for note in db.session.scalars(
                sa.select(Notification).where(Notification.user_id == alice, Notification.name == "task_progress")
                .order_by(Notification.id))]
        counts = [(note.get("local_filter") or {}).get("filtered_count") or 0 for note in notes]
        return max(counts, default=0)

    wait_until(lambda: filtered_count() == 3 and len(stored()) == 3, 60, message="3 stored and 3 filtered out")
    assert sorted(int(attributes["n"]) for attributes in stored()) == [1, 3, 5]
    assert {attributes["status"] for attributes in stored()} == {"FAILURE"}


def admin_client(app):
    create_user(app, "root", is_admin=True)
    client = sign_in_client(app, "root")
    return client, AuthActions(client).csrf_token("/admin/users")


def test_deleting_a_user_deletes_their_taps_from_pubsub_and_no_one_elses(app, pubsub_names):
    admin, token = admin_client(app)
    alice, bob = create_user(app, "alice"), create_user(app, "bob")
    alice_client = sign_in_client(app, "alice")
    assert watch(alice_client, pubsub_names["topic"]).status_code == 302
    assert watch(alice_client, pubsub_names["topic"], 'attributes.status = "FAILURE"').status_code == 302
    assert watch(sign_in_client(app, "bob"), pubsub_names["topic"]).status_code == 302
    alice_taps = [row.name for row in rows_of(app, alice)]
    [bob_tap] = rows_of(app, bob)
    assert len(alice_taps) == 2
    confirm = " ".join(admin.get(f"/admin/users/{alice}/delete").get_data(as_text=True).split())
    assert "and deletes from Pub/Sub the 2 taps made for them" in confirm

    page = admin.post(f"/admin/users/{alice}/delete", data={"csrf_token": token}, follow_redirects=True)
    text = page.get_data(as_text=True)
    assert "Deleted user alice." in text and "did not delete" not in text
    for name in alice_taps:
        with pytest.raises(api_exceptions.NotFound):
            get_subscription(name)
    assert rows_of(app, alice) == []
    assert get_subscription(bob_tap.name).name == bob_tap.name
    assert topic_subscriptions(pubsub_names["topic_path"]) >= {bob_tap.name}


def test_deleting_a_user_stops_all_their_taps_jobs_then_waits_for_them_once(app, pubsub_names, runner):
    # Jobs that never let go (no worker runs them): the deletion waits TAP_STOP_WAIT_SECONDS in all, not per
    # tap (a web request has 30 s), and deletes the taps after.
    app.config["TAP_STOP_WAIT_SECONDS"] = 2.0
    alice = create_user(app, "alice")
    alice_client = sign_in_client(app, "alice")
    for expression in (None, 'attributes.status = "FAILURE"', 'attributes.status = "SUCCESS"'):
        assert watch(alice_client, pubsub_names["topic"], expression).status_code == 302
    names = [row.name for row in rows_of(app, alice)]
    with app.app_context():
        db.session.add_all(Task(id=uuid.uuid4().hex, name=polling.POLLING_TASK, user_id=alice, subscription=name,
                                state="polling") for name in names)
        db.session.commit()
    started = time.monotonic()
    result = runner.invoke(args=["users", "delete", "alice", "--yes"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert 2.0 <= elapsed < 2 * 2.0, f"{elapsed:.1f} s: the jobs were waited for one after another"
    for name in names:
        with pytest.raises(api_exceptions.NotFound):
            get_subscription(name)
    assert rows_of(app, alice) == []


def test_a_tap_pubsub_does_not_delete_is_named_and_left_to_expire_and_the_user_still_goes(
        app, emulator, pubsub_names, runner, monkeypatch):
    create_user(app, "root", is_admin=True)
    alice = create_user(app, "alice")
    assert watch(sign_in_client(app, "alice"), pubsub_names["topic"]).status_code == 302
    [tap] = rows_of(app, alice)
    # Pub/Sub cannot be reached while the user is deleted (nothing listens on the discard port).
    app.config["PUBSUB_EMULATOR_HOST"] = "127.0.0.1:9"
    monkeypatch.setattr(taps, "CALL_TIMEOUT_SECONDS", 1)
    result = runner.invoke(args=["users", "delete", "alice", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Deleted user 'alice'." in result.output
    assert (f"Pub/Sub did not delete 1 of their taps ({tap.name}); each expires by itself once unused for its "
            "expiration period (TAP_EXPIRATION_DAYS when it was made; now 7 days)") in " ".join(result.output.split())
    assert rows_of(app, alice) == []
    # The tap is still there, with the expiration policy it was created with.
    assert get_subscription(tap.name).expiration_policy.ttl == timedelta(days=7)


def test_a_users_taps_are_deleted_side_by_side_so_a_slow_pubsub_costs_one_timeout_not_one_each(
        app, emulator, pubsub_names, runner, monkeypatch):
    alice = create_user(app, "alice")
    alice_client = sign_in_client(app, "alice")
    for number in range(6):
        assert watch(alice_client, pubsub_names["topic"], f'attributes.n = "{number}"').status_code == 302
    names = sorted(row.name for row in rows_of(app, alice))
    # Every delete call fails only when its time is up (nothing listens on the discard port): about 1 s
    # of retries each, so one after another would take 6 s.
    app.config["PUBSUB_EMULATOR_HOST"] = "127.0.0.1:9"
    monkeypatch.setattr(taps, "CALL_TIMEOUT_SECONDS", 2.0)
    started = time.monotonic()
    result = runner.invoke(args=["users", "delete", "alice", "--yes"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert elapsed < 4.0, f"{elapsed:.1f} s: the taps were deleted one after another"
    named = re.search(r"Pub/Sub did not delete 6 of their taps \(([^)]*)\)", " ".join(result.output.split()))
    assert named is not None, result.output
    assert sorted(named.group(1).split(", ")) == names
    assert rows_of(app, alice) == []
