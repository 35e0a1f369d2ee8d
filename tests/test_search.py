"""Search and filter: every filter kind and their combinations return exactly the expected messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.bulk import insert_rows, item_row
from tests.conftest import create_user, store_item

MESSAGE_COUNT = 5000
BASE_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STATUSES = ["SUCCESS", "FAILURE", "WORKING", "QUEUED"]
REGIONS = ["eu", "us", "asia"]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo 100%_done"]
INJECTION = "' OR 1=1 --"


def message(index: int) -> dict:
    """The known content of message number `index`."""
    return {
        "index": index,
        "data": json.dumps({"n": index, "word": WORDS[index % 5]}),
        "attributes": {"status": STATUSES[index % 4], "region": REGIONS[index % 3], "build": f"b{index}"},
        "publish_time": BASE_TIME + timedelta(seconds=index),
        "subscription": "sub-a" if index % 2 == 0 else "sub-b",
    }


@pytest.fixture
def searchable(app, client, auth):
    """5,000 messages with known attributes, plus one whose data is SQL-looking; alice signed in."""
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    messages = [message(index) for index in range(MESSAGE_COUNT)]
    insert_rows(app, (item_row(alice, m["data"], m["attributes"], subscription=m["subscription"],
                               publish_time=m["publish_time"], message_id=f"m{m['index']}") for m in messages))
    # Bob's messages match every filter but are never Alice's results.
    insert_rows(app, (item_row(bob, m["data"], m["attributes"], subscription=m["subscription"],
                               publish_time=m["publish_time"], message_id=f"bob{m['index']}") for m in messages[:50]))
    insert_rows(app, [item_row(alice, f"literal {INJECTION} here", {"status": INJECTION}, message_id="injection",
                               subscription="sub-c", publish_time=BASE_TIME - timedelta(days=1))])
    auth.login("alice")
    app.config["ALICE_ID"] = alice
    return messages


def exported_ids(client, query: dict) -> set[str]:
    response = client.get("/explore/export.jsonl", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return {json.loads(line)["message_id"] for line in response.get_data(as_text=True).splitlines()}


def expected(messages, predicate) -> set[str]:
    return {f"m{m['index']}" for m in messages if predicate(m)}


def in_time(m, start, end) -> bool:
    return start <= m["publish_time"] <= end


START = BASE_TIME + timedelta(seconds=1000)
END = BASE_TIME + timedelta(seconds=1999)

CASES = {
    "text": ({"q": "charlie"}, lambda m: WORDS[m["index"] % 5] == "charlie"),
    "text is case-insensitive": ({"q": "CHARLIE"}, lambda m: WORDS[m["index"] % 5] == "charlie"),
    "text with LIKE wildcards matches them literally": ({"q": "100%_d"}, lambda m: m["index"] % 5 == 4),
    "one attribute": ({"attr": "status=FAILURE"}, lambda m: m["attributes"]["status"] == "FAILURE"),
    "attribute values match whole": ({"attr": "build=b12"}, lambda m: m["index"] == 12),
    "attribute match is case-sensitive": ({"attr": "status=failure"}, lambda m: False),
    "two attributes": ({"attr": ["status=SUCCESS", "region=us"]},
                       lambda m: m["attributes"]["status"] == "SUCCESS" and m["attributes"]["region"] == "us"),
    "publish-time range": ({"from": START.isoformat(), "to": END.isoformat()}, lambda m: in_time(m, START, END)),
    "open-ended range, browser's datetime-local form": ({"from": "2024-05-01T13:00"},
                                                        lambda m: m["publish_time"] >= BASE_TIME + timedelta(hours=1)),
    "subscription": ({"sub": "sub-b"}, lambda m: m["subscription"] == "sub-b"),
    "everything combined": (
        {"q": "alpha", "attr": ["status=SUCCESS", "region=eu"], "from": START.isoformat(), "to": END.isoformat(),
         "sub": "sub-a"},
        lambda m: WORDS[m["index"] % 5] == "alpha" and m["attributes"]["status"] == "SUCCESS"
        and m["attributes"]["region"] == "eu" and in_time(m, START, END) and m["subscription"] == "sub-a",
    ),
    "text and subscription": ({"q": "delta", "sub": "sub-a"},
                              lambda m: WORDS[m["index"] % 5] == "delta" and m["subscription"] == "sub-a"),
}


def test_each_filter_kind_and_combinations_return_exactly_the_expected_set(searchable, client):
    for name, (query, predicate) in CASES.items():
        want = expected(searchable, predicate)
        got = exported_ids(client, query)
        assert got == want, f"{name}: {len(got)} returned, {len(want)} expected; extra {sorted(got - want)[:5]}, "\
                            f"missing {sorted(want - got)[:5]}"
    # The combined case must not be trivially empty, or it would prove nothing.
    assert expected(searchable, CASES["everything combined"][1])
    assert len(exported_ids(client, {})) == MESSAGE_COUNT + 1


@pytest.mark.parametrize("query", [{"q": INJECTION}, {"attr": f"status={INJECTION}"}, {"sub": "sub-c' OR '1'='1"}])
def test_sql_looking_input_matches_literally(searchable, client, query):
    got = exported_ids(client, query)
    assert got == ({"injection"} if "sub" not in query else set())


def test_results_page_by_keyset_and_the_live_poll_respects_the_filter(app, searchable, client):
    query = {"attr": "status=QUEUED", "sub": "sub-b"}
    want = expected(searchable, lambda m: m["attributes"]["status"] == "QUEUED" and m["subscription"] == "sub-b")
    page = client.get("/explore", query_string=query).get_data(as_text=True)
    assert 'id="older-link"' in page
    # Walk older pages by id, as the "Older messages" link does.
    seen: list[int] = []
    reply = client.get("/explore/items", query_string={**query, "before": 10**12}).get_json()
    while reply["ids"]:
        seen += reply["ids"]
        assert reply["ids"] == sorted(reply["ids"], reverse=True)
        reply = client.get("/explore/items", query_string={**query, "before": reply["ids"][-1]}).get_json()
    assert len(seen) == len(set(seen)) == len(want)
    # New messages: only the matching one comes through the live poll.
    newest = max(seen)
    alice_id = app.config["ALICE_ID"]
    matching = store_item(app, alice_id, "new", attributes={"status": "QUEUED"}, subscription="sub-b")
    store_item(app, alice_id, "new", attributes={"status": "QUEUED"}, subscription="sub-a")
    store_item(app, alice_id, "new", attributes={"status": "SUCCESS"}, subscription="sub-b")
    live = client.get("/explore/items", query_string={**query, "after": newest}).get_json()
    assert live["ids"] == [matching]


def test_filter_lives_in_the_url_and_bad_values_are_explained(searchable, client):
    page = client.get("/explore", query_string={"q": "<b>x</b>", "attr": "status=SUCCESS", "sub": "sub-a"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    # The export links and the live poll carry the same filter.
    query = "q=%3Cb%3Ex%3C/b%3E&amp;attr=status%3DSUCCESS&amp;sub=projects/test-project/subscriptions/sub-a"
    assert f"export.jsonl?{query}" in html
    assert f'data-items-url="/explore/items?{query}"' in html
    bad = client.get("/explore/items", query_string={"from": "yesterday"})
    assert bad.status_code == 400 and "from must be a date" in bad.get_json()["error"]
    assert client.get("/explore", query_string={"attr": "no-equals-sign"}).status_code == 400


def test_attribute_filters_compare_whole_keys_and_values(app, client, auth):
    """A key or value that holds the text of another pair does not match it (no substring search)."""
    alice = create_user(app, "alice")
    real = store_item(app, alice, "real", attributes={"status": "SUCCESS"})
    key_imitation = store_item(app, alice, "key", attributes={'zz"status': "SUCCESS"})
    value_imitation = store_item(app, alice, "value", attributes={"note": 'x", "status": "SUCCESS'})
    longer_value = store_item(app, alice, "longer", attributes={"status": "SUCCESS!"})
    longer_key = store_item(app, alice, "longer key", attributes={"xstatus": "SUCCESS"})
    auth.login("alice")

    def matching(*pairs: str) -> list[int]:
        return client.get("/explore/items", query_string={"attr": list(pairs), "after": 0}).get_json()["ids"]

    assert matching("status=SUCCESS") == [real]
    assert matching('zz"status=SUCCESS') == [key_imitation]
    assert matching('note=x", "status": "SUCCESS') == [value_imitation]
    assert matching("status=SUCCESS!") == [longer_value]
    assert matching("xstatus=SUCCESS") == [longer_key]
    assert matching("status=") == []
