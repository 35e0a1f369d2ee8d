"""Pub/Sub out of reach: every call gives up within its own time, retries included, and says so.

A client call's `timeout` bounds one attempt, not the call: the library's default retry went on
trying an unreachable Pub/Sub for 60 s, so a page waited past gunicorn's 30 s (and the person got
no answer at all), and a failed ack killed the job's acker thread. Nothing listens on the discard
port (127.0.0.1:9), so each attempt fails at once and only the retry decides how long a call takes.
"""

from __future__ import annotations

import threading
import time

import pytest

from app.admin import publishing
from app.pubsub import filtering, sources
from app.pubsub.client import make_subscriber_client
from app.pubsub.filtering import LocalFilter
from app.pubsub.sources import Batch, PullSource
from app.subscriptions import checks, taps
from tests.conftest import AuthActions, create_user
from tests.support import silent_server

UNREACHABLE = "127.0.0.1:9"
BOUND = 2.0  # each call's time in these tests, set on the module that owns it (retries in its first second)
# The most a bounded call may take here: its time, the last retry's sleep, and a slow machine.
LIMIT = BOUND + 2.0


@pytest.fixture
def unreachable(app, monkeypatch):
    app.config["PUBSUB_EMULATOR_HOST"] = UNREACHABLE
    for module, name in ((checks, "CHECK_TIMEOUT_SECONDS"), (taps, "CALL_TIMEOUT_SECONDS"),
                         (publishing, "PUBLISH_TIMEOUT_SECONDS"), (sources, "SETTLE_CALL_SECONDS"),
                         (sources, "GIVE_BACK_CALL_SECONDS"), (filtering, "READ_SECONDS")):
        monkeypatch.setattr(module, name, BOUND)
    return app


def signed_in(app, username: str, is_admin: bool = False):
    create_user(app, username, is_admin=is_admin)
    client = app.test_client()
    AuthActions(client).login(username)
    return client, AuthActions(client).csrf_token("/subscriptions")


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def add_subscription(app) -> tuple[str, float]:
    """Submit the form that adds an existing subscription; the page's words and the seconds it took."""
    client, token = signed_in(app, "alice")
    page, elapsed = timed(lambda: client.post("/subscriptions", data={"name": "orders", "csrf_token": token}))
    return " ".join(page.get_data(as_text=True).split()), elapsed


def test_adding_a_subscription_says_pubsub_did_not_answer_within_the_checks_time(unreachable):
    text, elapsed = add_subscription(unreachable)
    assert "Pub/Sub did not answer about projects/test-project/subscriptions/orders" in text
    assert elapsed < LIMIT, f"{elapsed:.1f} s"


def test_a_pubsub_that_takes_the_connection_and_never_answers_costs_the_checks_time_too(unreachable):
    # Each attempt then hangs until its timeout, which is what is left of the call's time.
    with silent_server() as port:
        unreachable.config["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
        text, elapsed = add_subscription(unreachable)
    assert "Pub/Sub did not answer about projects/test-project/subscriptions/orders" in text
    assert elapsed < LIMIT, f"{elapsed:.1f} s"


def test_watching_a_topic_says_pubsub_did_not_answer_within_the_calls_time(unreachable):
    client, token = signed_in(unreachable, "alice")
    page, elapsed = timed(lambda: client.post("/subscriptions", data={"topic": "orders", "csrf_token": token}))
    text = " ".join(page.get_data(as_text=True).split())
    assert "Pub/Sub did not answer while creating a tap on projects/test-project/topics/orders" in text
    assert elapsed < LIMIT, f"{elapsed:.1f} s"


def test_the_project_page_says_why_it_lists_nothing_within_two_calls_time(unreachable):
    client, _token = signed_in(unreachable, "alice")
    page, elapsed = timed(lambda: client.get("/project"))
    text = " ".join(page.get_data(as_text=True).split())
    assert page.status_code == 200
    assert "Pub/Sub did not list the topics of project test-project" in text
    assert "Pub/Sub did not list the subscriptions of project test-project" in text
    assert elapsed < 2 * LIMIT, f"{elapsed:.1f} s"


def test_publishing_from_the_admin_page_says_it_failed_within_the_publish_time(unreachable):
    client, _token = signed_in(unreachable, "root", is_admin=True)
    token = AuthActions(client).csrf_token("/admin/publish")
    page, elapsed = timed(lambda: client.post("/admin/publish", data={"topic": "orders", "data": "x",
                                                                       "csrf_token": token}))
    text = " ".join(page.get_data(as_text=True).split())
    assert "Pub/Sub did not answer while publishing to projects/test-project/topics/orders. Try again shortly." in text
    assert elapsed < LIMIT, f"{elapsed:.1f} s"


def test_acks_that_fail_are_given_up_on_and_the_acker_goes_on_to_the_next(unreachable):
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": UNREACHABLE})
    source = PullSource(client, "projects/test-project/subscriptions/orders", user_id=1, subscription="orders")
    source.open()  # its puller fails at once (the poller would reconnect); the acker and leaser run
    # Two acks wait in the acker's queue at most: the third ack() returns only once the first is settled.
    acked = threading.Event()

    def ack_three():
        for number in range(3):
            source.ack(Batch(rows=[], handles=[f"ack-{number}"]))
        acked.set()

    try:
        started = time.monotonic()
        threading.Thread(target=ack_three, daemon=True).start()
        assert acked.wait(3 * LIMIT), "the acker stopped taking acks"
        source.close(timeout=3 * LIMIT)
        elapsed = time.monotonic() - started
        assert not source._acker.is_alive()
        assert elapsed < 4 * LIMIT, f"{elapsed:.1f} s"
    finally:
        source.stop_receiving()
        client.close()


def test_the_local_filter_gives_up_reading_the_filter_within_its_time_and_says_why(unreachable):
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": UNREACHABLE})
    local_filter = LocalFilter(client, "projects/test-project/subscriptions/orders")
    try:
        _result, elapsed = timed(local_filter.refresh)
    finally:
        client.close()
    assert local_filter.filter is None
    assert local_filter.problem is not None and "could not read the subscription's filter (RetryError)" in \
        local_filter.problem
    assert elapsed < LIMIT, f"{elapsed:.1f} s"
