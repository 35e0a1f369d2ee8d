"""Activity: time ranges, counts per bucket, latency percentiles, delivery attempts and the breakdown,
from known stored messages (SQLite, and PostgreSQL with TEST_DATABASE_URL); and errors shown on the form."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from app.explore.charts import latency_percentiles, percentile, preset_window, time_window
from tests.bulk import insert_rows, item_row
from tests.conftest import create_user

SUMMARY = re.compile(r'id="activity-summary">(\d+) messages received')


def summary_total(response) -> int:
    return int(SUMMARY.search(response.get_data(as_text=True)).group(1))


def section(html: str, element_id: str) -> str:
    """The markup of one chart, from its id to the end of its element."""
    start = html.index(f'id="{element_id}"')
    return html[start:html.index("</table>" if "<table" in html[start - 80:start] else "</svg>\n</div>", start)]


def bar_titles(html: str, element_id: str) -> list[str]:
    return re.findall(r"<title>([^<]+)</title>", section(html, element_id))


def row_chart(html: str, element_id: str) -> dict[str, int]:
    body = section(html, element_id)
    labels = re.findall(r'class="breakdown-label">([^<]*)<', body)
    counts = [int(count) for count in re.findall(r'class="breakdown-count">(\d+)<', body)]
    return dict(zip(labels, counts, strict=True))


@pytest.fixture
def signed_in_alice(app, auth):
    alice = create_user(app, "alice")
    auth.login()
    return alice


def test_presets_cover_the_last_hour_day_and_week(app, client, signed_in_alice):
    now = datetime.now(UTC)
    ages = [timedelta(minutes=10)] * 3 + [timedelta(hours=2)] * 2 + [timedelta(days=3)] + [timedelta(days=9)]
    insert_rows(app, [item_row(signed_in_alice, "m", received_at=now - age) for age in ages])
    assert summary_total(client.get("/activity?range=1h")) == 3
    assert summary_total(client.get("/activity?range=24h")) == 5
    assert summary_total(client.get("/activity")) == 5  # 24 h by default
    week = client.get("/activity?range=7d")
    assert summary_total(week) == 6
    assert "busiest 3 hours" in week.get_data(as_text=True)


def test_one_hour_has_a_bar_per_minute_on_a_labelled_y_axis(app, client, signed_in_alice):
    now = datetime.now(UTC)
    insert_rows(app, [item_row(signed_in_alice, "m", received_at=now - timedelta(minutes=minutes))
                      for minutes in (5, 5, 5, 20)])
    html = client.get("/activity?range=1h").get_data(as_text=True)
    titles = bar_titles(html, "chart-series")
    assert sorted(int(title.rsplit(": ", 1)[1].split()[0]) for title in titles) == [1, 3]
    assert all(" UTC: " in title for title in titles)
    axis = section(html, "chart-series")
    y_labels = re.findall(r'<text class="chart-text" x="100%"[^>]*>([^<]+)</text>', axis)
    assert y_labels == ["0", "1", "2", "3", "4"]  # ticks up to a round number above the peak of 3
    assert axis.count('class="chart-grid') == 5
    assert "(times in UTC)" in html


def test_custom_range_counts_only_messages_inside_it(app, client, signed_in_alice):
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    insert_rows(app, [item_row(signed_in_alice, "m", received_at=base + timedelta(hours=hours))
                      for hours in (-1, 0.5, 1, 5.5, 30)])
    response = client.get("/activity?range=custom&from=2026-03-01T12:00&to=2026-03-01T18:00")
    assert response.status_code == 200
    assert summary_total(response) == 3
    assert "from 2026-03-01 12:00 to 2026-03-01 18:00 UTC" in response.get_data(as_text=True)


def test_latency_p50_and_p95_per_bucket_from_stored_times(app, client, signed_in_alice):
    received = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(minutes=3)
    rows = [item_row(signed_in_alice, "m", publish_time=received - timedelta(seconds=seconds), received_at=received)
            for seconds in range(1, 21)]
    rows.append(item_row(signed_in_alice, "m", publish_time=received - timedelta(minutes=20, milliseconds=250),
                         received_at=received - timedelta(minutes=20)))
    insert_rows(app, rows)
    titles = bar_titles(client.get("/activity?range=1h").get_data(as_text=True), "chart-latency")
    minute = received.strftime("%H:%M")
    # p95 is drawn first (behind), then p50; percentiles interpolate as percentile_cont does.
    assert f"{minute} UTC: 19.05 s" in titles and f"{minute} UTC: 10.5 s" in titles
    earlier = (received - timedelta(minutes=20)).strftime("%H:%M")
    assert titles.count(f"{earlier} UTC: 0.25 s") == 2  # one message: p50 = p95


def test_delivery_attempts_are_counted_with_unknown_first(app, client, signed_in_alice):
    now = datetime.now(UTC)
    attempts = [None, None, None, 1, 1, 5]
    insert_rows(app, [item_row(signed_in_alice, "m", received_at=now, delivery_attempt=number) for number in attempts])
    html = client.get("/activity?range=1h").get_data(as_text=True)
    assert row_chart(html, "chart-attempts") == {"first / unknown": 3, "1 attempt": 2, "5 attempts": 1}
    assert list(row_chart(html, "chart-attempts")) == ["first / unknown", "1 attempt", "5 attempts"]


def test_breakdown_shows_the_top_ten_and_the_rest_as_other(app, client, signed_in_alice):
    now = datetime.now(UTC)
    rows = []
    for number in range(12):  # value-00 has 13 messages ... value-11 has 2
        rows += [item_row(signed_in_alice, "m", {"status": f"value-{number:02d}"}, received_at=now)
                 for _ in range(13 - number)]
    rows += [item_row(signed_in_alice, "m", {}, received_at=now)]
    insert_rows(app, rows)
    chart = row_chart(client.get("/activity?range=1h&attribute=status").get_data(as_text=True), "chart-breakdown")
    assert list(chart)[:10] == [f"value-{number:02d}" for number in range(10)]
    assert chart["value-00"] == 13 and chart["value-09"] == 4
    assert chart["other"] == 3 + 2 + 1  # value-10, value-11 and the message without the attribute
    assert len(chart) == 11


def test_activity_only_counts_the_signed_in_users_messages(app, client, signed_in_alice):
    bob = create_user(app, "bob")
    insert_rows(app, [item_row(bob, "not alice's", received_at=datetime.now(UTC))])
    assert summary_total(client.get("/activity?range=1h")) == 0


@pytest.mark.parametrize(("query", "field", "message"), [
    ("range=custom&from=yesterday&to=2026-03-01T18:00", "from", "From must be a date"),
    ("range=custom&from=2026-03-01T18:00&to=2026-03-01T12:00", "to", "The end must come after the start."),
    ("range=custom&from=2026-01-01T00:00&to=2026-12-01T00:00", "to", "A range covers at most 92 days."),
    ("range=custom&from=2026-01-01T00:00", "to", "Give the end of the range."),
    ("range=custom&from=0001-01-01T00:00&to=0001-01-02T00:00", "from", "Give a time between 1970 and 9000."),
    ("range=custom&from=9999-12-31T00:00&to=9999-12-31T23:59", "from", "Give a time between 1970 and 9000."),
    ("range=fortnight", "range", "Choose 1 h, 24 h, 7 d or custom."),
    ('attribute=st"atus', "attribute", "may not contain quotes"),
])
def test_a_bad_activity_range_is_a_field_error_on_the_form(client, signed_in_alice, query, field, message):
    response = client.get(f"/activity?{query}")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert re.search(rf'id="{field}-error">[^<]*{re.escape(message)}', html), html[:3000]
    assert 'id="activity-form"' in html and 'id="chart-series"' in html  # the page, not an error page


@pytest.mark.parametrize(("query", "field", "message"), [
    ("from=not-a-date", "from", "From must be a date"),
    ("to=2026-13-45", "to", "To must be a date"),
    ("attr=no-equals-sign", "attr", "An attribute filter must be key=value"),
])
def test_a_bad_search_filter_is_a_field_error_on_the_form(client, signed_in_alice, query, field, message):
    response = client.get(f"/explore?q=kept&{query}")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert re.search(rf'id="{field}-error">[^<]*{re.escape(message)}', html)
    assert "&#39;" + query.split("=", 1)[1] + "&#39;" in html  # the message quotes what was typed
    assert 'id="filter-form"' in html and 'value="kept"' in html  # the form, with what was typed
    typed = query.split("=", 1)[1]
    assert f'value="{typed}"' in html
    as_json = client.get(f"/explore?{query}", headers={"Accept": "application/json"})
    assert as_json.status_code == 400 and as_json.get_json()["status"] == "error"


def test_percentiles_interpolate_like_percentile_cont():
    assert percentile([1.0], 0.95) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert latency_percentiles([(0, 2.0), (0, 4.0), (2, 1.0), (7, 9.0)], 3) == [(3.0, 3.9), None, (1.0, 1.0)]


def test_windows_are_whole_buckets_on_round_times():
    now = datetime(2026, 12, 1, 19, 13, 12, tzinfo=UTC)
    hour = preset_window("1h", now)
    assert hour.step == timedelta(minutes=1) and hour.start == datetime(2026, 12, 1, 18, 13, tzinfo=UTC)
    assert hour.end == datetime(2026, 12, 1, 19, 14, tzinfo=UTC)
    day = preset_window("24h", now)
    assert day.step == timedelta(minutes=15) and day.bucket_count == 97
    week = preset_window("7d", now)
    assert week.step == timedelta(hours=3) and week.bucket_count <= 120
    custom = time_window(datetime(2026, 3, 1, 12, tzinfo=UTC), datetime(2026, 3, 1, 18, tzinfo=UTC))
    assert (custom.step, custom.bucket_count) == (timedelta(minutes=5), 72)
