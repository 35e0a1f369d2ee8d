"""The filter dry-run, GET /filter_check: what an expression matches among the user's stored messages."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.filterlang import FilterSyntaxError, parse
from app.models import Subscription
from tests.conftest import TEST_PROJECT, create_user, store_items

STATUSES = ["SUCCESS", "FAILURE", "WORKING", "FAILURE", "QUEUED"]
FAILURES = 'attributes.status = "FAILURE"'


def sub_path(name: str) -> str:
    return f"projects/{TEST_PROJECT}/subscriptions/{name}"


def topic_path(name: str) -> str:
    return f"projects/{TEST_PROJECT}/topics/{name}"


def messages(count: int, subscription: str = "sub-a", prefix: str = "m") -> list[dict]:
    return [{"data": f"message {index}", "subscription": subscription, "message_id": f"{prefix}{index}",
             "attributes": {"status": STATUSES[index % len(STATUSES)], "n": str(index)}} for index in range(count)]


def check(client, expression: str, **scope) -> dict:
    response = client.get("/filter_check", query_string={"filter": expression, **scope})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return response.get_json()


def set_topic(app, user_id: int, subscription: str, topic: str) -> None:
    with app.app_context():
        row = db.session.scalar(sa.select(Subscription).where(Subscription.user_id == user_id,
                                                              Subscription.name == sub_path(subscription)))
        row.topic = topic_path(topic)
        db.session.commit()


def test_dry_run_counts_the_matches_among_the_users_messages_with_the_newest_as_a_sample(app, client, auth):
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    stored = messages(23)
    ids = store_items(app, alice, stored)
    store_items(app, bob, messages(40, prefix="bob"))  # all of them match as well, and are never counted
    auth.login("alice")

    answer = check(client, FAILURES)

    failing = [item_id for item_id, message in zip(ids, stored, strict=True)
               if message["attributes"]["status"] == "FAILURE"]
    assert answer["valid"] is True and answer["error"] is None
    assert answer["scanned"] == 23 and answer["complete"] is True
    assert answer["matched"] == len(failing) == 9
    assert (answer["scope"], answer["scope_kind"]) == ("all your subscriptions", "all")
    sample = answer["sample"]
    assert [row["id"] for row in sample] == sorted(failing, reverse=True)[:5]
    newest = sample[0]
    assert newest["message_id"] == "m21" and newest["attributes"] == {"status": "FAILURE", "n": "21"}
    assert newest["subscription"] == sub_path("sub-a")
    assert newest["publish_time"].endswith("Z")
    assert newest["url"] == f"/useritems/{newest['id']}"
    assert client.get(newest["url"]).status_code == 200


def test_empty_expression_matches_everything_and_a_miss_matches_nothing(app, client, auth):
    alice = create_user(app, "alice")
    store_items(app, alice, messages(7))
    auth.login("alice")
    assert (check(client, "")["matched"], check(client, "")["scanned"]) == (7, 7)
    nothing = check(client, 'attributes.status = "failure"')  # values compare case-sensitively
    assert (nothing["matched"], nothing["scanned"], nothing["sample"]) == (0, 7, [])
    missing = check(client, "NOT attributes:status")
    assert missing["matched"] == 0
    negated = check(client, f"NOT {FAILURES}")
    assert negated["matched"] == 7 - 3


@pytest.mark.parametrize("expression", [
    'attributes.status = ',
    'attributes.status = "FAILURE" AND',
    'attributes.a = "1" AND attributes.b = "2" OR attributes.c = "3"',
    'hasPrefix(attributes.status)',
    'attributes.status == "x"',
    "x" * 300,
])
def test_an_invalid_expression_is_explained_with_its_position_and_scans_nothing(app, client, auth, expression):
    alice = create_user(app, "alice")
    store_items(app, alice, messages(5))
    auth.login("alice")
    with pytest.raises(FilterSyntaxError) as raised:
        parse(expression)
    answer = check(client, expression)
    assert answer["valid"] is False
    assert answer["error"] == {"message": raised.value.message, "position": raised.value.position}
    assert 0 <= answer["error"]["position"] <= len(expression.encode())
    assert (answer["matched"], answer["scanned"], answer["sample"]) == (0, 0, [])


def test_the_error_position_points_where_the_expression_goes_wrong(app, client, auth):
    create_user(app, "alice")
    auth.login("alice")
    answer = check(client, 'attributes.status = ')
    assert answer["error"]["position"] == len('attributes.status = ')
    assert "string" in answer["error"]["message"]
    answer = check(client, 'attributes.status = "x" AND attributes.region = 7')
    assert answer["error"]["position"] == len('attributes.status = "x" AND attributes.region = ')


def test_scope_by_subscription_short_or_full(app, client, auth):
    alice = create_user(app, "alice", subscriptions=("sub-a", "sub-b"))
    store_items(app, alice, messages(10, "sub-a", "a") + messages(6, "sub-b", "b"))
    auth.login("alice")
    for name in ("sub-b", sub_path("sub-b")):
        answer = check(client, FAILURES, subscription=name)
        assert (answer["scope"], answer["scope_kind"]) == (f"subscription {sub_path('sub-b')}", "subscription")
        assert (answer["scanned"], answer["matched"]) == (6, 2)
        assert {row["subscription"] for row in answer["sample"]} == {sub_path("sub-b")}
    unknown = check(client, FAILURES, subscription="sub-z")
    assert (unknown["scanned"], unknown["matched"]) == (0, 0)


def test_scope_by_topic_covers_the_users_subscriptions_on_it_and_nobody_elses(app, client, auth):
    alice = create_user(app, "alice", subscriptions=("tap-1", "tap-2", "other"))
    bob = create_user(app, "bob", subscriptions=("tap-1", "bob-tap"))
    for user, name, topic in ((alice, "tap-1", "orders"), (alice, "tap-2", "orders"), (alice, "other", "billing"),
                              (bob, "tap-1", "orders"), (bob, "bob-tap", "orders")):
        set_topic(app, user, name, topic)
    store_items(app, alice, messages(5, "tap-1", "t1") + messages(4, "tap-2", "t2") + messages(8, "other", "o"))
    # Bob stores the same subscription's messages as his own copies, and has a tap of his own on the topic.
    store_items(app, bob, messages(5, "tap-1", "bt1") + messages(10, "bob-tap", "bt"))
    auth.login("alice")
    for name in ("orders", topic_path("orders")):
        answer = check(client, FAILURES, topic=name)
        assert answer["scope"] == f"topic {topic_path('orders')}"
        assert answer["scope_kind"] == "topic"
        assert answer["scanned"] == 9
        assert answer["matched"] == 2 + 2
        assert {row["message_id"][:2] for row in answer["sample"]} == {"t1", "t2"}
    assert check(client, FAILURES, topic="nothing-here")["scanned"] == 0


def test_the_scan_is_bounded_and_reads_the_newest_first(app, client, auth):
    app.config["FILTER_SCAN_MAX_MESSAGES"] = 12
    alice = create_user(app, "alice")
    stored = messages(30)
    ids = store_items(app, alice, stored)
    auth.login("alice")
    answer = check(client, FAILURES)
    newest = list(zip(ids, stored, strict=True))[-12:]
    assert answer["scanned"] == 12 and answer["limit"] == 12 and answer["complete"] is False
    assert answer["matched"] == sum(1 for _, message in newest if message["attributes"]["status"] == "FAILURE")
    assert min(row["id"] for row in answer["sample"]) >= newest[0][0]
    # Exactly the bound: everything was read.
    app.config["FILTER_SCAN_MAX_MESSAGES"] = 30
    assert check(client, FAILURES)["complete"] is True


def test_dry_run_needs_a_signed_in_user_and_one_scope_at_most(app, client, auth):
    alice = create_user(app, "alice")
    store_items(app, alice, messages(3))
    anonymous = client.get("/filter_check", query_string={"filter": FAILURES})
    assert anonymous.status_code in (302, 401)
    assert b"matched" not in anonymous.data
    auth.login("alice")
    both = client.get("/filter_check", query_string={"filter": FAILURES, "subscription": "sub-a", "topic": "t"})
    assert both.status_code == 400 and "not both" in both.get_json()["error"]


def test_conditions_on_the_data_are_a_subscription_filter_error_unless_asked_for(app, client, auth):
    alice = create_user(app, "alice")
    store_items(app, alice, [{"data": {"result": "boom"}}, {"data": {"result": "fine"}}, {"data": "boom as text"}])
    auth.login("alice")
    refused = check(client, 'data.result = "boom"')
    assert refused["valid"] is False and "alert conditions" in refused["error"]["message"]
    assert (check(client, 'data.result = "boom"', data=1)["matched"], check(client, 'data:"boom"', data=1)["matched"]) \
        == (1, 2)
