"""The live page in Debian's Chromium: paging, live updates in two tabs, hostile and odd payloads,
the change-password form (on the account page) and a phone's width.
Every page must run under a strict CSP without errors."""

import time

import pytest
from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, TEST_PASSWORD, create_user, store_item, store_items

pytestmark = pytest.mark.browser

HOSTILE_IMG = '<img src=x onerror="window.__pwned=1">'
HOSTILE_SCRIPT = "</script><script>window.__pwned=1</script>"
# How long to wait for a live update. The page polls every 5 s; on a busy 2-core machine a poll
# can come late and take a while to fetch and draw, so allow several. A pass takes one poll.
LIVE_UPDATE_MS = 30_000


class PageErrors:
    """Console errors (CSP refusals included) and uncaught exceptions of every page in a context."""

    def __init__(self):
        self.messages: list[str] = []

    def watch(self, page):
        page.on("console", lambda message: message.type == "error" and self.messages.append(message.text))
        page.on("pageerror", lambda error: self.messages.append(f"uncaught: {error}"))
        page.on("response", lambda response: response.status >= 400
                and self.messages.append(f"HTTP {response.status} {response.request.method} {response.url}"))
        return page


@pytest.fixture
def browser_context(browser, live_server):
    """A fresh browser profile on the live server; fails the test on any console error."""
    context = browser.new_context(base_url=live_server)
    errors = PageErrors()
    context.on("page", errors.watch)
    yield context, errors
    context.close()
    assert errors.messages == [], f"errors in the browser console: {errors.messages}"


def sign_in(context, username="alice", password=TEST_PASSWORD, viewport=None):
    page = context.new_page()
    if viewport:
        page.set_viewport_size(viewport)
    page.goto("/index")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#submit")
    page.wait_for_url(f"**/user/{username}")
    return page


def shown_ids(page) -> list[int]:
    return page.eval_on_selector_all("#useritems tr.useritem", "rows => rows.map(row => Number(row.dataset.itemId))")


def test_infinite_scroll_loads_all_250_items_newest_first_without_gaps(app, browser_context):
    context, _ = browser_context
    user_id = create_user(app, "alice")
    ids = store_items(app, user_id, [{"data": {"n": number}} for number in range(250)])
    page = sign_in(context)
    assert len(shown_ids(page)) == app.config["ITEMS_PER_PAGE"]
    deadline = time.monotonic() + 30
    while page.text_content("#scroll-status") != "No older messages." and time.monotonic() < deadline:
        page.mouse.wheel(0, 100_000)
        page.wait_for_timeout(150)
    assert shown_ids(page) == list(reversed(ids))


def test_two_tabs_both_receive_every_new_item_once(app, browser_context):
    context, _ = browser_context
    user_id = create_user(app, "alice")
    first_ids = store_items(app, user_id, [{"data": {"n": number}} for number in range(3)])
    tabs = [sign_in(context), context.new_page()]
    tabs[1].goto("/user/alice")
    # More than one response's worth (100), so catching up takes several polls.
    new_ids = store_items(app, user_id, [{"data": {"burst": number}} for number in range(130)])
    expected = list(reversed(first_ids + new_ids))
    for tab in tabs:
        # Locator assertions poll without eval(), which the CSP forbids.
        expect(tab.locator("#useritems tr.useritem")).to_have_count(len(expected), timeout=LIVE_UPDATE_MS + 3_000)
        assert shown_ids(tab) == expected
        assert tab.is_hidden("#no-items")


def test_hostile_content_is_shown_as_text_and_never_runs(app, browser_context):
    context, _ = browser_context
    user_id = create_user(app, "alice")
    hostile_attributes = {"img": HOSTILE_IMG, "script": HOSTILE_SCRIPT}
    store_item(app, user_id, f"{HOSTILE_IMG} {HOSTILE_SCRIPT}", hostile_attributes)
    page = sign_in(context)
    # And once more through the live update, which inserts rows with JavaScript.
    live_id = store_item(app, user_id, {"html": HOSTILE_IMG, "script": HOSTILE_SCRIPT}, hostile_attributes)
    page.wait_for_selector(f"#item-{live_id}", timeout=LIVE_UPDATE_MS)
    # An injected image would be fetched, and its handler run when that fails: wait for the network.
    page.wait_for_load_state("networkidle")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#useritems img").count() == 0
    rows = page.locator("#useritems tr.useritem").all()
    assert len(rows) == 2
    # Collapsed: the preview and the badges show the text as text.
    for row in rows:
        assert "<img src=x onerror=" in row.locator(".item-preview").inner_text()
        assert f"img={HOSTILE_IMG}" in row.locator(".item-badges").inner_text()
    page.check("#expand-all")  # expanded, the data, highlighted or not, and the attribute table
    for row in rows:
        expect(row.locator(".item-body")).to_be_visible()
        attributes = row.locator(".item-attributes td").all_inner_texts()
        assert sorted(attributes) == sorted([HOSTILE_IMG, HOSTILE_SCRIPT])
        data = row.locator(".item-data").inner_text()
        assert "<img src=x onerror=" in data and "</script><script>window.__pwned=1</script>" in data
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#useritems img, #useritems script").count() == 0


def test_binary_data_shows_a_labelled_hex_view(app, browser_context):
    context, _ = browser_context
    user_id = create_user(app, "alice")
    item_id = store_item(app, user_id, b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    page = sign_in(context)
    page.click(f"#item-{item_id} .item-time")
    cell = page.locator(f"#item-{item_id} .item-data")
    expect(cell).to_be_visible()
    assert "binary data · hex view" in cell.inner_text()
    assert "89 50 4e 47 0d 0a 1a 0a 00 ff fe" in cell.locator("pre.hexdump").inner_text()


def test_five_megabyte_message_is_cut_in_the_list_and_whole_on_request(app, browser_context):
    context, _ = browser_context
    user_id = create_user(app, "alice")
    page = sign_in(context)
    big = {"blob": "x" * 5_000_000, "tail": "end-of-message"}
    item_id = store_item(app, user_id, big)
    page.wait_for_selector(f"#item-{item_id}", timeout=LIVE_UPDATE_MS)
    # The list holds about 20 KB of the message, not 5 MB: the page stays light whatever the
    # machine's speed (a time limit here measured the machine, not the page).
    assert page.evaluate("document.body.innerHTML.length") < 200_000
    row = page.locator(f"#item-{item_id}")
    row.locator(".item-time").click()
    assert "end-of-message" not in row.inner_text()
    row.get_by_role("link", name="show all").click()
    page.wait_for_url(f"**/useritems/{item_id}")
    # The detail page shows the first 256 KB and says so; "Load all" brings the rest.
    expect(page.locator("#data-cut")).to_contain_text("Showing the first 262,144 bytes of 5,000,038")
    assert "end-of-message" not in page.evaluate("document.getElementById('item-data').textContent")
    page.click("#load-all")
    page.wait_for_url(f"**/useritems/{item_id}?all=1")
    shown = page.evaluate("document.getElementById('item-data').textContent")
    assert len(shown) > 5_000_000 and "end-of-message" in shown


def test_change_password_on_the_account_page_then_sign_in_with_it(app, browser_context):
    context, errors = browser_context
    create_user(app, "alice")
    page = sign_in(context)
    page.get_by_role("link", name="Account").click()
    page.wait_for_url("**/account")
    posts = []
    page.on("request", lambda request: request.method == "POST" and posts.append(request.url))
    page.get_by_label("Current password").fill(TEST_PASSWORD)
    page.get_by_label("New password", exact=True).fill("a-new-password-1")
    page.get_by_label("Confirm new password").fill("a-different-one-2")
    page.click("#changepwd [type=submit]")
    assert page.locator("#pwd-alert").inner_text() == "The new passwords do not match."
    assert "alert-danger" in page.get_attribute("#pwd-alert", "class")
    assert posts == []  # checked in the browser, before anything is sent
    page.fill("#confirm_password", "a-new-password-1")
    page.click("#changepwd [type=submit]")
    page.wait_for_selector("#pwd-alert.alert-success")
    assert "Password changed" in page.inner_text("#pwd-alert")
    assert page.input_value("#new_password") == "" and page.input_value("#current_password") == ""
    page.click("#sign-out")
    page.wait_for_selector("#username")
    page.fill("#username", "alice")
    page.fill("#password", TEST_PASSWORD)
    page.click("#submit")
    assert "/user/alice" not in page.url  # the old password is refused
    assert page.locator(".alert-danger").inner_text() == "Invalid username or password."
    errors.messages.clear()  # that refusal was a 401, as it should be
    assert sign_in(context, password="a-new-password-1").url.endswith("/user/alice")


def test_page_fits_a_phone_and_the_navbar_toggler_opens_the_menu(app, browser_context):
    context, _ = browser_context
    user_id = create_user(app, "alice")
    store_items(app, user_id, [
        {"data": {"long": "y" * 3_000, "nested": {"list": list(range(50))}}, "attributes": {"k" * 80: "v" * 200}},
        {"data": b"\x00\x01\xff" * 300},
        {"data": "an-unbroken-token-" * 100},
    ])
    page = sign_in(context, viewport={"width": 375, "height": 740})
    expect(page.locator("#useritems tr.useritem")).to_have_count(3)
    page.wait_for_load_state("networkidle")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    button = page.locator("#pollnav")
    assert not button.is_visible()  # folded into the menu
    page.click(".navbar-toggler")
    button.wait_for(state="visible")
    button.click()
    page.wait_for_selector("#pollnav:has-text('Stop polling')")
    assert page.locator("#clnt-alert").is_visible()
    page.screenshot(path=str(ARTIFACTS / "phone-width.png"), full_page=True)


def add_task(app, user_id: int, subscription: str, **fields) -> str:
    """A polling Task row as app.polling.launch records it (no job: it counts as starting for 30 s)."""
    import uuid

    from app.extensions import db
    from app.models import Task

    with app.app_context():
        task = Task(id=uuid.uuid4().hex, name="polling_subscription", user_id=user_id, subscription=subscription,
                    description=f"Polling subscription {subscription}", **fields)
        db.session.add(task)
        db.session.commit()
        return task.id


def test_status_box_and_button_follow_the_task_state_and_a_failure_stays_until_dismissed(app, browser_context):
    from app import polling

    context, _ = browser_context
    user_id = create_user(app, "alice")
    page = sign_in(context)
    alert, button = page.locator("#current-task"), page.locator("#pollnav")
    expect(alert).to_be_hidden()
    expect(button).to_have_text("Start polling")
    # As another tab starts it and the job picks it up: the job's transition notifies the page.
    task_id = add_task(app, user_id, app.config["SUBSCRIPTION_NAME"], stored_count=12)
    with app.app_context():
        polling.transition(task_id, polling.TaskState.POLLING)
    expect(alert).to_have_attribute("data-status", "polling", timeout=LIVE_UPDATE_MS)
    expect(page.locator("#task-progress")).to_have_text("Polling")
    expect(alert).to_contain_text("12 stored")
    expect(button).to_have_text("Stop polling")
    with app.app_context():
        polling.end(task_id, polling.TaskState.FAILED, "subscription not found: projects/x/subscriptions/monitor-sub")
    expect(alert).to_have_attribute("data-status", "failed", timeout=LIVE_UPDATE_MS)
    expect(page.locator("#task-progress")).to_have_text(
        "Failed: subscription not found: projects/x/subscriptions/monitor-sub")
    assert "alert-danger" in alert.get_attribute("class")
    expect(button).to_have_text("Start polling")
    # It does not fade: still there after two more polls and after a reload.
    page.wait_for_timeout(2 * 5_000 + 1_000)
    expect(alert).to_be_visible()
    page.reload()
    expect(alert).to_have_attribute("data-status", "failed")
    page.click("#dismiss-failure")
    expect(alert).to_be_hidden(timeout=LIVE_UPDATE_MS)
    page.reload()
    expect(alert).to_be_hidden()


def test_the_stored_count_changes_with_the_rows_it_counts(app, browser_context):
    """The status box's count follows the rows on the page, not only the job's progress
    notifications (at most one every 5 s): it never says "0 stored" above the rows it stored."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import Task, utcnow

    context, _ = browser_context
    user_id = create_user(app, "alice")
    task_id = add_task(app, user_id, app.config["SUBSCRIPTION_NAME"], state="polling", heartbeat_at=utcnow())
    page = sign_in(context)
    expect(page.locator("#current-task")).to_have_attribute("data-status", "polling")
    expect(page.locator("#task-count")).to_have_text("0 stored")
    # As the worker's writer commits a batch: the task's count with the rows, and no notification.
    with app.app_context():
        db.session.execute(sa.update(Task).where(Task.id == task_id).values(stored_count=2, heartbeat_at=utcnow()))
        db.session.commit()
    store_items(app, user_id, [{"data": {"n": 1}}, {"data": {"n": 2}}])
    expect(page.locator("#useritems tr.useritem")).to_have_count(2, timeout=LIVE_UPDATE_MS)
    expect(page.locator("#task-count")).to_have_text("2 stored", timeout=2_000)


def test_live_page_follows_the_selected_subscription_and_keeps_it_across_a_reload(app, browser_context):
    context, _ = browser_context
    user_id = create_user(app, "alice", subscriptions=("first-sub", "second-sub"))
    store_item(app, user_id, {"which": "first"}, subscription="first-sub")
    store_item(app, user_id, {"which": "second"}, subscription="second-sub")
    task_id = add_task(app, user_id, "second-sub", state="polling")
    page = sign_in(context)
    alert, button = page.locator("#current-task"), page.locator("#pollnav")
    # The default subscription first: not polling, and neither message is its own.
    expect(button).to_have_text("Start polling")
    expect(page.locator("#useritems tr.useritem")).to_have_count(0)

    page.select_option("#subscription-select", label="second-sub")
    page.wait_for_url("**/user/alice?subscription=*second-sub*")
    expect(alert).to_have_attribute("data-status", "polling")
    expect(button).to_have_text("Stop polling")
    expect(page.locator("#useritems tr.useritem")).to_have_count(1)
    expect(page.locator("#useritems")).to_contain_text("second")
    page.screenshot(path=str(ARTIFACTS / "live-selected-subscription.png"), full_page=True)

    page.select_option("#subscription-select", label="first-sub")
    page.wait_for_url("**/user/alice?subscription=*first-sub*")
    expect(button).to_have_text("Start polling")
    expect(alert).to_be_hidden()
    page.reload()
    assert page.eval_on_selector("#subscription-select", "select => select.selectedOptions[0].text.trim()") == \
        "first-sub"
    expect(button).to_have_text("Start polling")
    expect(page.locator("#useritems tr.useritem")).to_have_count(1)
    expect(page.locator("#useritems")).to_contain_text("first")

    # Stop on the second subscription's page stops that one, not whichever task runs.
    page.select_option("#subscription-select", label="second-sub")
    page.wait_for_url("**/user/alice?subscription=*second-sub*")
    page.click("#pollnav")
    expect(page.locator("#clnt-alert")).to_contain_text("Stopping polling of second-sub")
    expect(button).to_have_text("Start polling", timeout=LIVE_UPDATE_MS)
    from app.extensions import db
    from app.models import Task

    with app.app_context():
        assert db.session.get(Task, task_id).state == "stopping"

    page.select_option("#subscription-select", value="all")
    page.wait_for_url("**/user/alice?subscription=all")
    expect(page.locator("#useritems tr.useritem")).to_have_count(2)
    expect(page.locator("#pollnav")).to_have_count(0)


def notify(app, user_id, data):
    from app.extensions import db
    from app.models import User

    with app.app_context():
        db.session.get(User, user_id).add_notification("task_progress", data)
        db.session.commit()
