"""The users pages and the account page in Debian's Chromium, end to end; screenshots in both colour modes."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, TEST_PASSWORD, create_user, store_items
from tests.test_accessibility import follow_colour_scheme
from tests.test_browser import browser_context, sign_in  # noqa: F401 (the fixture)

pytestmark = pytest.mark.browser


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_admin_manages_users_in_the_browser(app, browser_context):  # noqa: F811
    context, errors = browser_context
    create_user(app, "root", is_admin=True)
    page = sign_in(context, "root")
    page.get_by_role("link", name="Users").click()
    page.wait_for_url("**/admin/users")

    # Create: the generated password is shown once, and it signs carol in.
    page.get_by_label("Username", exact=True).fill("carol")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#new-user")).to_contain_text("Created user carol")
    password = page.inner_text("#new-password").strip()
    assert len(password) >= 12
    carol_row = page.locator("tr.user-row[data-username=carol]")
    expect(carol_row.locator(".user-role")).to_have_text("user")
    page.goto("/admin/users")
    expect(page.locator("#new-password")).to_have_count(0)
    other = context.browser.new_context(base_url=context.pages[0].url.split("/admin")[0])
    try:
        assert sign_in(other, "carol", password).url.endswith("/user/carol")
    finally:
        other.close()

    # Make and unmake admin.
    carol_row.get_by_role("button", name="Make admin").click()
    expect(page.locator(".alert-success")).to_have_text("carol is now an admin.")
    expect(carol_row.locator(".user-role")).to_have_text("admin")
    carol_row.get_by_role("button", name="Remove admin").click()
    expect(carol_row.locator(".user-role")).to_have_text("user")
    # The signed-in admin has no button to remove their own rights.
    expect(page.locator("tr.user-row[data-username=root] .toggle-admin")).to_have_count(0)

    # Reset a password: dismissing the question sends nothing; accepting shows the new one once.
    page.once("dialog", lambda dialog: dialog.dismiss())
    carol_row.get_by_role("button", name="Reset password").click()
    page.wait_for_timeout(300)
    assert page.url.endswith("/admin/users")
    page.once("dialog", lambda dialog: dialog.accept())
    carol_row.get_by_role("button", name="Reset password").click()
    page.wait_for_url("**/admin/users/*/password")
    new_password = page.inner_text("#new-password").strip()
    assert new_password and new_password != password
    page.get_by_role("link", name="Back to users").click()

    # Delete: a confirmation page first; Cancel keeps the user, Delete removes them.
    carol_row.get_by_role("link", name="Delete…").click()
    expect(page.locator("#delete-summary")).to_contain_text("0 stored messages")
    page.get_by_role("link", name="Cancel").click()
    expect(carol_row).to_have_count(1)
    carol_row.get_by_role("link", name="Delete…").click()
    page.click("#confirm-delete")
    expect(page.locator(".alert-success")).to_have_text("Deleted user carol.")
    expect(page.locator("tr.user-row[data-username=carol]")).to_have_count(0)
    assert errors.messages == []


def test_a_non_admin_has_no_users_link_and_is_refused(app, browser_context):  # noqa: F811
    context, errors = browser_context
    create_user(app, "alice")
    page = sign_in(context)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    response = page.goto("/admin/users")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("Error 403")
    errors.messages.clear()  # the 403 was the point


@pytest.mark.parametrize("colour_scheme", ["light", "dark"])
def test_screenshots_of_the_account_and_users_pages(app, browser, live_server, colour_scheme):
    create_user(app, "root", is_admin=True)
    for name in ("alice", "bob-with-a-rather-long-name"):
        user_id = create_user(app, name)
        store_items(app, user_id, [{"data": {"n": 1}}])
    context = browser.new_context(base_url=live_server, color_scheme=colour_scheme,
                                  viewport={"width": 1280, "height": 800})
    try:
        page = sign_in(context, "root", TEST_PASSWORD)
        page.goto("/admin/users")
        page.get_by_label("Username", exact=True).fill("carol")
        page.get_by_role("button", name="Create user").click()
        # The form posts and a new page loads: wait for it (its generated password) before styling it.
        expect(page.locator("#new-password")).to_be_visible()
        follow_colour_scheme(page)
        screenshot(page, f"admin-users-{colour_scheme}.png")
        page.goto("/account")
        follow_colour_scheme(page)
        page.get_by_label("Current password").fill("wrong")
        page.get_by_label("New password", exact=True).fill("a-new-password")
        page.get_by_label("Confirm new password").fill("a-new-password")
        page.click("#changepwd [type=submit]")
        expect(page.locator("#pwd-alert")).to_have_text("The current password is wrong.")
        screenshot(page, f"account-{colour_scheme}.png")
    finally:
        context.close()


def test_remove_subscription_asks_first_and_keeps_it_when_cancelled(app, browser_context):  # noqa: F811
    context, _errors = browser_context
    create_user(app, "alice", subscriptions=("spare-sub",))
    page = sign_in(context)
    page.goto("/subscriptions")
    row = page.locator("tr.subscription-row", has_text="spare-sub")
    questions = []

    def answer(dialog, accept):
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, False))
    row.get_by_role("button", name="Remove").click()
    page.wait_for_timeout(300)
    expect(row).to_have_count(1)
    assert "Remove spare-sub from your list?" in questions[0]
    page.once("dialog", lambda dialog: answer(dialog, True))
    row.get_by_role("button", name="Remove").click()
    expect(page.locator(".alert-info")).to_contain_text("Removed spare-sub")
    expect(page.locator("tr.subscription-row", has_text="spare-sub")).to_have_count(0)
