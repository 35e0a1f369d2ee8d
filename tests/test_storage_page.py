"""The storage page (/admin/storage), the per-subscription retention form, /healthz's size, and the
size warning on the live page: admins only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app import retention
from app.extensions import db
from app.models import Subscription
from tests.bulk import insert_rows, item_row
from tests.conftest import TEST_PROJECT, create_user
from tests.test_admin import form_token


def full(name: str) -> str:
    return f"projects/{TEST_PROJECT}/subscriptions/{name}"


def seed(app) -> tuple[int, int]:
    admin = create_user(app, "root", is_admin=True)
    alice = create_user(app, "alice", subscriptions=(full("orders"),))
    now = datetime.now(UTC)
    insert_rows(app, [item_row(alice, "x" * 1000, subscription="orders", received_at=now - timedelta(days=3))])
    insert_rows(app, [item_row(alice, "y" * 500, subscription="orders", received_at=now) for _ in range(4)])
    insert_rows(app, [item_row(admin, "z" * 10, subscription="monitor-sub", received_at=now - timedelta(days=12))])
    return admin, alice


def test_the_storage_page_and_its_form_are_refused_to_non_admins(app, client, auth):
    seed(app)
    assert client.get("/admin/storage").status_code in (302, 401)  # not signed in: to the sign-in page
    auth.login("alice")
    assert client.get("/admin/storage").status_code == 403
    token = auth.csrf_token("/user/alice")
    response = client.post("/admin/storage/retention", data={"user_id": "2", "subscription": full("orders"),
                                                             "days": "1", "csrf_token": token})
    assert response.status_code == 403
    with app.app_context():
        assert db.session.scalar(sa.select(Subscription.retention_days)) is None


def test_the_storage_page_shows_size_messages_bytes_oldest_and_the_passes(app, client, auth):
    admin, alice = seed(app)
    app.config["DATABASE_SIZE_LIMIT_MB"] = 1000
    with app.app_context():
        retention.run_if_due()
    auth.login("root")
    response = client.get("/admin/storage")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert re.search(r'id="database-size-words">[\d.,]+ (kB|MB) of 1,000.0 MB \(\d+%\)<', page)
    rows = re.findall(r'<tr class="storage-row" data-user="(\w+)" data-subscription="([^"]+)" data-messages="(\d+)"',
                      page)
    assert rows == [("alice", full("orders"), "5"), ("root", full("monitor-sub"), "1")]
    oldest = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%d")
    assert f">{oldest} " in page
    assert 'id="last-deleted">0</strong> messages deleted.' in page
    assert "Next pass:" in page and "due now" not in page


def test_an_admin_sets_and_clears_a_subscriptions_retention_and_the_pass_follows_it(app, client, auth):
    admin, alice = seed(app)
    auth.login("root")
    token = form_token(client, "/admin/storage")
    response = client.post("/admin/storage/retention", data={"user_id": str(alice), "subscription": full("orders"),
                                                             "days": "2", "csrf_token": token})
    assert response.status_code == 303
    page = client.get("/admin/storage").get_data(as_text=True)
    assert ("alice&#39;s messages of orders are now kept for 2 days. Older ones are deleted at the next "
            "retention pass.") in page
    with app.app_context():
        assert retention.retention_days_of(alice, full("orders")) == 2
        assert retention.apply_retention() == (1, True)  # the three-day-old one
    # The admin's default subscription has no row in their list until a retention is set.
    forever = client.post("/admin/storage/retention", data={"user_id": str(admin), "subscription": "monitor-sub",
                                                            "days": "0", "csrf_token": token}, follow_redirects=True)
    assert "root&#39;s messages of monitor-sub are now kept forever.</" in forever.get_data(as_text=True)
    with app.app_context():
        assert retention.retention_days_of(admin, full("monitor-sub")) == 0
    default = client.post("/admin/storage/retention", data={"user_id": str(alice), "subscription": full("orders"),
                                                            "days": "", "csrf_token": token}, follow_redirects=True)
    assert ("alice&#39;s messages of orders are now kept as long as the default (30 days). Older ones are deleted "
            "at the next retention pass.") in default.get_data(as_text=True)
    app.config["MESSAGE_RETENTION_DAYS"] = 0
    default = client.post("/admin/storage/retention", data={"user_id": str(alice), "subscription": full("orders"),
                                                            "days": "", "csrf_token": token}, follow_redirects=True)
    assert "orders are now kept as long as the default (forever).</" in default.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(Subscription.retention_days).where(Subscription.user_id == alice)) is None
    bad = client.post("/admin/storage/retention", data={"user_id": str(alice), "subscription": full("orders"),
                                                        "days": "-4", "csrf_token": token}, follow_redirects=True)
    assert "Retention not changed" in bad.get_data(as_text=True)


def test_healthz_reports_the_database_size(app, client):
    app.config["DATABASE_SIZE_LIMIT_MB"] = 500
    database = client.get("/healthz").get_json()["checks"]["database"]
    assert database["size_bytes"] > 0
    assert database["size_limit_bytes"] == 500 * 1024 * 1024 and database["size_level"] == "ok"


def live_page_warning(client, username: str) -> str | None:
    page = client.get(f"/user/{username}").get_data(as_text=True)
    match = re.search(r'id="database-size-warning" class="alert (alert-\w+)"', page)
    return match.group(1) if match else None


def test_the_live_page_warns_admins_at_80_and_95_percent_and_nobody_else(app, client, auth):
    seed(app)
    with app.app_context():
        size_mb = retention.database_size_bytes() / 1024 / 1024
    auth.login("root")
    assert live_page_warning(client, "root") is None  # no limit set
    for share, expected in ((0.5, None), (0.85, "alert-warning"), (0.97, "alert-danger")):
        app.config["DATABASE_SIZE_LIMIT_MB"] = size_mb / share
        assert live_page_warning(client, "root") == expected, share
    auth.logout()
    auth.login("alice")
    assert live_page_warning(client, "alice") is None

