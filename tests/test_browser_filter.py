"""Search by filter expression in Chromium: the Check button's dry-run, its error, and the search itself."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, create_user, store_items
from tests.test_browser import browser_context, sign_in  # noqa: F401

pytestmark = pytest.mark.browser


def test_check_counts_the_matches_then_search_lists_them_and_a_mistake_is_pointed_at(app, browser_context):  # noqa: F811 (fixture from tests.test_browser)
    context, _errors = browser_context
    alice = create_user(app, "alice", subscriptions=("builds",))
    statuses = ["SUCCESS", "FAILURE", "WORKING", "FAILURE", "QUEUED", "FAILURE"]
    ids = store_items(app, alice, [{"data": f"build {index}", "subscription": "builds", "message_id": f"b{index}",
                                    "attributes": {"status": status}} for index, status in enumerate(statuses)])
    store_items(app, alice, [{"data": "elsewhere", "attributes": {"status": "FAILURE"}}])
    page = sign_in(context)
    page.goto("/explore")

    page.fill("#filter", 'attributes.status = "FAILURE"')
    page.select_option("#sub", label="builds")
    page.click("#filter-check")
    expect(page.locator("#filter-check-count")).to_contain_text("Matches 3 of the 6 messages stored on subscription")
    assert page.locator("#filter-check-sample li").all_text_contents()[0].startswith("b5")
    assert page.locator("#filter-check-sample a").first.get_attribute("href") == f"/useritems/{ids[5]}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-filter-check.png"), full_page=True)

    # A mistake: the position is shown, and the cursor is put there.
    unfinished = 'attributes.status = "FAILURE" AND'
    page.fill("#filter", unfinished)
    page.click("#filter-check")
    expect(page.locator("#filter-check-error")).to_contain_text(f" at {len(unfinished)}.")
    assert page.evaluate("document.getElementById('filter').selectionStart") == len(unfinished)
    page.screenshot(path=str(ARTIFACTS / "search-filter-error.png"), full_page=True)

    # Search: the same expression lists the matching messages of the chosen subscription.
    page.fill("#filter", 'attributes.status = "FAILURE"')
    page.click("#filter-form button[type=submit]")
    page.wait_for_url("**/explore?**filter=**")
    shown = page.eval_on_selector_all("#useritems tr.useritem", "rows => rows.map(row => Number(row.dataset.itemId))")
    assert shown == [ids[5], ids[3], ids[1]]
    expect(page.locator("#filter")).to_have_value('attributes.status = "FAILURE"')
