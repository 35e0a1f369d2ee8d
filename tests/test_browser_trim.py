"""A tab left open on a busy subscription keeps a bounded table, and scrolling still reaches everything."""

import time

import pytest
from playwright.sync_api import expect

from tests.conftest import create_user, store_items
from tests.test_browser import browser_context, shown_ids, sign_in  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


def test_live_updates_keep_at_most_500_rows_and_scrolling_brings_the_rest_back(app, browser_context):  # noqa: F811
    context, _ = browser_context
    user_id = create_user(app, "alice")
    first = store_items(app, user_id, [{"data": {"n": number}} for number in range(50)])
    page = sign_in(context)
    assert shown_ids(page) == list(reversed(first))
    burst = store_items(app, user_id, [{"data": {"burst": number}} for number in range(560)])
    newest = burst[-1]
    page.wait_for_selector(f"#item-{newest}", timeout=30_000)
    expect(page.locator("#useritems tr.useritem")).to_have_count(500)
    shown = shown_ids(page)
    assert len(shown) == 500, len(shown)
    assert shown == list(reversed(first + burst))[:500]  # the newest 500, in order
    deadline = time.monotonic() + 30
    while page.text_content("#scroll-status") != "No older messages." and time.monotonic() < deadline:
        page.mouse.wheel(0, 100_000)
        page.wait_for_timeout(150)
    expect(page.locator("#useritems tr.useritem")).to_have_count(610)
    assert shown_ids(page) == list(reversed(first + burst))
