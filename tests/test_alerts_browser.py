"""The alerts pages in Debian's Chromium, under the strict CSP: create a rule (its secret shown
once), see a field error, and see a firing on the Live page."""

import json
import re

import pytest
from playwright.sync_api import expect

from app.extensions import db
from tests.conftest import ARTIFACTS, create_user
from tests.test_browser import LIVE_UPDATE_MS, browser_context, sign_in  # noqa: F401 (a fixture)

pytestmark = pytest.mark.browser


def fire(app, user_id: int, subscription: str, attributes: dict) -> None:
    """Store one new message the way the worker does: the writer with the user's rule evaluator."""
    from app.alerts.evaluate import RuleEvaluator
    from app.pubsub.writer import BatchWriter
    from tests.test_subscriber import sample_row

    with app.app_context():
        row = sample_row(user_id, "m-1", subscription) | {"attributes_json": json.dumps(attributes)}
        assert BatchWriter(db.engine, user_id, evaluator=RuleEvaluator(user_id, subscription)).write([row]) == 1


def test_a_rule_is_made_in_the_browser_and_its_firing_shows_on_the_live_page(app, browser_context):  # noqa: F811
    context, _ = browser_context
    user_id = create_user(app, "alice")
    page = sign_in(context)
    page.click("nav >> text=Alerts")
    page.wait_for_url("**/alerts")
    page.fill("#name", "Build failed")
    page.fill("#condition", 'attributes.status = "FAILURE"')
    page.fill("#url", "http://127.0.0.1:9/hook")
    page.select_option("#format", "slack")
    page.click("#add-rule #submit")
    expect(page.locator("#rule-secret")).to_be_visible()
    assert re.fullmatch(r"[0-9a-f]{64}", page.text_content("#secret-value").strip())
    expect(page.locator("#edit-rule #enabled")).to_be_checked()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "alerts-created.png"), full_page=True)

    # An invalid condition is shown beside its field, with its position.
    page.goto("/alerts")
    page.fill("#name", "Broken")
    page.fill("#condition", "attributes.status = ")
    page.fill("#url", "http://127.0.0.1:9/hook")
    page.click("#add-rule #submit")
    expect(page.locator("#condition.is-invalid")).to_be_visible()
    expect(page.locator(".invalid-feedback")).to_contain_text("expected a string literal at 20")
    expect(page.locator("#rules-table tr.rule-row")).to_have_count(1)

    page.goto("/user/alice")
    fire(app, user_id, app.config["SUBSCRIPTION_NAME"], {"status": "FAILURE"})
    expect(page.locator("#alert-firings")).to_be_visible(timeout=LIVE_UPDATE_MS)
    expect(page.locator("#alert-firings-text")).to_contain_text("Build failed (1)")
    page.screenshot(path=str(ARTIFACTS / "alerts-live-firing.png"))
    page.click("#alert-firings-text a")
    page.wait_for_url("**/alerts/*")
    expect(page.locator("#deliveries tr.delivery")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "alerts-rule-history.png"), full_page=True)
