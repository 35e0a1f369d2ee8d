"""Alerts (issue 18): rules, firing on new messages only, signed deliveries, retries, refusals,
a worker killed mid-delivery, and the rate limit, with a real webhook receiver on 127.0.0.1,
real `rq worker` processes and the emulator."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import statistics
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from google.cloud import pubsub_v1

from app.extensions import db
from app.models import Alert, Notification, Task, UserItem
from tests.conftest import create_user, holds_for, wait_until

MATCHING = {"status": "FAILURE"}
OTHER = {"status": "SUCCESS"}
CONDITION = 'attributes.status = "FAILURE"'
# Longer than a courier round (0.5 s) plus a pull, a write and a delivery: a stray delivery would show.
NOTHING_MORE_SECONDS = 3.0


class Receiver:
    """A webhook receiver on 127.0.0.1, in a thread of the test. It records every request and
    answers 500 to the first `fail_first`; with `hold_first`, the first request waits (unanswered)
    until `release` is set."""

    def __init__(self, fail_first: int = 0, hold_first: bool = False):
        self.fail_first = fail_first
        self.hold_first = hold_first
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    number = len(receiver.requests)
                    status = 500 if number < receiver.fail_first else 200
                    record = {"headers": dict(self.headers), "body": body, "status": status,
                              "received": time.time(), "answered": False}
                    receiver.requests.append(record)
                if number == 0 and receiver.hold_first:
                    receiver.first_arrived.set()
                    receiver.release.wait(120)
                    return  # the sender is gone by now; nothing to answer
                self.send_response(status)
                self.end_headers()
                record["answered"] = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def delivered(self) -> list[dict]:
        """The requests answered 200, each with its parsed body."""
        with self.lock:
            return [record | {"json": json.loads(record["body"])} for record in self.requests
                    if record["answered"] and record["status"] == 200]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    receivers: list[Receiver] = []

    def start(**options) -> Receiver:
        receiver = Receiver(**options)
        receiver.thread.start()
        receivers.append(receiver)
        return receiver

    yield start
    for receiver in receivers:
        receiver.stop()


def create_rule_over_http(client, auth, url: str, condition: str = CONDITION, subscription: str = "",
                          name: str = "Build failed", format: str = "json"):  # noqa: A002
    token = auth.csrf_token("/alerts")
    return client.post("/alerts", data={"name": name, "subscription": subscription, "condition": condition,
                                        "url": url, "format": format},
                       headers={"Accept": "application/json", "X-CSRFToken": token})


def start_polling(client, auth, subscription: str) -> None:
    token = auth.csrf_token("/user/alice")
    response = client.post("/polling_pubsub", data={"action": "start", "subscription": subscription},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 202, response.get_data(as_text=True)


def publish(topic_path: str, attributes_list: list[dict], data: bytes = b'{"build": "b-1"}') -> list[str]:
    publisher = pubsub_v1.PublisherClient()
    futures = [publisher.publish(topic_path, data, **attributes) for attributes in attributes_list]
    return [future.result(timeout=60) for future in futures]


def stored_count(app) -> int:
    with app.app_context():
        count = db.session.scalar(sa.select(sa.func.count()).select_from(UserItem))
        db.session.rollback()
        return count


def alerts_of(app, rule_id: int) -> list[Alert]:
    with app.app_context():
        rows = list(db.session.scalars(sa.select(Alert).where(Alert.rule_id == rule_id).order_by(Alert.id)))
        db.session.expunge_all()
        return rows


def signed_alice(app, auth, subscription: str | None = None) -> int:
    user_id = create_user(app, "alice", subscriptions=(subscription,) if subscription else ())
    auth.login()
    return user_id


# --- rules and refusals (no worker) ---------------------------------------------------------------


def test_a_rule_is_created_with_a_secret_and_its_fields_are_checked(app, client, auth):
    signed_alice(app, auth)
    created = create_rule_over_http(client, auth, "http://127.0.0.1:9/hook")
    assert created.status_code == 201
    body = created.get_json()
    assert set(body) == {"id", "secret"} and len(body["secret"]) >= 32
    # The secret is never shown again, neither on the page nor in the JSON.
    assert body["secret"] not in client.get(f"/alerts/{body['id']}").get_data(as_text=True)
    assert body["secret"] not in client.get(f"/alerts/{body['id']}.json").get_data(as_text=True)
    assert body["secret"] not in client.get("/alerts").get_data(as_text=True)

    bad_condition = create_rule_over_http(client, auth, "http://127.0.0.1:9/", condition='attributes.status = ')
    assert bad_condition.status_code == 400
    assert "expected a string literal at 20" in bad_condition.get_json()["error"]
    no_name = create_rule_over_http(client, auth, "http://127.0.0.1:9/", name=" ")
    assert no_name.status_code == 400 and "name" in no_name.get_json()["error"]
    not_mine = create_rule_over_http(client, auth, "http://127.0.0.1:9/", subscription="someone-elses")
    assert not_mine.status_code == 400 and "not in your list" in not_mine.get_json()["error"]
    # The HTML form shows the error beside its field, in the app's style.
    token = auth.csrf_token("/alerts")
    page = client.post("/alerts", data={"name": "x", "url": "ftp://example.com/", "csrf_token": token})
    text = page.get_data(as_text=True)
    assert 'id="url"' in text and "is-invalid" in text and "Only http:// and https://" in text


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:8080/hook", "ALERT_ALLOW_PRIVATE_TARGETS"),
    ("http://localhost/hook", "ALERT_ALLOW_PRIVATE_TARGETS"),
    ("http://10.1.2.3/hook", "ALERT_ALLOW_PRIVATE_TARGETS"),
    ("http://[::1]/hook", "ALERT_ALLOW_PRIVATE_TARGETS"),
    ("http://169.254.169.254/computeMetadata/v1/", "cloud metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
])
def test_private_targets_are_refused_at_creation_without_the_setting(app, client, auth, url, words):
    signed_alice(app, auth)
    app.config["ALERT_ALLOW_PRIVATE_TARGETS"] = False
    refused = create_rule_over_http(client, auth, url)
    assert refused.status_code == 400
    assert words in refused.get_json()["error"]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/",
                                 "http://metadata.google.internal/"])
def test_metadata_addresses_are_refused_even_with_private_targets_allowed(app, client, auth, url):
    signed_alice(app, auth)
    assert app.config["ALERT_ALLOW_PRIVATE_TARGETS"]
    refused = create_rule_over_http(client, auth, url)
    assert refused.status_code == 400 and "metadata" in refused.get_json()["error"]


def test_users_only_ever_see_their_own_rules(app, client, auth):
    signed_alice(app, auth)
    rule_id = create_rule_over_http(client, auth, "http://127.0.0.1:9/", name="alice-only").get_json()["id"]
    auth.logout()
    create_user(app, "bob", is_admin=True)
    auth.login("bob")
    assert client.get(f"/alerts/{rule_id}").status_code == 404
    assert client.get(f"/alerts/{rule_id}.json").status_code == 404
    token = auth.csrf_token("/alerts")
    assert client.post(f"/alerts/{rule_id}/delete", headers={"X-CSRFToken": token}).status_code == 404
    assert "alice-only" not in client.get("/alerts").get_data(as_text=True)
    assert client.get("/alerts", headers={"Accept": "application/json"}).get_json() == []


def test_a_target_checked_again_at_delivery_is_refused_there_too(app, client, auth, receiver_factory):
    """The address is checked at each delivery, not only at creation (DNS may change in between)."""
    from app.alerts.delivery import deliver

    receiver = receiver_factory()
    signed_alice(app, auth)
    rule_id = create_rule_over_http(client, auth, receiver.url).get_json()["id"]
    token = auth.csrf_token("/alerts")
    alert_id = client.post(f"/alerts/{rule_id}/test", headers={"Accept": "application/json",
                                                               "X-CSRFToken": token}).get_json()["id"]
    app.config["ALERT_ALLOW_PRIVATE_TARGETS"] = False
    with app.app_context():
        assert deliver(alert_id) == "failed"
    assert receiver.requests == []
    (alert,) = alerts_of(app, rule_id)
    assert alert.state == "failed" and "ALERT_ALLOW_PRIVATE_TARGETS" in alert.last_error


def test_the_writer_fires_on_newly_stored_rows_only(app):
    """Rows absorbed by the dedup key (a redelivery) fire nothing; data conditions see the data."""
    from app.alerts import create_rule
    from app.alerts.evaluate import RuleEvaluator
    from app.models import User
    from app.pubsub.writer import BatchWriter
    from tests.test_subscriber import sample_row

    user_id = create_user(app, "alice")
    with app.app_context():
        user = db.session.get(User, user_id)
        on_attributes = create_rule(user, "failures", CONDITION, "http://127.0.0.1:9/")
        on_data = create_rule(user, "main branch", 'data.branch = "main" AND -data:"skip"', "http://127.0.0.1:9/")
        db.session.commit()
        rule_ids = (on_attributes.id, on_data.id)
        subscription = "projects/test-project/subscriptions/sub-a"
        rows = [sample_row(user_id, str(number), subscription)
                | {"attributes_json": json.dumps(MATCHING if number % 2 else OTHER),
                   "data_text": json.dumps({"branch": "main" if number < 4 else "dev",
                                            "note": "skip" if number == 0 else ""})}
                for number in range(10)]
        writer = BatchWriter(db.engine, user_id, evaluator=RuleEvaluator(user_id, subscription))
        assert writer.write(rows) == 10
        assert writer.write(rows[:6]) == 0  # a redelivery
        # Redelivered rows beside new ones: only the new ones count.
        new = [sample_row(user_id, number, subscription) | {"attributes_json": json.dumps(attributes)}
               for number, attributes in (("10", MATCHING), ("11", OTHER))]
        assert writer.write(rows[:6] + new) == 2
        # On PostgreSQL, a batch with no redelivery sends the next one straight into user_item again;
        # a redelivery there undoes it, and it is written again through the stage table: a new
        # matching row still fires once, a held (quarantined) row is stored once.
        assert writer.write([sample_row(user_id, "12", subscription) | {"attributes_json": json.dumps(OTHER)}]) == 1
        assert writer.copy_directly
        held = sample_row(user_id, "14", subscription) | {"attributes_json": json.dumps(OTHER),
                                                          "quarantine_reason": "held for the test"}
        again = rows[:2] + [sample_row(user_id, "13", subscription) | {"attributes_json": json.dumps(MATCHING)}]
        assert writer.write(again + [held]) == 2
        assert writer.copy_directly is not writer.is_postgresql  # the direct COPY met the redelivery
        assert db.session.scalar(sa.select(sa.func.count()).where(UserItem.quarantine_reason.is_not(None))) == 1
        fired = {rule_id: sorted(db.session.scalars(
            sa.select(UserItem.message_id).join(Alert, Alert.user_item_id == UserItem.id)
            .where(Alert.rule_id == rule_id)).all()) for rule_id in rule_ids}
        assert fired == {rule_ids[0]: ["1", "10", "13", "3", "5", "7", "9"], rule_ids[1]: ["1", "2", "3"]}
        queued = app.redis.llen(f"rq:queue:{app.config['RQ_ALERTS_QUEUE']}")
        assert queued == 10, "one delivery job per alert, enqueued after the commit"
        notes = db.session.scalars(sa.select(Notification).where(Notification.name == "alert_fired")).all()
        assert sorted(note.get_data()["count"] for note in notes) == [1, 1, 3, 5]


# --- with the emulator and real workers -----------------------------------------------------------


def verify_signature(secret: str, record: dict) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), record["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(record["headers"]["X-PubSub-Monitor-Signature"], expected)


def test_exactly_one_signed_delivery_per_matching_message(
    app, client, auth, emulator, pubsub_names, worker_factory, receiver_factory
):
    receiver = receiver_factory()
    signed_alice(app, auth, pubsub_names["subscription"])
    created = create_rule_over_http(client, auth, receiver.url, subscription=pubsub_names["subscription"])
    assert created.status_code == 201, created.get_json()
    rule_id, secret = created.get_json()["id"], created.get_json()["secret"]
    worker_factory()
    start_polling(client, auth, pubsub_names["subscription"])
    before_publish = datetime.now(UTC)
    matching_ids = publish(pubsub_names["topic_path"], [MATCHING | {"n": str(n)} for n in range(10)])
    publish(pubsub_names["topic_path"], [OTHER | {"n": str(n)} for n in range(10)])
    wait_until(lambda: stored_count(app) == 20, timeout=60, message="20 stored messages")
    wait_until(lambda: len(receiver.delivered()) >= 10, timeout=30, message="10 deliveries")
    holds_for(lambda: len(receiver.requests) == 10, NOTHING_MORE_SECONDS, message="exactly 10 requests")

    delivered = receiver.delivered()
    delivery_ids = {record["headers"]["X-PubSub-Monitor-Delivery"] for record in delivered}
    assert len(delivery_ids) == 10
    assert sorted(record["json"]["message_id"] for record in delivered) == sorted(matching_ids)
    assert all(verify_signature(secret, record) for record in delivered)
    assert not verify_signature("not-the-secret", delivered[0])
    body = delivered[0]["json"]
    assert body["rule"] == {"id": rule_id, "name": "Build failed"} and body["digest"] is False
    assert body["subscription"] == pubsub_names["subscription_path"]
    assert body["attributes"]["status"] == "FAILURE" and body["data"] == '{"build": "b-1"}'
    assert body["data_encoding"] == "text" and body["publish_time"].endswith("Z")
    assert body["url"].startswith(app.config["PUBLIC_URL"] + "/useritems/")

    # The Live page's notifications carry the firings.
    notes = [entry for entry in client.get("/notifications?since=0").get_json() if entry["name"] == "alert_fired"]
    assert sum(entry["data"]["count"] for entry in notes) == 10

    # Redelivery: seek the subscription back before the publishes; Pub/Sub hands every message out
    # again, the worker stores none of them twice, and nothing fires.
    with app.app_context():
        task = db.session.scalar(sa.select(Task).where(Task.user_id == 1))
        stored_before = task.stored_count
    pubsub_v1.SubscriberClient().seek(request={"subscription": pubsub_names["subscription_path"],
                                               "time": before_publish})
    holds_for(lambda: len(receiver.requests) == 10 and stored_count(app) == 20, NOTHING_MORE_SECONDS + 2,
              message="nothing more fired after the redelivery")
    with app.app_context():
        assert db.session.get(Task, task.id).stored_count == stored_before
    history = client.get(f"/alerts/{rule_id}.json").get_json()["deliveries"]
    assert len(history) == 10 and {entry["state"] for entry in history} == {"delivered"}
    latencies = sorted(entry["latency_seconds"] for entry in history)
    print(f"\ncommit-to-receiver latency over {len(latencies)} deliveries: p50 {statistics.median(latencies):.3f} s, "
          f"max {latencies[-1]:.3f} s")


def test_failed_deliveries_are_retried_until_delivered(
    app, client, auth, emulator, pubsub_names, worker_factory, receiver_factory
):
    receiver = receiver_factory(fail_first=3)
    signed_alice(app, auth, pubsub_names["subscription"])
    rule_id = create_rule_over_http(client, auth, receiver.url, format="slack").get_json()["id"]
    worker_factory(ALERT_BACKOFF_SECONDS="0.3")
    start_polling(client, auth, pubsub_names["subscription"])
    publish(pubsub_names["topic_path"], [MATCHING, MATCHING])
    wait_until(lambda: len(receiver.delivered()) == 2, timeout=60, message="both alerts delivered")
    history = client.get(f"/alerts/{rule_id}.json").get_json()["deliveries"]
    assert {entry["state"] for entry in history} == {"delivered"}
    # Three 500s, spread over the two alerts, then one success each.
    assert sum(entry["attempts"] for entry in history) == 5
    assert any(entry["attempts"] > 1 and entry["last_error"] == "HTTP 500 from the receiver" for entry in history)
    assert all(set(record["json"]) == {"text"} and "Build failed" in record["json"]["text"]
               for record in receiver.delivered())
    page = client.get(f"/alerts/{rule_id}").get_data(as_text=True)
    assert "HTTP 500 from the receiver" in page


def test_a_delivery_cut_by_kill_9_is_delivered_by_the_next_worker(
    app, client, auth, require_postgres, emulator, pubsub_names, worker_factory, receiver_factory
):
    receiver = receiver_factory(hold_first=True)
    signed_alice(app, auth, pubsub_names["subscription"])
    rule_id = create_rule_over_http(client, auth, receiver.url).get_json()["id"]
    lease = {"ALERT_LEASE_SECONDS": "2"}
    first = worker_factory(**lease)
    start_polling(client, auth, pubsub_names["subscription"])
    publish(pubsub_names["topic_path"], [MATCHING])
    assert receiver.first_arrived.wait(60), "the first delivery never reached the receiver"
    os.kill(first.process.pid, signal.SIGKILL)  # the worker's own process, where its courier delivers
    first.process.wait(10)
    (alert,) = alerts_of(app, rule_id)
    assert alert.state == "delivering" and alert.attempts == 1
    # Once the lease has run out, a new worker's maintenance step takes the delivery up again.
    wait_until(lambda: (datetime.now(UTC) - alert.claimed_at.replace(tzinfo=UTC)).total_seconds() > 2.5,
               timeout=10, message="the lease to run out")
    worker_factory(**lease)
    wait_until(lambda: receiver.delivered(), timeout=60, message="the delivery after the restart")
    (record,) = receiver.delivered()
    assert record["headers"]["X-PubSub-Monitor-Delivery"] == str(alert.id)
    assert receiver.requests[0]["headers"]["X-PubSub-Monitor-Delivery"] == str(alert.id)
    (alert,) = alerts_of(app, rule_id)
    assert alert.state == "delivered" and alert.attempts == 2


def test_the_rate_limit_sends_a_digest_for_the_rest_and_loses_nothing(
    app, client, auth, emulator, pubsub_names, worker_factory, receiver_factory
):
    """200 matches in a minute: at most ALERT_MAX_PER_MINUTE (60) single deliveries, and digests
    whose counts make up the other 140."""
    receiver = receiver_factory()
    signed_alice(app, auth, pubsub_names["subscription"])
    rule_id = create_rule_over_http(client, auth, receiver.url, subscription=pubsub_names["subscription"]
                                    ).get_json()["id"]
    # The digest is sent a second after its first firing, not after a minute, to keep the test short.
    worker_factory(ALERT_DIGEST_SECONDS="1")
    start_polling(client, auth, pubsub_names["subscription"])
    started = time.monotonic()
    # 200 matching messages, and 20 others among them that the digest's link must leave out.
    messages = [MATCHING | {"n": str(n)} for n in range(200)]
    for n in range(20):
        messages.insert(11 * n + 5, OTHER | {"n": f"other-{n}"})
    publish(pubsub_names["topic_path"], messages)

    def digested() -> int:
        return sum(record["json"]["count"] for record in receiver.delivered() if record["json"]["digest"])

    def singles() -> list[dict]:
        return [record for record in receiver.delivered() if not record["json"]["digest"]]

    wait_until(lambda: len(singles()) + digested() == 200, timeout=90, message="200 firings accounted for")
    assert time.monotonic() - started < 60, "the test must stay within the limit's minute"
    holds_for(lambda: len(receiver.requests) == len(receiver.delivered()), NOTHING_MORE_SECONDS,
              message="no delivery beyond the 200 firings")
    assert len(singles()) == 60
    assert digested() == 140
    assert len({record["json"]["message_id"] for record in singles()}) == 60
    digest = next(record["json"] for record in receiver.delivered() if record["json"]["digest"])
    assert digest["rule"]["id"] == rule_id and digest["count"] >= 1
    # Its link lists the messages it counted: the search for the rule's condition, newest first.
    link = urlsplit(digest["messages_url"])
    assert f"{link.scheme}://{link.netloc}" == app.config["PUBLIC_URL"].rstrip("/") and link.path == "/explore"
    assert parse_qs(link.query) == {"filter": [CONDITION], "sub": [pubsub_names["subscription_path"]]}
    assert client.get(digest["messages_url"]).status_code == 200
    listed = client.get("/explore/items", query_string={**parse_qs(link.query), "before": 2**62}).get_json()
    with app.app_context():
        newest = db.session.scalars(sa.select(UserItem.id).where(UserItem.attributes_json.contains('"FAILURE"'))
                                    .order_by(UserItem.id.desc()).limit(len(listed["ids"])))
        assert listed["ids"] == list(newest) and len(listed["ids"]) >= 20


def test_deleting_a_user_deletes_their_rules_and_alerts(app, client, auth):
    from app.models import AlertRule, User
    from app.users import delete_user

    user_id = signed_alice(app, auth)
    rule_id = create_rule_over_http(client, auth, "http://127.0.0.1:9/").get_json()["id"]
    client.post(f"/alerts/{rule_id}/test", headers={"X-CSRFToken": auth.csrf_token("/alerts")})
    assert len(alerts_of(app, rule_id)) == 1
    with app.app_context():
        delete_user(db.session.get(User, user_id))
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AlertRule)) == 0
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Alert)) == 0


def test_an_edited_or_disabled_rule_fires_as_it_now_says(app, client, auth):
    from app.alerts.evaluate import RuleEvaluator
    from app.pubsub.writer import BatchWriter
    from tests.test_subscriber import sample_row

    user_id = signed_alice(app, auth)
    rule_id = create_rule_over_http(client, auth, "http://127.0.0.1:9/").get_json()["id"]
    token = auth.csrf_token("/alerts")
    edited = client.post(f"/alerts/{rule_id}", data={"name": "Timeouts", "condition": 'attributes.status = "TIMEOUT"',
                                                     "url": "http://127.0.0.1:9/", "format": "slack", "enabled": "y"},
                         headers={"Accept": "application/json", "X-CSRFToken": token})
    assert edited.status_code == 200 and edited.get_json()["name"] == "Timeouts"
    refused = client.post(f"/alerts/{rule_id}", data={"name": "x", "condition": "NOT", "url": "http://127.0.0.1:9/"},
                          headers={"Accept": "application/json", "X-CSRFToken": token})
    assert refused.status_code == 400 and "Condition" in refused.get_json()["error"]
    subscription = "projects/test-project/subscriptions/sub-a"

    def store(message_id: str, status: str) -> None:
        row = sample_row(user_id, message_id, subscription) | {"attributes_json": json.dumps({"status": status})}
        with app.app_context():
            BatchWriter(db.engine, user_id, evaluator=RuleEvaluator(user_id, subscription)).write([row])

    store("1", "FAILURE")
    store("2", "TIMEOUT")
    with app.app_context():
        # Item ids have gaps (the writer may take one from the sequence): find message 2's.
        timeout_item = db.session.scalar(sa.select(UserItem.id).where(UserItem.message_id == "2"))
    assert [alert.user_item_id for alert in alerts_of(app, rule_id)] == [timeout_item]
    assert client.post(f"/alerts/{rule_id}/enabled", data={"enabled": "0"},
                       headers={"Accept": "application/json", "X-CSRFToken": token}).get_json()["enabled"] is False
    store("3", "TIMEOUT")
    assert len(alerts_of(app, rule_id)) == 1, "a disabled rule fires nothing"


@pytest.mark.parametrize("condition", [
    'attributes.status = "FAILURE"', 'attributes.status = "FAILURE" AND attributes:repo',
    'attributes.status = "FAILURE" OR attributes.status = "TIMEOUT"', 'NOT attributes.status = "FAILURE"',
    'data.status = "FAILURE"', 'data.status = "FAILURE" AND attributes.kind = "build"', 'data:"FAIL"',
    'data.count = "5"', 'data.count = "50"', 'data.ok = "true"', 'data.steps[1].name = "push"', 'data.status = ""',
    '-data:"FAIL"', 'data.status = "é"',
])
def test_the_prefilter_never_rejects_a_message_the_condition_matches(condition):
    """Prefilter.rejects is a shortcut: whenever it rejects, the full evaluation must say no too."""
    from app.alerts.evaluate import Prefilter
    from app.filterlang import parse

    rule_filter = parse(condition, extensions=True)
    prefilter = Prefilter(rule_filter)
    attribute_sets = [{}, {"status": "FAILURE"}, {"status": "TIMEOUT", "repo": "r"}, {"status": 5},
                      {"status": "FAILURE", "kind": "build", "repo": "r"}]
    data_values = [None, b"\xff\xfe", "not json", '{"status": "FAILURE"}', '{"status": "\\u0046AILURE"}',
                   '{"count": 5}', '{"count": 5.0}', '{"count": 5e0}', '{"count": 5e1}', '{"ok": true}',
                   '{"status": ""}',
                   '{"steps": [{"name": "build"}, {"name": "push"}]}', '{"status": "\\u00e9"}', '{"status": "é"}']
    matched = 0
    for attributes in attribute_sets:
        for data in data_values:
            if rule_filter.matches(attributes, data):
                matched += 1
                assert not prefilter.rejects(attributes, data), (condition, attributes, data)
    assert matched or condition.startswith("data.status = \"\""), "the table should exercise a match"


def test_maintenance_requeues_stuck_and_lost_deliveries_and_prunes_old_history(app, client, auth):
    from datetime import timedelta

    from app.alerts.delivery import recover_stuck

    signed_alice(app, auth)
    rule_id = create_rule_over_http(client, auth, "http://127.0.0.1:9/").get_json()["id"]
    now = datetime.now(UTC)
    ago = {"minutes": timedelta(minutes=5), "days": timedelta(days=40)}
    with app.app_context():
        rows = {
            "old": Alert(rule_id=rule_id, state="delivered", created_at=now - ago["days"],
                         next_attempt_at=now - ago["days"], delivered_at=now - ago["days"]),
            "recent": Alert(rule_id=rule_id, state="delivered", created_at=now, next_attempt_at=now, delivered_at=now),
            "stuck": Alert(rule_id=rule_id, state="delivering", attempts=1, created_at=now - ago["minutes"],
                           next_attempt_at=now - ago["minutes"], claimed_at=now - ago["minutes"]),
            "lost": Alert(rule_id=rule_id, state="pending", created_at=now - ago["minutes"],
                          next_attempt_at=now - ago["minutes"]),
            "waiting": Alert(rule_id=rule_id, state="pending", attempts=2, created_at=now - ago["minutes"],
                             next_attempt_at=now + ago["minutes"]),
        }
        db.session.add_all(rows.values())
        db.session.commit()
        ids = {name: row.id for name, row in rows.items()}
        assert recover_stuck() == 2
        states = dict(db.session.execute(sa.select(Alert.id, Alert.state)).all())
    assert ids["old"] not in states
    assert states[ids["stuck"]] == "pending" and states[ids["lost"]] == "pending"
    assert states[ids["recent"]] == "delivered" and states[ids["waiting"]] == "pending"
    assert app.redis.llen(f"rq:queue:{app.config['RQ_ALERTS_QUEUE']}") == 2


def test_an_idle_worker_sends_a_test_delivery_and_logs_no_secret(app, client, auth, worker_factory,
                                                                receiver_factory):
    """The delivery job path (no polling, so no courier): the job on the alerts queue, in the worker's process."""
    receiver = receiver_factory(fail_first=1)
    signed_alice(app, auth)
    created = create_rule_over_http(client, auth, receiver.url + "?token=hook-token-in-the-url").get_json()
    worker = worker_factory(ALERT_BACKOFF_SECONDS="0.3")
    token = auth.csrf_token("/alerts")
    page = client.post(f"/alerts/{created['id']}/test", data={"csrf_token": token}, follow_redirects=True)
    assert "Test sent" in page.get_data(as_text=True)
    wait_until(lambda: receiver.delivered(), timeout=60, message="the test delivery")
    (record,) = receiver.delivered()
    assert record["json"]["test"] is True and verify_signature(created["secret"], record)
    history = client.get(f"/alerts/{created['id']}.json").get_json()["deliveries"]
    assert [(entry["kind"], entry["state"], entry["attempts"]) for entry in history] == [("test", "delivered", 2)]
    log = worker.log()
    assert "deliver_alert" in log, "the worker ran the delivery job"
    assert created["secret"] not in log and "hook-token-in-the-url" not in log


def test_a_slack_digest_links_to_the_messages_and_to_the_rule(app):
    from app.alerts.delivery import slack_text
    from app.models import AlertRule

    body = {"test": False, "digest": True, "count": 140, "subscription": None,
            "url": "https://monitor.example.com/alerts/3",
            "messages_url": "https://monitor.example.com/explore?filter=attributes.status+%3D+%22FAILURE%22"}
    with app.app_context():
        text = slack_text(body, AlertRule(name="Build failed"))
    assert text.startswith("Alert rule *Build failed* matched 140 more messages on any subscription")
    assert text.endswith(f"<{body['messages_url']}|See the messages> · <{body['url']}|the rule>")
