"""Watching a topic in Chromium: browse the project, Watch a topic, check a filter on stored messages,
create the tap, start polling it on a real worker, and see published messages arrive on the Live page.
Screenshots of the project page and the tap form (light, dark, phone) go to test-artifacts/."""

from __future__ import annotations

import json
import re
import uuid

import pytest
import sqlalchemy as sa
from axe_playwright_python.sync_playwright import Axe
from google.cloud import pubsub_v1
from playwright.sync_api import expect

from app.extensions import db
from app.models import SUBSCRIPTION_EXISTING, SUBSCRIPTION_TAP, Subscription
from tests.conftest import create_user, store_items
from tests.test_accessibility import BLOCKING_IMPACTS, violations_on
from tests.test_browser import LIVE_UPDATE_MS, sign_in
from tests.test_browser_pages import new_context, shoot  # noqa: F401 (the fixture)

pytestmark = pytest.mark.browser


@pytest.fixture
def watched_topic(app, emulator):
    """A project of the test's own on the emulator with one topic, and alice, who already stored six of
    its messages through an existing subscription (the filter check looks at those)."""
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host
    project = app.config["GCP_PROJECT_ID"] = f"watch-{uuid.uuid4().hex[:10]}"
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=f"projects/{project}/topics/builds").name
    existing = subscriber.create_subscription(name=f"projects/{project}/subscriptions/builds-ci", topic=topic).name
    subscriber.close()
    alice = create_user(app, "alice")
    with app.app_context():
        db.session.add(Subscription(user_id=alice, name=existing, kind=SUBSCRIPTION_EXISTING, topic=topic))
        db.session.commit()
    statuses = ["SUCCESS", "FAILURE", "SUCCESS", "WORKING", "FAILURE", "SUCCESS"]
    store_items(app, alice, [{"data": {"build": number}, "attributes": {"status": status}, "subscription": existing}
                             for number, status in enumerate(statuses)])
    return {"project": project, "topic": topic, "existing": existing, "user_id": alice, "publisher": publisher}


def test_browse_watch_check_a_filter_create_the_tap_and_see_its_messages_arrive(
        app, new_context, watched_topic, worker_factory):  # noqa: F811
    page = sign_in(new_context(viewport={"width": 1366, "height": 900}))
    page.get_by_role("link", name="Project").click()
    topic_row = page.locator(f'tr.topic-row[data-name="{watched_topic["topic"]}"]')
    expect(topic_row).to_be_visible()
    expect(page.locator(f'tr.project-subscription-row[data-name="{watched_topic["existing"]}"]')).to_be_visible()
    topic_row.get_by_role("link", name="Watch").click()
    page.wait_for_url(re.compile(r"/subscriptions\?topic=.+#watch-topic$"))
    expect(page.locator("#topic")).to_have_value(watched_topic["topic"])

    # The dry run: a broken expression shows where it breaks, a good one what it would have matched.
    page.fill("#filter", 'attributes.status = FAILURE')
    page.click("#check-filter")
    error = page.locator("#filter-error")
    expect(error).to_contain_text(" at ")
    expect(page.locator("#filter.is-invalid")).to_be_visible()
    expect(page.locator("#filter-error .filter-pointer")).to_contain_text("^")
    shoot(page, "tap-form-filter-error.png", full_page=False)
    page.fill("#filter", 'attributes.status = "FAILURE"')
    page.click("#check-filter")
    expect(page.locator("#filter-check-summary")).to_have_text(
        f"Matches 2 of the last 6 messages on topic {watched_topic['topic']}; the newest:")
    expect(page.locator("#filter-check-sample li")).to_have_count(2)
    expect(page.locator("#filter-error")).to_have_count(0)

    page.click("#watch-submit")
    tap_row = page.locator('tr.subscription-row[data-kind="tap"]')
    expect(tap_row).to_have_count(1)
    expect(tap_row.locator(".kind-badge")).to_have_text("tap")
    expect(tap_row.locator(".subscription-filter")).to_have_text('attributes.status = "FAILURE"')
    tap_name = tap_row.get_attribute("data-name")
    with app.app_context():
        row = db.session.scalar(sa.select(Subscription).where(Subscription.name == tap_name))
        assert (row.kind, row.topic) == (SUBSCRIPTION_TAP, watched_topic["topic"])

    worker_factory()
    tap_row.locator(".start-button").click()
    expect(page.locator(f'tr.subscription-row[data-name="{tap_name}"] .stop-button')).to_be_visible()
    page.locator(f'tr.subscription-row[data-name="{tap_name}"]').get_by_role("link", name="live").click()
    page.wait_for_url(re.compile(r"/user/alice\?subscription="))
    publisher = watched_topic["publisher"]
    futures = [publisher.publish(watched_topic["topic"], json.dumps({"build": f"new-{number}"}).encode(),
                                 status="FAILURE") for number in range(3)]
    for future in futures:
        future.result(timeout=30)
    expect(page.locator("#useritems tr.useritem")).to_have_count(3, timeout=LIVE_UPDATE_MS + 60_000)
    expect(page.locator("#useritems")).to_contain_text("new-2")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_the_project_page_and_the_tap_form(app, new_context, watched_topic, scheme):  # noqa: F811
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.create_subscription(request={
        "name": f"projects/{watched_topic['project']}/subscriptions/builds-failures",
        "topic": watched_topic["topic"], "filter": 'attributes.status = "FAILURE"', "ack_deadline_seconds": 60,
        "labels": {"created-by": "pubsub-monitor", "user": "alice"}})
    subscriber.close()
    page = sign_in(new_context(color_scheme=scheme, viewport={"width": 1366, "height": 900}))
    for width, suffix in ((1366, ""), (375, "-phone")):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto("/project")
        expect(page.locator("tr.topic-row")).to_have_count(1)
        shoot(page, f"project{suffix}-{scheme}.png")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "the project page is too wide"
        page.goto(f"/subscriptions?topic={watched_topic['topic']}")
        page.fill("#filter", 'attributes.status = "FAILURE"')
        page.click("#check-filter")
        expect(page.locator("#filter-check-result")).to_be_visible()
        page.locator("#watch-topic").scroll_into_view_if_needed()
        shoot(page, f"tap-form{suffix}-{scheme}.png")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "the tap form is wider than the screen"
        if not suffix:
            # The form with a refused filter, and the project page, pass axe-core like every other page.
            page.fill("#filter", "attributes.status = ")
            page.click("#check-filter")
            expect(page.locator("#filter-error")).to_be_visible()
            blocking = [violation["id"] for violation in violations_on(page, Axe())
                        if violation["impact"] in BLOCKING_IMPACTS]
            page.goto("/project")
            blocking += [violation["id"] for violation in violations_on(page, Axe())
                         if violation["impact"] in BLOCKING_IMPACTS]
            assert blocking == []
