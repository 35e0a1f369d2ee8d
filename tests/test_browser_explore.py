"""Browser tests for the issue 8 pages: activity charts, search with live updates, detail copy buttons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.bulk import insert_rows, item_row
from tests.conftest import ARTIFACTS, create_user, store_item, store_items
from tests.test_browser import LIVE_UPDATE_MS, browser_context, sign_in  # noqa: F401


def test_activity_chart_renders_in_chromium_and_is_saved_as_a_screenshot(app, browser_context):  # noqa: F811 (fixture from tests.test_browser)
    context, _errors = browser_context
    alice = create_user(app, "alice")
    now = datetime.now(UTC)
    rows = []
    for minute in range(0, 180, 3):
        for copy in range(1 + minute % 7):
            status = "SUCCESS" if copy % 3 else "FAILURE"
            rows.append(item_row(alice, f'{{"m": {minute}}}', {"status": status, "buildId": f"b{minute}"},
                                 received_at=now - timedelta(minutes=minute)))
    rows.append(item_row(alice, "old", {"status": "QUEUED"}, received_at=now - timedelta(hours=25)))
    insert_rows(app, rows)
    expected = {"SUCCESS": sum(1 for r in rows[:-1] if '"SUCCESS"' in r["attributes_json"])}
    expected["FAILURE"] = len(rows) - 1 - expected["SUCCESS"]

    page = sign_in(context)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/activity?unit=minute&attribute=status")
    page.wait_for_selector("#chart-series rect.bar")
    summary = page.inner_text("#activity-summary")
    assert summary.startswith(f"{len(rows) - 1} messages received")
    assert page.locator("#chart-series rect.bar").count() == len(range(0, 180, 3))
    box = page.locator("#chart-series").bounding_box()
    assert box["width"] > 600 and box["height"] > 100
    labels = page.locator("#chart-breakdown .breakdown-label").all_text_contents()
    counts = [int(text) for text in page.locator("#chart-breakdown .breakdown-count").all_text_contents()]
    assert dict(zip(labels, counts, strict=True)) == expected  # the 25-hour-old QUEUED one is outside the window
    tallest = max(page.locator("#chart-series rect.bar").evaluate_all(
        "bars => bars.map(bar => bar.getBoundingClientRect().height)"))
    assert tallest > 50
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "activity-chart.png"), full_page=True)
    assert (ARTIFACTS / "activity-chart.png").stat().st_size > 5_000

    page.goto("/activity?unit=hour")
    hours = {(now - timedelta(minutes=minute)).strftime("%Y%m%d%H") for minute in range(0, 180, 3)}
    assert page.locator("#chart-series rect.bar").count() == len(hours)


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
    page.wait_for_function("document.getElementById('copy-status').textContent === 'Copied.'")
    assert page.evaluate("navigator.clipboard.readText()") == "copy-me-42"
