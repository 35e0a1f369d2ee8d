"""The pages people watch, in Chromium: times in the viewer's zone, compact rows that expand, Pause,
dark mode, the detail page; and screenshots of each page in both colour modes (test-artifacts/)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from tests.bulk import insert_rows, item_row
from tests.conftest import ARTIFACTS, create_user, store_item, store_items
from tests.test_browser import LIVE_UPDATE_MS, PageErrors, sign_in
from tests.test_times import store_known_message

pytestmark = pytest.mark.browser

SHOWN = {"America/New_York": "2026-11-30 22:30:00", "Asia/Kolkata": "2026-12-01 09:00:00", "UTC": "2026-12-01 03:30:00"}
# Chromium's ICU still calls Kolkata by its old name.
ZONE_NAMES = {"America/New_York": "America/New_York", "Asia/Kolkata": "Asia/(Kolkata|Calcutta)"}
LOCAL_DAY = {"America/New_York": ("2026-11-30", "2026-12-01"), "Asia/Kolkata": ("2026-12-01", "2026-11-30")}


@pytest.fixture
def new_context(browser, live_server):
    """Browser contexts with options (time zone, colour scheme); each fails the test on a console error."""
    made = []

    def make(**options):
        context = browser.new_context(base_url=live_server, **options)
        errors = PageErrors()
        context.on("page", errors.watch)
        made.append((context, errors))
        return context

    yield make
    for context, errors in made:
        context.close()
        assert errors.messages == [], f"errors in the browser console: {errors.messages}"


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_times_show_in_the_browsers_zone_and_a_one_day_search_reads_the_day_there(app, new_context, zone):
    alice = create_user(app, "alice")
    item_id = store_known_message(app, alice)
    page = sign_in(new_context(timezone_id=zone))
    page.goto("/user/alice?subscription=all")
    row_time = page.locator(f"#item-{item_id} .item-time")
    expect(row_time).to_have_text(SHOWN[zone])
    assert row_time.get_attribute("datetime") == "2026-12-01T03:30:00Z"
    assert re.fullmatch(rf"{SHOWN[zone]} {ZONE_NAMES[zone]} · 2026-12-01T03:30:00Z", row_time.get_attribute("title"))
    page.goto(f"/useritems/{item_id}")
    expect(page.locator("#publish-time")).to_have_text(SHOWN[zone])
    assert page.get_attribute("#publish-time", "datetime") == "2026-12-01T03:30:00Z"

    # The UTC switch, kept across pages in localStorage.
    page.check("#utc-switch")
    expect(page.locator("#publish-time")).to_have_text(SHOWN["UTC"])
    page.goto("/user/alice?subscription=all")
    expect(row_time).to_have_text(SHOWN["UTC"])
    page.uncheck("#utc-switch")
    expect(row_time).to_have_text(SHOWN[zone])

    # A one-day search means that day where the viewer is: from and to the same date.
    day, other_day = LOCAL_DAY[zone]
    page.goto("/explore")
    expect(page.locator("#time-help .zone-name")).to_have_text(re.compile(ZONE_NAMES[zone]))
    for searched, found in ((day, 1), (other_day, 0)):
        page.fill("#from", searched)
        page.fill("#to", searched)
        page.click("#filter-form button[type=submit]")
        page.wait_for_url(re.compile(rf".*from={searched}&to={searched}.*"))
        expect(page.locator("#useritems tr.useritem")).to_have_count(found)
    # The form keeps what was typed.
    assert page.input_value("#from") == other_day


def test_collapsed_row_is_compact_and_expands_to_the_whole_json_and_an_attribute_table(app, new_context):
    context = new_context()
    alice = create_user(app, "alice")
    long_json = {"steps": [{"name": f"step-{number}", "status": "SUCCESS"} for number in range(30)]}
    attributes = {f"key{number}": f"value-{number}" for number in range(5)}
    item_id = store_item(app, alice, long_json, attributes)
    small_id = store_item(app, alice, {"a": 1}, {"only": "one"})
    page = sign_in(context, viewport={"width": 1366, "height": 900})
    row, small = page.locator(f"#item-{item_id}"), page.locator(f"#item-{small_id}")
    for each in (row, small):
        height = each.bounding_box()["height"]
        assert height <= 80, f"a collapsed row is {height}px tall"
    expect(row.locator(".item-body")).to_be_hidden()
    assert row.locator(".attr-badge").all_inner_texts() == ["key0=value-0", "key1=value-1", "key2=value-2"]
    expect(row.locator(".attr-badge-more")).to_have_text("+2")
    expect(row.locator(".item-preview")).to_contain_text('{"steps": [{"name": "step-0"')

    row.locator(".item-preview").click()
    expect(row.locator(".item-body")).to_be_visible()
    expect(row.locator(".item-toggle")).to_have_attribute("aria-expanded", "true")
    expect(row.locator(".item-data .highlight .nt").first).to_be_visible()
    assert row.locator(".item-attributes tbody tr").count() == 5
    expect(row.locator(".item-attributes tbody tr").nth(4)).to_have_text(re.compile(r"key4\s*value-4"))
    # 30 steps of 4 lines and 4 lines of brackets: 124 lines, 40 shown, and the rest on request.
    more = row.locator(".show-lines")
    expect(more).to_have_text("84 more lines — show all")
    pre_box = row.locator(".item-data pre").bounding_box()
    last_step = row.locator(".item-data .s2", has_text="step-29")
    assert last_step.bounding_box()["y"] >= pre_box["y"] + pre_box["height"]  # below the fold, behind the button
    assert row.locator(".item-data pre").evaluate("pre => pre.scrollHeight > pre.clientHeight")
    more.click()
    expect(more).to_have_count(0)
    assert row.locator(".item-data pre").evaluate("pre => pre.scrollHeight <= pre.clientHeight + 1")
    pre_box = row.locator(".item-data pre").bounding_box()
    assert last_step.bounding_box()["y"] < pre_box["y"] + pre_box["height"]
    # A small message is never clamped.
    small.locator(".item-time").click()
    expect(small.locator(".show-lines")).to_have_count(0)
    # Collapses again, and "expand all" opens every row.
    row.locator(".item-time").click()
    expect(row.locator(".item-body")).to_be_hidden()
    small.locator(".item-time").click()
    page.check("#expand-all")
    expect(row.locator(".item-body")).to_be_visible()
    expect(small.locator(".item-body")).to_be_visible()
    page.uncheck("#expand-all")
    expect(page.locator("#useritems .item-body:visible")).to_have_count(0)
    # A click on the message id goes to its page instead.
    row.locator(".message-id").click()
    page.wait_for_url(f"**/useritems/{item_id}")


def test_pause_holds_new_messages_behind_a_badge_while_polling_goes_on(app, new_context):
    context = new_context()
    alice = create_user(app, "alice")
    first = store_item(app, alice, {"n": "first"})
    page = sign_in(context)
    expect(page.locator(f"#item-{first}")).to_be_visible()
    page.check("#pause-switch")
    held = store_items(app, alice, [{"data": {"held": number}} for number in range(3)])
    badge = page.locator("#new-messages")
    expect(badge).to_have_text("3 new — show", timeout=LIVE_UPDATE_MS)
    expect(page.locator("#useritems tr.useritem")).to_have_count(1)
    # The polling goes on while paused: more arrive and the count grows.
    later = store_item(app, alice, {"held": "later"})
    expect(badge).to_have_text("4 new — show", timeout=LIVE_UPDATE_MS)
    expect(page.locator("#useritems tr.useritem")).to_have_count(1)
    badge.click()
    expect(badge).to_be_hidden()
    expect(page.locator("#useritems tr.useritem")).to_have_count(5)
    shown = page.eval_on_selector_all("#useritems tr.useritem", "rows => rows.map(row => Number(row.dataset.itemId))")
    assert shown == [later, *reversed(held), first]
    assert page.is_checked("#pause-switch")  # "show" adds them and stays paused
    newest = store_item(app, alice, {"n": "after unpausing"})
    expect(badge).to_have_text("1 new — show", timeout=LIVE_UPDATE_MS)
    page.uncheck("#pause-switch")
    expect(page.locator(f"#item-{newest}")).to_be_visible()
    expect(badge).to_be_hidden()

    # While the tab is hidden, its title counts what arrived; shown again, the count goes.
    title = page.title()
    page.evaluate("""() => { Object.defineProperty(document, "hidden", {value: true, configurable: true});
                             document.dispatchEvent(new Event("visibilitychange")); }""")
    store_items(app, alice, [{"data": {"while": "hidden"}} for _ in range(2)])
    expect(page).to_have_title(f"(2) {title}", timeout=LIVE_UPDATE_MS)
    page.evaluate("""() => { Object.defineProperty(document, "hidden", {value: false, configurable: true});
                             document.dispatchEvent(new Event("visibilitychange")); }""")
    expect(page).to_have_title(title)


def background(page) -> tuple[int, ...]:
    color = page.evaluate("getComputedStyle(document.body).backgroundColor")
    return tuple(int(part) for part in re.findall(r"\d+", color)[:3])


def test_dark_mode_follows_the_system_and_the_navbar_switch_overrides_it(app, new_context):
    alice = create_user(app, "alice")
    item_id = store_item(app, alice, {"key": "value"}, {"a": "b"})
    page = sign_in(new_context(color_scheme="dark"))
    assert page.get_attribute("html", "data-bs-theme") == "dark"
    assert sum(background(page)) < 150, background(page)
    page.goto(f"/useritems/{item_id}")
    dark_key = page.locator("#item-data .highlight .nt").first.evaluate("key => getComputedStyle(key).color")
    page.uncheck("#theme-switch")
    assert page.get_attribute("html", "data-bs-theme") == "light"
    assert sum(background(page)) > 600, background(page)
    light_key = page.locator("#item-data .highlight .nt").first.evaluate("key => getComputedStyle(key).color")
    assert dark_key != light_key  # Pygments has a style for each mode
    page.reload()  # the choice is kept
    assert page.get_attribute("html", "data-bs-theme") == "light"
    page.check("#theme-switch")
    assert sum(background(page)) < 150

    light_page = sign_in(new_context(color_scheme="light"))
    assert light_page.get_attribute("html", "data-bs-theme") == "light"
    assert not light_page.is_checked("#theme-switch")


def test_detail_page_lists_every_attribute_with_copy_buttons_and_a_hex_view_that_fits(app, new_context, live_server):
    context = new_context(viewport={"width": 1366, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    alice = create_user(app, "alice")
    attributes = {f"attribute-{number:03d}": f"value {number}" for number in range(100)}
    data = bytes(range(256)) * 4
    item_id = store_item(app, alice, data, attributes)
    page = sign_in(context)
    page.goto(f"/useritems/{item_id}")
    rows = page.locator("#item-attributes tbody tr")
    expect(rows).to_have_count(100)
    last = rows.nth(99)
    last.scroll_into_view_if_needed()
    expect(last).to_be_visible()
    last.get_by_role("button").click()
    expect(page.locator("#copy-status")).to_have_text("Copied.")  # no evaluated string: the CSP forbids eval
    assert page.evaluate("navigator.clipboard.readText()") == "value 99"
    expect(page.locator("#data-size")).to_have_text("1,024")
    assert len(page.request.get(f"/useritems/{item_id}/data").body()) == 1024
    for width in (1366, 375):
        page.set_viewport_size({"width": width, "height": 900})
        ascii_column = page.locator(".hex-ascii").first.bounding_box()
        assert ascii_column["x"] + ascii_column["width"] <= width, f"the ASCII column leaves a {width}px screen"
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.locator("#item-data").scroll_into_view_if_needed()
        shoot(page, f"detail-hex-{width}.png", full_page=False)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_large_binary_message_shows_the_start_of_its_hex_and_offers_the_download(app, new_context, scheme):
    from app.main.routes import HEX_VIEW_MAX_BYTES

    alice = create_user(app, "alice")
    data = bytes(range(256)) * (1024 * 1024 // 256)
    item_id = store_item(app, alice, data)
    page = sign_in(new_context(color_scheme=scheme, viewport={"width": 1366, "height": 900}))
    page.goto(f"/useritems/{item_id}")
    cut = page.locator("#data-cut")
    expect(cut).to_have_text(f"Showing the first {HEX_VIEW_MAX_BYTES:,} bytes of {len(data):,} in hex: "
                             "the rest is in the download.")
    expect(page.locator("#load-all")).to_have_count(0)
    expect(page.locator(".hex-row")).to_have_count(HEX_VIEW_MAX_BYTES // 16)
    download = cut.get_by_role("link", name="download")
    assert len(page.request.get(download.get_attribute("href")).body()) == len(data)
    for width in (1366, 375):
        # Each row is a block (a grid on a phone), not a line of one text of 4,096 lines: crossing
        # the phone breakpoint re-laid that text out for 35 s, the page frozen.
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        rows = page.locator(".hex-row")
        assert rows.first.evaluate("row => getComputedStyle(row).display") == ("block" if width > 576 else "grid")
        first, second = rows.nth(0).bounding_box(), rows.nth(1).bounding_box()
        assert second["y"] == pytest.approx(first["y"] + first["height"], abs=0.5), "a gap between hex rows"
        cut.scroll_into_view_if_needed()
        shoot(page, f"detail-binary-{scheme}-{width}.png", full_page=False)


def shoot(page, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(200)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_live_search_and_detail(app, new_context, scheme):
    alice = create_user(app, "alice")
    now = datetime.now(UTC)
    rows = [item_row(alice, json.dumps({"buildId": f"b-{number}", "status": "SUCCESS" if number % 3 else "FAILURE",
                                        "steps": [{"name": "gcr.io/cloud-builders/docker", "args": ["build", "."]}]}),
                     {"status": "SUCCESS" if number % 3 else "FAILURE", "buildId": f"b-{number}",
                      "projectId": "demo"}, publish_time=now, received_at=now)
            for number in range(12)]
    rows.append(item_row(alice, b"\x89PNG\r\n\x1a\n" + bytes(range(64)), {"contentType": "image/png"},
                         publish_time=now, received_at=now))
    insert_rows(app, rows)
    page = sign_in(new_context(color_scheme=scheme, viewport={"width": 1366, "height": 900}))
    page.goto("/user/alice?subscription=all")
    page.locator("#useritems tr.useritem .item-time").nth(1).click()
    shoot(page, f"live-{scheme}.png")
    page.goto("/explore?q=FAILURE")
    page.locator("#useritems tr.useritem .item-time").first.click()
    shoot(page, f"search-{scheme}.png")
    page.goto(page.locator("#useritems .message-id").first.get_attribute("href"))
    shoot(page, f"detail-{scheme}.png")
    page.set_viewport_size({"width": 375, "height": 740})
    for path, name in (("/user/alice?subscription=all", "live"), ("/explore", "search")):
        page.goto(path)
        page.locator("#useritems tr.useritem .item-time").first.click()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, f"{name} is wider than a phone"
        shoot(page, f"{name}-phone-{scheme}.png")
