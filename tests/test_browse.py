"""The project page: the topics and subscriptions the credentials can list, paged, read-only, on the emulator."""

from __future__ import annotations

import html
import re
import urllib.parse
import uuid

import pytest
from google.api_core import exceptions as api_exceptions
from google.protobuf import duration_pb2

from app.pubsub.client import SetupError, make_publisher_client, make_subscriber_client
from app.subscriptions import taps
from tests.conftest import create_user


@pytest.fixture
def project(app, emulator):
    """A project of this test's own on the emulator (the shared test project fills up with other tests' topics)."""
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host
    app.config["GCP_PROJECT_ID"] = f"browse-{uuid.uuid4().hex[:10]}"
    return app.config["GCP_PROJECT_ID"]


def make_topics(app, project: str, ids: list[str]) -> list[str]:
    publisher = make_publisher_client(app.config)
    paths = [f"projects/{project}/topics/{topic_id}" for topic_id in ids]
    for path in paths:
        publisher.create_topic(request={"name": path, "labels": {"team": "builds"}})
    publisher.transport.close()
    return paths


def topic_names(page: str) -> list[str]:
    return re.findall(r'<tr class="topic-row" data-name="([^"]+)"', page)


def subscription_names(page: str) -> list[str]:
    return re.findall(r'<tr class="project-subscription-row" data-name="([^"]+)"', page)


def test_any_signed_in_user_sees_topics_and_subscriptions_with_their_settings(app, client, auth, project):
    create_user(app, "carol")  # not an admin
    topic, dead_letters = make_topics(app, project, ["orders", "orders-dead"])
    subscriber = make_subscriber_client(app.config)
    detailed = f"projects/{project}/subscriptions/orders-audit"
    plain = f"projects/{project}/subscriptions/orders-plain"
    subscriber.create_subscription(request={
        "name": detailed, "topic": topic, "filter": 'attributes.region = "eu"', "ack_deadline_seconds": 45,
        "message_retention_duration": duration_pb2.Duration(seconds=36 * 3600),
        "dead_letter_policy": {"dead_letter_topic": dead_letters, "max_delivery_attempts": 7},
        "expiration_policy": {"ttl": duration_pb2.Duration(seconds=2 * 86400)},
        "labels": {"created-by": "pubsub-monitor", "user": "dave"},
    })
    subscriber.create_subscription(request={"name": plain, "topic": topic, "expiration_policy": {}})
    subscriber.close()

    assert client.get("/project").status_code == 302  # sign-in first
    auth.login("carol")
    assert 'href="/project"' in client.get("/subscriptions").get_data(as_text=True)  # in the navbar
    page = client.get("/project").get_data(as_text=True)
    assert topic_names(page) == [topic, dead_letters]
    watch_links = re.findall(r'class="btn btn-sm btn-primary watch-link" href="([^"]+)"', page)
    first = urllib.parse.urlsplit(html.unescape(watch_links[0]))
    assert (first.path, urllib.parse.parse_qs(first.query), first.fragment) == \
        ("/subscriptions", {"topic": [topic]}, "watch-topic")
    assert "team=builds" in page
    assert sorted(subscription_names(page)) == [detailed, plain]

    def cells(name: str) -> dict[str, str]:
        row = re.search(rf'data-name="{name}">(.*?)</tr>', page, re.S).group(1)
        found = dict(re.findall(r'<td class="small sub-([a-z-]+)">(.*?)</td>', row, re.S))
        return {key: html.unescape(re.sub(r"<[^>]+>", "", value)).strip() for key, value in found.items()}

    # Names in the app's own project show as their ids (the full path is their title).
    assert f'<code title="{topic}">orders</code>' in page
    assert cells(detailed) == {
        "topic": "orders", "filter": 'attributes.region = "eu"', "ack-deadline": "45 s", "retention": "1 day 12 hours",
        "dead-letter": "to orders-dead after 7 attempts", "expiration": "after 2 days of inactivity",
    }
    assert cells(plain) == {
        "topic": "orders", "filter": "none", "ack-deadline": "10 s", "retention": "7 days", "dead-letter": "none",
        "expiration": "never",
    }
    assert ">tap</span>" in re.search(rf'data-name="{detailed}">(.*?)</tr>', page, re.S).group(1)


def test_watch_leads_to_the_tap_form_with_the_topic_filled_in(app, client, auth, project):
    create_user(app, "carol")
    [topic] = make_topics(app, project, ["payments"])
    auth.login("carol")
    page = client.get("/subscriptions", query_string={"topic": topic}).get_data(as_text=True)
    field = re.search(r'<input[^>]*name="topic"[^>]*>', page).group(0)
    assert f'value="{topic}"' in field


def test_pages_follow_pubsubs_page_tokens(app, client, auth, project):
    app.config["BROWSE_PAGE_SIZE"] = 2
    create_user(app, "carol")
    topics = make_topics(app, project, [f"topic-{number:02d}" for number in range(5)])
    subscriber = make_subscriber_client(app.config)
    subscriptions = [f"projects/{project}/subscriptions/sub-{number:02d}" for number in range(3)]
    for path in subscriptions:
        subscriber.create_subscription(request={"name": path, "topic": topics[0]})
    subscriber.close()
    auth.login("carol")

    seen_topics, seen_subscriptions, pages = [], [], 0
    url = "/project"
    while url:
        page = client.get(url).get_data(as_text=True)
        pages += 1
        assert len(topic_names(page)) <= 2 and len(subscription_names(page)) <= 2
        seen_topics += topic_names(page)
        if pages == 1:
            seen_subscriptions += subscription_names(page)
            following = re.search(r'<a class="[^"]*next-subscriptions_page" href="([^"]*)"', page)
            subscriptions_next = html.unescape(following.group(1))
        links = re.findall(r'<a class="[^"]*next-topics_page" href="([^"]*)"', page)
        url = html.unescape(links[0]) if links else None
        assert pages < 10
    assert pages == 3
    assert seen_topics == topics
    # The subscriptions' own pager, which keeps the topics' page where it was.
    page = client.get(subscriptions_next).get_data(as_text=True)
    seen_subscriptions += subscription_names(page)
    assert seen_subscriptions == subscriptions
    assert "First page" in page and "next-page" not in page.split('id="subscriptions"')[1]


def test_a_refused_listing_says_which_role_is_missing(app, client, auth, project):
    """The pure error mapping, given the exceptions the client raises; then the page with an unusable setup."""
    denied = taps.describe_browse_error(api_exceptions.PermissionDenied("denied"), "topics", "p")
    assert "Permission denied listing the topics of project p" in denied and "roles/pubsub.viewer" in denied
    assert "pubsub.subscriptions.list" in taps.describe_browse_error(
        api_exceptions.PermissionDenied("denied"), "subscriptions", "p")
    assert "does not exist" in taps.describe_browse_error(api_exceptions.NotFound("x"), "topics", "p")
    assert "Try again shortly" in taps.describe_browse_error(api_exceptions.ServiceUnavailable("x"), "topics", "p")
    assert "Cannot reach Pub/Sub: no key" in taps.describe_browse_error(SetupError("no key"), "topics", "p")

    # A real failure through the page: no emulator and a key file that does not exist.
    create_user(app, "carol")
    app.config["PUBSUB_EMULATOR_HOST"] = None
    app.config["GOOGLE_APPLICATION_CREDENTIALS"] = "/nonexistent/key.json"
    auth.login("carol")
    response = client.get("/project")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert page.count('class="alert alert-warning browse-error"') == 2
    assert "Cannot reach Pub/Sub: GOOGLE_APPLICATION_CREDENTIALS names a key file that does not exist" in page
