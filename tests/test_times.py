"""Times: ISO 8601 with a Z on the way out; search dates read in the zone the page shows, a to-date
through the end of its day."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from app.explore.filters import FilterError, parse_time, parse_zone
from tests.bulk import insert_rows, item_row
from tests.conftest import create_user

# 03:30 UTC on 1 December: still 30 November in New York (22:30), 09:00 in Kolkata.
KNOWN_TIME = datetime(2026, 12, 1, 3, 30, tzinfo=UTC)


def store_known_message(app, user_id: int) -> int:
    """A message published and received at KNOWN_TIME, with the message id "known-message"; returns its id."""
    insert_rows(app, [item_row(user_id, json.dumps({"reading": 7}), {"origin": "known"}, publish_time=KNOWN_TIME,
                               received_at=KNOWN_TIME, message_id="known-message")])
    with app.app_context():
        from app.extensions import db
        from app.models import UserItem

        return db.session.scalar(db.select(UserItem.id).where(UserItem.message_id == "known-message"))


def test_a_date_without_an_offset_is_read_in_the_zone_given_and_a_to_date_takes_its_whole_day():
    new_york = ZoneInfo("America/New_York")
    assert parse_time("2026-12-01", "from") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_time("2026-12-01", "to", end_of_day=True) == datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_time("2026-12-01", "from", new_york) == datetime(2026, 12, 1, 5, tzinfo=UTC)
    assert parse_time("2026-12-01 14:30", "to", new_york, end_of_day=True) == datetime(2026, 12, 1, 19, 30, tzinfo=UTC)
    # An explicit offset wins over the zone.
    assert parse_time("2026-12-01T03:30:00Z", "from", new_york) == KNOWN_TIME
    assert parse_zone("") is UTC and parse_zone("UTC") is UTC
    with pytest.raises(FilterError):
        parse_zone("Mars/Olympus")
    with pytest.raises(FilterError):
        parse_time("yesterday", "from")


def test_a_one_day_search_finds_that_days_messages_in_the_zone_shown(app, client, auth):
    alice = create_user(app, "alice")
    store_known_message(app, alice)
    auth.login()
    assert "known-message" in client.get("/explore?from=2026-12-01&to=2026-12-01").get_data(as_text=True)
    assert "known-message" not in client.get("/explore?from=2026-11-30&to=2026-11-30").get_data(as_text=True)
    # In New York it was still 30 November.
    assert "known-message" in client.get(
        "/explore?from=2026-11-30&to=2026-11-30&tz=America/New_York").get_data(as_text=True)
    assert client.get("/explore?from=2026-11-30&tz=Mars/Olympus").status_code == 400


def test_timestamps_reach_the_page_with_a_z(app, client, auth):
    alice = create_user(app, "alice")
    item_id = store_known_message(app, alice)
    auth.login()
    row = client.get("/useritems?after=0").get_json()["items"][0]
    assert 'datetime="2026-12-01T03:30:00Z"' in row
    assert not re.search(r'datetime="[^"]*(\+00:00|\d)"', row)
    assert 'datetime="2026-12-01T03:30:00Z"' in client.get(f"/useritems/{item_id}").get_data(as_text=True)


def test_activity_reads_a_custom_day_and_labels_its_chart_in_the_zone_given(app, client, auth):
    alice = create_user(app, "alice")
    store_known_message(app, alice)  # 30 November in New York, 1 December in Kolkata
    auth.login("alice")
    day = {"range": "custom", "from": "2026-12-01", "to": "2026-12-01"}

    def summary(**zone) -> str:
        page = client.get("/activity", query_string={**day, **zone}).get_data(as_text=True)
        return re.search(r'id="activity-summary"[^>]*>(.*?)</p>', page, re.S).group(1)

    kolkata, new_york = summary(tz="Asia/Kolkata"), summary(tz="America/New_York")
    assert kolkata.split()[0] == "1" and "Asia/Kolkata" in kolkata and "2026-12-01 00:00" in kolkata
    assert new_york.split()[0] == "0" and "America/New_York" in new_york
    assert summary().split()[0] == "1" and "UTC" in summary()  # UTC without a zone
    assert client.get("/activity", query_string={**day, "tz": "Mars/Olympus"}).status_code == 400


@pytest.mark.browser
def test_activity_follows_the_browsers_zone(app, browser, live_server):
    from tests.test_browser import sign_in

    create_user(app, "alice")
    context = browser.new_context(base_url=live_server, timezone_id="America/New_York")
    try:
        page = sign_in(context)
        page.goto("/activity")
        page.wait_for_url(re.compile(r"[?&]tz="))
        assert "tz=America%2FNew_York" in page.url, page.url
        assert "(times in America/New_York)" in page.inner_text("#counts-title")
        page.click("#utc-switch")
        page.wait_for_url(re.compile(r"[?&]tz=UTC"))
        assert "(times in UTC)" in page.inner_text("#counts-title")
    finally:
        context.close()
