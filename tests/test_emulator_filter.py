"""Subscription filters on the emulator: it accepts a filter and delivers every message anyway, so the
poller applies the filter itself, acking what it leaves out, as Pub/Sub would. Real `rq worker`
processes, the real emulator."""

from __future__ import annotations

import json
import logging
import uuid

import sqlalchemy as sa
from google.cloud import pubsub_v1

from app.extensions import db
from app.models import UserItem
from app.pubsub.client import make_subscriber_client
from app.pubsub.filtering import LocalFilter, filters_locally
from tests.conftest import TEST_PROJECT, create_user, holds_for, wait_until
from tests.test_polling import post, progress_notifications, status

FAILURES = 'attributes.status = "FAILURE"'
ACK_DEADLINE_SECONDS = 10  # Pub/Sub's least


def filtered_subscription(topic_path: str, expression: str) -> dict:
    """A subscription on the topic, created with a filter through the emulator's own client."""
    subscriber = pubsub_v1.SubscriberClient()
    name = f"filtered-{uuid.uuid4().hex[:10]}"
    path = subscriber.subscription_path(TEST_PROJECT, name)
    subscriber.create_subscription(request={"name": path, "topic": topic_path, "filter": expression,
                                            "ack_deadline_seconds": ACK_DEADLINE_SECONDS})
    assert subscriber.get_subscription(subscription=path).filter == expression
    subscriber.close()
    return {"name": name, "path": path}


def publish(topic_path: str, attribute_maps: list[dict]) -> list[str]:
    publisher = pubsub_v1.PublisherClient()
    futures = [publisher.publish(topic_path, f"message {index}".encode(), **attributes)
               for index, attributes in enumerate(attribute_maps)]
    return [future.result(timeout=30) for future in futures]


def stored_ids(app) -> set[str]:
    with app.app_context():
        ids = set(db.session.scalars(sa.select(UserItem.message_id)))
        db.session.rollback()
        return ids


def test_on_the_emulator_only_matching_messages_are_stored_and_the_rest_are_acked(
    app, client, auth, emulator, pubsub_names, worker_factory
):
    subscription = filtered_subscription(pubsub_names["topic_path"], FAILURES)
    create_user(app, "alice", subscriptions=(subscription["name"],))
    auth.login()
    worker_factory()
    assert post(client, auth, action="start", subscription=subscription["name"]).status_code == 202
    wait_until(lambda: status(client, subscription["name"])["status"] == "polling", 60, message="polling")

    mix = [{"status": "SUCCESS"}, {"status": "FAILURE"}, {"status": "WORKING"}, {"status": "FAILURE"},
           {}, {"status": "failure"}, {"status": "FAILURE", "extra": "x"}, {"state": "FAILURE"}]
    message_ids = publish(pubsub_names["topic_path"], mix)
    matching = {message_id for message_id, attributes in zip(message_ids, mix, strict=True)
                if attributes.get("status") == "FAILURE"}
    assert len(matching) == 3

    wait_until(lambda: stored_ids(app) == matching, 30, message="the three matching messages stored")

    def filtered_reported():
        notes = [note for note in progress_notifications(app)
                 if note["subscription"] == subscription["path"] and note.get("local_filter")]
        return notes and notes[-1]["local_filter"]["filtered_count"] == len(mix) - 3 and notes[-1]

    note = wait_until(filtered_reported, 30, message="the filtered count in the progress")
    assert note["local_filter"]["expression"] == FAILURES and note["local_filter"]["applied"] is True
    assert note["local_filter"]["problem"] is None and note["stored_count"] == 3

    assert post(client, auth, action="stop", subscription=subscription["name"]).status_code == 202
    wait_until(lambda: status(client, subscription["name"])["state"] == "finished", 30, message="finished")
    assert stored_ids(app) == matching

    # The backlog is empty: every message was acked, the filtered ones included. A message that was
    # only leased would come back once its ack deadline passed, so look for longer than that.
    subscriber = pubsub_v1.SubscriberClient()
    try:
        def nothing_to_pull() -> bool:
            response = subscriber.pull(request={"subscription": subscription["path"], "max_messages": 100,
                                                "return_immediately": True}, timeout=5)
            return not response.received_messages

        holds_for(nothing_to_pull, ACK_DEADLINE_SECONDS + 3, interval=1, message="an empty backlog")
    finally:
        subscriber.close()


def test_the_poller_filters_only_on_the_emulator():
    """Google Cloud applies a subscription's filter itself; the app must not filter a second time."""
    assert filters_locally({"PUBSUB_EMULATOR_HOST": "localhost:8085"}) is True
    assert filters_locally({"PUBSUB_EMULATOR_HOST": ""}) is False
    assert filters_locally({"PUBSUB_EMULATOR_HOST": None, "GOOGLE_APPLICATION_CREDENTIALS": "key.json"}) is False
    assert filters_locally({}) is False


def rows(*attribute_maps: dict) -> list[dict]:
    return [{"attributes_json": json.dumps(attributes), "message_id": str(index)}
            for index, attributes in enumerate(attribute_maps)]


def test_local_filter_reads_the_subscriptions_filter_and_keeps_what_it_matches(app, emulator, pubsub_names):
    subscription = filtered_subscription(pubsub_names["topic_path"], FAILURES)
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    try:
        local = LocalFilter(client, subscription["path"])
        local.refresh()
        kept = local.keep(rows({"status": "FAILURE"}, {"status": "SUCCESS"}, {}))
        assert [row["message_id"] for row in kept] == ["0"]
        assert local.progress() == {"expression": FAILURES, "applied": True, "filtered_count": 2, "problem": None}
        # A subscription without a filter keeps everything.
        plain = LocalFilter(client, pubsub_names["subscription_path"])
        plain.refresh()
        assert len(plain.keep(rows({"status": "SUCCESS"}, {}))) == 2 and plain.filtered_count == 0
    finally:
        client.close()


def test_a_filter_that_cannot_be_read_stores_everything_and_says_why_once(app, emulator, caplog):
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    try:
        local = LocalFilter(client, f"projects/{TEST_PROJECT}/subscriptions/missing-{uuid.uuid4().hex[:8]}")
        with caplog.at_level(logging.WARNING, logger="app.pubsub.filtering"):
            local.refresh()
            local.refresh()
        assert len(local.keep(rows({"status": "SUCCESS"}, {}))) == 2
        assert local.progress()["applied"] is False and "NotFound" in local.progress()["problem"]
        assert len([record for record in caplog.records if "filter" in record.getMessage()]) == 1
    finally:
        client.close()


def test_a_filter_our_parser_rejects_stores_everything_and_says_why_once(app, emulator, pubsub_names, caplog):
    """The emulator takes any text as a filter; one the app cannot read must never cost a message."""
    unreadable = 'attributes.status = "FAILURE" and attributes:retry'  # lower-case `and`
    subscription = filtered_subscription(pubsub_names["topic_path"], unreadable)
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    try:
        local = LocalFilter(client, subscription["path"])
        with caplog.at_level(logging.WARNING, logger="app.pubsub.filtering"):
            local.refresh()
            local.refresh()  # a reconnect reads it again, and does not say it again
        assert len(local.keep(rows({"status": "SUCCESS"}, {"status": "FAILURE"}, {}))) == 3
        progress = local.progress()
        assert progress["applied"] is False and progress["filtered_count"] == 0
        assert "not understood" in progress["problem"] and "every message is stored" in progress["problem"]
        assert len([record for record in caplog.records if unreadable in record.getMessage()]) == 1
    finally:
        client.close()
