"""Search by filter expression: /explore?filter= and its SQL translation (app.filterquery).

The property: for random attribute maps and random expressions of a small grammar, the SQL
translation selects exactly the rows the evaluator (app.filterlang) accepts, on SQLite and on
PostgreSQL. Then the pages: results, errors with their position, the other filters combined, the
export, and conditions on the data, which are evaluated over a bounded scan.
"""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from app.extensions import db
from app.filterlang import parse
from app.filterquery import translate
from app.models import UserItem
from tests.bulk import insert_rows, item_row
from tests.conftest import create_user, store_items

KEYS = ["a", "b", "c"]
# Characters SQL treats specially (LIKE's % and _, quotes, the backslash), and some beyond ASCII.
# No NUL here: PostgreSQL cannot take it in SQL at all; test_nul_in_attributes_* covers it.
VALUE_CHARACTERS = "ab%_\\\"' é😀"
VALUES = st.text(VALUE_CHARACTERS, max_size=3)
ATTRIBUTE_MAPS = st.dictionaries(st.sampled_from([*KEYS, "d"]), VALUES, max_size=4)


def literal(text: str) -> str:
    """A string literal of the filter language: double quotes, with \\ and " escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


ATOMS = st.one_of(
    st.builds(lambda key: f"attributes:{key}", st.sampled_from(KEYS)),
    st.builds(lambda key, value: f"attributes.{key} = {literal(value)}", st.sampled_from(KEYS), VALUES),
    st.builds(lambda key, value: f"attributes.{key} != {literal(value)}", st.sampled_from(KEYS), VALUES),
    st.builds(lambda key, value: f"hasPrefix(attributes.{key}, {literal(value)})", st.sampled_from(KEYS), VALUES),
)
EXPRESSIONS = st.recursive(
    ATOMS,
    lambda inner: st.one_of(
        inner.map(lambda operand: f"NOT {operand}" if not operand.startswith(("NOT", "-")) else f"NOT ({operand})"),
        inner.map(lambda operand: f"-({operand})"),
        st.tuples(inner, inner).map(lambda pair: f"({pair[0]} AND {pair[1]})"),
        st.tuples(inner, inner).map(lambda pair: f"({pair[0]} OR {pair[1]})"),
    ),
    max_leaves=6,
)


@pytest.fixture
def owner(app) -> int:
    return create_user(app, "owner")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(maps=st.lists(ATTRIBUTE_MAPS, min_size=1, max_size=10), expression=EXPRESSIONS)
def test_sql_translation_selects_exactly_what_the_evaluator_accepts(app, owner, maps, expression):
    note(f"expression: {expression}")
    parsed = parse(expression)
    user_id = owner
    with app.app_context():
        db.session.execute(sa.delete(UserItem))
        db.session.commit()
        insert_rows(app, [item_row(user_id, f"m{index}", attributes, message_id=f"m{index}")
                          for index, attributes in enumerate(maps)])
        condition = translate(parsed.root, db.engine.dialect.name)
        assert condition is not None, "every attribute expression translates"
        selected = set(db.session.scalars(sa.select(UserItem.message_id).where(condition)))
        db.session.rollback()
    accepted = {f"m{index}" for index, attributes in enumerate(maps) if parsed.matches(attributes)}
    assert selected == accepted


@pytest.fixture
def alice(app, auth):
    user_id = create_user(app, "alice")
    create_user(app, "bob")
    return user_id


def ids(client, **query) -> list[int]:
    reply = client.get("/explore/items", query_string={"after": 0, **query})
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
    return reply.get_json()["ids"]


def test_search_by_filter_returns_the_matching_messages_with_the_other_filters(app, client, auth, alice):
    stored = [
        ({"status": "FAILURE", "region": "eu"}, "sub-a", "build one failed"),
        ({"status": "FAILURE"}, "sub-b", "build two failed"),
        ({"status": "SUCCESS", "region": "eu-west"}, "sub-a", "build three"),
        ({"region": "us"}, "sub-a", "no status"),
    ]
    item_ids = store_items(app, alice, [{"attributes": attributes, "subscription": subscription, "data": data}
                                        for attributes, subscription, data in stored])
    store_items(app, 2, [{"attributes": {"status": "FAILURE"}, "data": "bob's"}])
    auth.login("alice")
    failures = 'attributes.status = "FAILURE"'
    assert ids(client, filter=failures) == [item_ids[0], item_ids[1]]
    assert ids(client, filter=failures, sub="sub-a") == [item_ids[0]]
    assert ids(client, filter=failures, q="two") == [item_ids[1]]
    assert ids(client, filter=failures, attr="region=eu") == [item_ids[0]]
    # A missing key: hasPrefix needs the key; NOT of it takes the messages without it.
    # != is the negation of = (app.filterlang, reading 1): a message without the key passes.
    assert ids(client, filter='attributes.status != "FAILURE"') == [item_ids[2], item_ids[3]]
    assert ids(client, filter='NOT attributes.status = "FAILURE"') == [item_ids[2], item_ids[3]]
    assert ids(client, filter='hasPrefix(attributes.region, "eu")') == [item_ids[0], item_ids[2]]
    assert ids(client, filter='NOT hasPrefix(attributes.region, "eu")') == [item_ids[1], item_ids[3]]
    assert ids(client, filter="-attributes:status") == [item_ids[3]]
    # The page shows the same messages, keeps the expression in the form, the links and the live poll.
    page = client.get("/explore", query_string={"filter": failures})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    shown = [int(value) for value in re.findall(r'data-item-id="(\d+)"', html)]
    assert shown == [item_ids[1], item_ids[0]]
    assert 'value="attributes.status = &#34;FAILURE&#34;"' in html
    for link in ("data-items-url", 'id="export-jsonl" href', 'id="export-csv" href'):
        assert re.search(link + r'="[^"]*filter=attributes.status(\+|%20)%3D(\+|%20)%22FAILURE%22', html), link


def test_prefix_wildcards_and_quotes_match_literally(app, client, auth, alice):
    item_ids = store_items(app, alice, [{"attributes": {"path": value}} for value in
                                        ["100%_done", "100xydone", 'say "hi"', "back\\slash", "é-unicode"]])
    auth.login("alice")
    assert ids(client, filter='hasPrefix(attributes.path, "100%_")') == [item_ids[0]]
    assert ids(client, filter='hasPrefix(attributes.path, "say \\"")') == [item_ids[2]]
    assert ids(client, filter='attributes.path = "back\\\\slash"') == [item_ids[3]]
    assert ids(client, filter='hasPrefix(attributes.path, "é")') == [item_ids[4]]


def test_an_invalid_expression_is_a_field_error_with_its_position(app, client, auth, alice):
    store_items(app, alice, [{"attributes": {"status": "FAILURE"}}])
    auth.login("alice")
    expression = 'attributes.status = "FAILURE" AND attributes.region ='
    page = client.get("/explore", query_string={"filter": expression, "q": "kept"})
    html = page.get_data(as_text=True)
    assert page.status_code == 400
    error = re.search(r'id="filter-error">([^<]*)<', html)
    assert error, "the error is shown beside the filter field"
    assert error.group(1).endswith(f" at {len(expression)}.")
    assert re.search(r'class="[^"]*is-invalid[^"]*" id="filter"', html)
    assert "kept" in html  # what was typed stays
    reply = client.get("/explore/items", query_string={"filter": expression, "after": 0})
    assert reply.status_code == 400
    body = reply.get_json()
    assert body["field"] == "filter" and body["position"] == len(expression)
    export = client.get("/explore/export.jsonl", query_string={"filter": expression})
    assert export.status_code == 400


def test_export_honours_the_filter_expression(app, client, auth, alice):
    item_ids = store_items(app, alice, [{"attributes": {"status": status}, "data": f"d{index}"}
                                        for index, status in enumerate(["FAILURE", "SUCCESS", "FAILURE"])])
    auth.login("alice")
    lines = client.get("/explore/export.jsonl", query_string={"filter": 'attributes.status = "FAILURE"'})
    exported = [json.loads(line)["id"] for line in lines.get_data(as_text=True).splitlines()]
    assert exported == [item_ids[0], item_ids[2]]
    csv_text = client.get("/explore/export.csv", query_string={"filter": 'NOT attributes.status = "FAILURE"'})
    assert csv_text.get_data(as_text=True).count("\n") == 2  # the header and one message


def test_nul_in_attributes_is_decided_by_the_evaluator(app, client, auth, alice):
    """Neither database reads a NUL in the stored JSON whole: such rows are candidates the evaluator decides."""
    item_ids = store_items(app, alice, [
        {"attributes": {"status": "FAILURE", "note": "a\x00b"}},
        {"attributes": {"status": "SUCCESS", "note": "a\x00b"}},
        {"attributes": {"status": "FAILURE"}},
        {"attributes": {"status": "SUCCESS"}},
    ])
    auth.login("alice")
    assert ids(client, filter='attributes.status = "FAILURE"') == [item_ids[0], item_ids[2]]
    assert ids(client, filter='NOT attributes.status = "FAILURE"') == [item_ids[1], item_ids[3]]
    assert ids(client, filter='NOT attributes:note') == [item_ids[2], item_ids[3]]
    # SQLite's JSON functions cut text at a NUL: "a\x00b" must not pass for "a".
    assert ids(client, filter='attributes.note = "a"') == []
    assert ids(client, filter='NOT attributes.note = "a"') == item_ids
    assert ids(client, filter='attributes.note = "a\\x00b"') == [item_ids[0], item_ids[1]]


def test_conditions_on_the_data_are_evaluated_over_a_bounded_scan_that_the_page_reports(app, client, auth, alice):
    app.config["FILTER_SCAN_MAX_MESSAGES"] = 10
    stored = [{"data": json.dumps({"n": index, "result": "boom" if index % 4 == 0 else "fine"}),
               "attributes": {"status": "FAILURE" if index % 2 == 0 else "SUCCESS"}} for index in range(25)]
    item_ids = store_items(app, alice, stored)
    auth.login("alice")
    booms = [item_id for item_id, message in zip(item_ids, stored, strict=True) if "boom" in message["data"]]

    page = client.get("/explore", query_string={"filter": 'data:"boom"'})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    shown = [int(value) for value in re.findall(r'data-item-id="(\d+)"', html)]
    newest_ten = item_ids[-10:]
    assert shown == sorted((item_id for item_id in booms if item_id in newest_ten), reverse=True)
    note_text = re.search(r'id="scan-note"[^>]*>(.*?)</p>', html, re.S).group(1)
    assert "10 were read" in note_text and "older ones were not read" in note_text
    assert 'data-stopped="bound"' in html
    # "Older messages" goes on from where the scan stopped.
    older = re.search(r'id="older-link" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert f"before={newest_ten[0]}" in older
    html = client.get(older).get_data(as_text=True)
    shown_older = [int(value) for value in re.findall(r'data-item-id="(\d+)"', html)]
    assert shown_older == sorted((item_id for item_id in booms if item_id in item_ids[-20:-10]), reverse=True)

    # The live poll reads forward in bounded steps and says where it got to, so it never rereads.
    reply = client.get("/explore/items", query_string={"filter": 'data:"boom"', "after": 0}).get_json()
    assert reply["ids"] == [item_id for item_id in booms if item_id <= item_ids[9]]
    assert reply["scanned"] == 10 and reply["scanned_to"] == item_ids[9] and reply["more"] is True
    reply = client.get("/explore/items",
                       query_string={"filter": 'data:"boom"', "after": reply["scanned_to"]}).get_json()
    assert reply["ids"] == [item_id for item_id in booms if item_ids[9] < item_id <= item_ids[19]]

    # An attribute condition beside it is answered by SQL: only candidates count against the bound.
    both = 'attributes.status = "FAILURE" AND data.result = "boom"'
    page = client.get("/explore", query_string={"filter": both}).get_data(as_text=True)
    shown = [int(value) for value in re.findall(r'data-item-id="(\d+)"', page)]
    failing_booms = [item_id for item_id, message in zip(item_ids, stored, strict=True)
                     if "boom" in message["data"] and message["attributes"]["status"] == "FAILURE"]
    candidates = [item_id for item_id, message in zip(item_ids, stored, strict=True)
                  if message["attributes"]["status"] == "FAILURE"][-10:]
    assert shown == sorted((item_id for item_id in failing_booms if item_id in candidates), reverse=True)

    # The export has no bound: every match.
    lines = client.get("/explore/export.jsonl", query_string={"filter": 'data:"boom"'}).get_data(as_text=True)
    assert [json.loads(line)["id"] for line in lines.splitlines()] == booms


@pytest.mark.parametrize("expression", [
    'attributes.note = "a\\x00b"',                # an escaped NUL: PostgreSQL cannot take it as SQL text
    'hasPrefix(attributes.note, "a\\u0000")',
    'attributes.note = "a\x00b"',                 # a raw NUL: a syntax error
    "attributes:" + "k" * 5000,                   # far too long
    "(" * 40 + "attributes:a" + ")" * 40,         # too deep
    "attributes.a = \"\\ud800\"",                 # a surrogate
    "\ufeffattributes:a",
])
def test_hostile_expressions_answer_a_result_or_an_error_never_a_crash(app, client, auth, alice, expression):
    item_ids = store_items(app, alice, [{"attributes": {"note": "a\x00b"}}, {"attributes": {"note": "ab"}}])
    auth.login("alice")
    for path, extra in (("/explore", {}), ("/explore/items", {"after": 0}), ("/explore/export.jsonl", {}),
                        ("/filter_check", {})):
        response = client.get(path, query_string={"filter": expression, **extra})
        assert response.status_code in (200, 400), f"{path}: {response.status_code}"
    reply = client.get("/explore/items", query_string={"filter": expression, "after": 0})
    if reply.status_code == 200:
        parsed = parse(expression, extensions=True)
        expected = [item_id for item_id, note in zip(item_ids, ["a\x00b", "ab"], strict=True)
                    if parsed.matches({"note": note})]
        assert reply.get_json()["ids"] == expected
