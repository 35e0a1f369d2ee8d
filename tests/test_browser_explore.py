"""Browser tests for the issue 8 pages: activity charts, search with live updates, detail copy buttons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.bulk import insert_rows, item_row
from tests.conftest import ARTIFACTS, create_user, store_item, store_items
from tests.test_browser import LIVE_UPDATE_MS, browser_context, sign_in  # noqa: F401

pytestmark = pytest.mark.browser


def test_activity_chart_renders_in_chromium_and_is_saved_as_a_screenshot(app, browser_context):  # noqa: F811 (fixture from tests.test_browser)
    context, _errors = browser_context
    alice = create_user(app, "alice")
    now = datetime.now(UTC)
    rows = []
    for minute in range(0, 180, 3):
        for copy in range(1 + minute % 7):
            status = "SUCCESS" if copy % 3 else "FAILURE"
            received = now - timedelta(minutes=minute)
            rows.append(item_row(alice, f'{{"m": {minute}}}', {"status": status, "buildId": f"b{minute}"},
                                 received_at=received, publish_time=received - timedelta(seconds=copy * 0.7),
                                 delivery_attempt=None if copy < 4 else copy - 2))
    rows.append(item_row(alice, "old", {"status": "QUEUED"}, received_at=now - timedelta(hours=25)))
    insert_rows(app, rows)
    expected = {"SUCCESS": sum(1 for r in rows[:-1] if '"SUCCESS"' in r["attributes_json"])}
    expected["FAILURE"] = len(rows) - 1 - expected["SUCCESS"]

    page = sign_in(context)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/activity?range=24h&attribute=status")
    page.wait_for_selector("#chart-series rect.bar")
    summary = page.inner_text("#activity-summary")
    assert summary.startswith(f"{len(rows) - 1} messages received")
    received_times = [now - timedelta(minutes=minute) for minute in range(0, 180, 3)]
    quarter_hours = {(moment.hour, moment.minute // 15) for moment in received_times}
    assert page.locator("#chart-series rect.bar").count() == len(quarter_hours)
    box = page.locator("#chart-series .chart-plot").bounding_box()
    assert box["width"] > 600 and box["height"] > 100
    labels = page.locator("#chart-breakdown .breakdown-label").all_text_contents()
    counts = [int(text) for text in page.locator("#chart-breakdown .breakdown-count").all_text_contents()]
    assert dict(zip(labels, counts, strict=True)) == expected  # the 25-hour-old QUEUED one is outside the window
    tallest = max(page.locator("#chart-series rect.bar").evaluate_all(
        "bars => bars.map(bar => bar.getBoundingClientRect().height)"))
    assert tallest > 50
    # The y-axis labels sit beside the plot, and the breakdown's labels beside their bars, never on them.
    axis = page.locator("#chart-series .chart-y-axis").bounding_box()
    assert axis["x"] + axis["width"] <= box["x"] + 1
    for row in page.locator("#chart-breakdown tr.row-chart-row").all():
        label = row.locator(".breakdown-label").bounding_box()
        bar = row.locator("rect").bounding_box()
        assert label["x"] + label["width"] <= bar["x"]
    assert page.locator("#chart-latency rect.bar-p95").count() > 0
    assert page.locator("#chart-attempts .breakdown-label").first.inner_text() == "first / unknown"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "activity-light.png"), full_page=True)
    assert (ARTIFACTS / "activity-light.png").stat().st_size > 5_000

    page.evaluate("document.documentElement.setAttribute('data-bs-theme', 'dark')")
    page.screenshot(path=str(ARTIFACTS / "activity-dark.png"), full_page=True)

    page.goto("/activity?range=1h&attribute=status")
    # A bar per minute for the last hour: the window starts on the minute an hour before the request,
    # so the message of exactly 60 minutes before `now` is in it unless the clock passed a minute since.
    minutes = {(now - timedelta(minutes=minute)).strftime("%H%M") for minute in range(0, 58, 3)}
    assert page.locator("#chart-series rect.bar").count() in (len(minutes), len(minutes) + 1)
    # A custom range: its dates appear once Custom is picked, and are read as UTC.
    expect(page.locator("#from")).to_be_hidden()
    page.click("label[for=range-custom]")
    expect(page.locator("#from")).to_be_visible()
    page.fill("#from", (now - timedelta(minutes=31)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("#to", (now + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M"))
    page.click("#activity-form button[type=submit]")
    page.wait_for_url("**/activity?range=custom**")
    in_range = sum(1 + minute % 7 for minute in range(0, 31, 3))
    assert page.inner_text("#activity-summary").startswith(f"{in_range} messages received")

    page.set_viewport_size({"width": 375, "height": 740})
    page.goto("/activity?range=24h&attribute=buildId")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    assert page.locator("#chart-breakdown .breakdown-label").last.inner_text() == "other"
    page.screenshot(path=str(ARTIFACTS / "activity-phone.png"), full_page=True)


def test_search_page_keeps_the_filter_in_the_url_and_live_updates_respect_it(app, browser_context):  # noqa: F811 (fixture from tests.test_browser)
    context, _errors = browser_context
    alice = create_user(app, "alice")
    store_item(app, alice, "an old failure", attributes={"status": "FAILURE"})
    store_item(app, alice, "an old success", attributes={"status": "SUCCESS"})
    page = sign_in(context)
    page.goto("/explore")
    page.fill("#attr", "status=FAILURE")
    page.click("#filter-form button[type=submit]")
    page.wait_for_url("**/explore?**attr=status%3DFAILURE**")
    assert page.locator("#useritems tr.useritem").count() == 1
    # Bookmarkable: the same URL in a new tab shows the same result.
    shared = context.new_page()
    shared.goto(page.url)
    assert shared.locator("#useritems tr.useritem").count() == 1
    shared.close()

    # Stored in one transaction, so no poll can come between them.
    matching, other = store_items(app, alice, [{"data": "<b>new failure</b>", "attributes": {"status": "FAILURE"}},
                                               {"data": "new success", "attributes": {"status": "SUCCESS"}}])
    page.wait_for_selector(f"#item-{matching}", timeout=LIVE_UPDATE_MS)
    # Both were stored before that poll, so the reply that drew `matching` would have held `other` too.
    assert page.locator(f"#item-{other}").count() == 0
    assert page.locator(f"#item-{matching} .item-data").inner_text().strip() == "<b>new failure</b>"


def test_detail_view_copies_the_message_id_and_shows_base64(app, browser_context, live_server):  # noqa: F811 (fixture from tests.test_browser)
    context, _errors = browser_context
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    alice = create_user(app, "alice")
    item_id = store_item(app, alice, b"\x00\xffbytes", attributes={"a": "b"}, message_id="copy-me-42")
    page = sign_in(context)
    page.goto(f"/useritems/{item_id}")
    page.click("#base64-view summary")
    assert page.inner_text("#copy-base64") == "AP9ieXRlcw=="
    page.click("button[data-copy-target='#copy-message-id']")
    expect(page.locator("#copy-status")).to_have_text("Copied.")  # no evaluated string: the CSP forbids eval
    assert page.evaluate("navigator.clipboard.readText()") == "copy-me-42"
