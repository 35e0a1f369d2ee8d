"""The storage page in Debian's Chromium: an admin follows the live page's size warning to it and sets
a subscription's retention; a non-admin is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from app import retention
from tests.bulk import insert_rows, item_row
from tests.conftest import ARTIFACTS, TEST_PROJECT, create_user
from tests.test_browser import browser_context, sign_in  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


def test_an_admin_follows_the_size_warning_to_the_storage_page_and_sets_a_retention(app, browser_context):  # noqa: F811
    context, _ = browser_context
    admin = create_user(app, "root", is_admin=True)
    alice = create_user(app, "alice")
    now = datetime.now(UTC)
    insert_rows(app, [item_row(alice, "a" * 800, subscription="orders", received_at=now - timedelta(days=9))])
    insert_rows(app, [item_row(alice, "b" * 800, subscription="orders", received_at=now) for _ in range(2)])
    insert_rows(app, [item_row(admin, "c" * 100, received_at=now - timedelta(days=40))])
    with app.app_context():
        size_mb = retention.database_size_bytes() / 1024 / 1024
        retention.run_if_due()  # deletes the admin's 40-day-old message (the default is 30 days)
    app.config["DATABASE_SIZE_LIMIT_MB"] = size_mb / 0.96

    page = sign_in(context, "root")
    warning = page.locator("#database-size-warning")
    expect(warning).to_be_visible()
    expect(warning).to_have_class("alert alert-danger")
    expect(warning).to_contain_text("The database is nearly full")
    page.screenshot(path=str(ARTIFACTS / "storage-warning-live-page.png"), full_page=True)

    warning.get_by_role("link", name="Storage").click()
    page.wait_for_url("**/admin/storage")
    expect(page.locator("#database-size-words")).to_contain_text(" of ")
    expect(page.locator("#last-deleted")).to_have_text("1")
    row = page.locator(f'tr.storage-row[data-subscription="projects/{TEST_PROJECT}/subscriptions/orders"]')
    expect(row.locator(".messages")).to_have_text("3")
    expect(row.locator(".kept")).to_contain_text("30 days (default)")
    row.locator(".retention-days").fill("7")
    row.get_by_role("button", name="Set").click()
    expect(page.get_by_role("alert").filter(has_text="now kept for 7 days")).to_be_visible()
    row = page.locator(f'tr.storage-row[data-subscription="projects/{TEST_PROJECT}/subscriptions/orders"]')
    expect(row.locator(".kept")).to_have_text("7 days")
    expect(row.locator(".retention-days")).to_have_value("7")
    page.screenshot(path=str(ARTIFACTS / "storage-page.png"), full_page=True)

    with app.app_context():
        assert retention.apply_retention() == (1, True)  # the nine-day-old message of "orders"


def test_a_non_admin_is_refused_the_storage_page_and_sees_no_size_warning(app, browser_context):  # noqa: F811
    context, errors = browser_context
    create_user(app, "alice")
    app.config["DATABASE_SIZE_LIMIT_MB"] = 0.01  # far over: an admin would see the red warning
    page = sign_in(context, "alice")
    expect(page.locator("#database-size-warning")).to_have_count(0)
    response = page.goto("/admin/storage")
    assert response.status == 403
    expect(page.locator("body")).not_to_contain_text("Messages per subscription")
    # The refusal is the expected outcome here, not a console error.
    assert f"HTTP 403 GET {page.url}" in errors.messages
    assert all("403" in message for message in errors.messages), errors.messages
    errors.messages.clear()
