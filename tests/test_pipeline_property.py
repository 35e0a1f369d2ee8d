"""A property of the whole pipeline: what is published is what every page and export gives back.

Hypothesis draws one batch of hostile messages (random bytes and text with NUL, any unicode
but unpaired surrogates, up to 100 attributes, ordering keys). They are published once to
the emulator and stored by one real worker; then each message's list row, detail page,
download, and the JSON Lines and CSV exports are fetched. Stored equals published byte for
byte, and nothing answers 500. One example per run keeps CI's time budget; a failure prints
the drawn batch. JSON payloads are kept shallow here: deep nesting is rendering's own test.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re

import sqlalchemy as sa
from google.cloud import pubsub_v1
from google.pubsub_v1 import PublisherClient as GeneratedPublisherClient
from google.pubsub_v1.types import PubsubMessage
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from app import polling
from app.explore.export import decoded_data
from app.extensions import db
from app.models import User, UserItem
from tests.conftest import create_user, make_pubsub_names, wait_until

HOSTILE_TEXTS = ["\x00", "a\x00b", "\u202eevil", "𝄞 é ✓", '{"k": 1}', "=1+2", "@sum", "-3", "\r\n", "\\N", "\t",
                 "<script>x</script>", "&amp;", "\ufeff", "\u2028"]
# Any code point but the surrogates, which UTF-8 (and so Pub/Sub) cannot carry on their own.
ANY_TEXT_CHARACTER = st.characters(exclude_categories=("Cs",))
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def hostile_text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    drawn = st.text(ANY_TEXT_CHARACTER, min_size=min_size, max_size=max_size)
    return st.one_of(drawn, st.sampled_from([text for text in HOSTILE_TEXTS if len(text) >= min_size]))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | hostile_text(20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(hostile_text(10), children, max_size=5),
    max_leaves=20,
)

PAYLOADS = st.one_of(
    st.binary(max_size=400),
    hostile_text(200).map(lambda text: text.encode("utf-8")),
    JSON_VALUES.map(lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8")),
)

# Pub/Sub's limits: keys up to 256 bytes and not starting with "goog", values up to 1024 bytes.
ATTRIBUTE_KEYS = hostile_text(12, min_size=1).filter(lambda key: not key.startswith("goog"))


def messages(attributes: st.SearchStrategy[dict[str, str]]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({
        "data": PAYLOADS,
        "attributes": attributes,
        "ordering_key": st.one_of(st.just(""), hostile_text(20, min_size=1)),
    }).filter(lambda message: message["data"] or message["attributes"])  # Pub/Sub refuses an empty message


# Most messages carry a few attributes; a few carry 100, the most Pub/Sub allows. Hypothesis
# bounds the size of one example, so those few draw shorter keys and values.
BATCHES = st.tuples(
    st.lists(messages(st.dictionaries(ATTRIBUTE_KEYS, hostile_text(40), max_size=6)), min_size=30, max_size=45),
    st.lists(messages(st.dictionaries(ATTRIBUTE_KEYS, hostile_text(3), min_size=100, max_size=100)),
             min_size=1, max_size=2),
).map(lambda parts: parts[0] + parts[1])


def publish_all(topic_path: str, messages: list[dict]) -> dict[str, dict]:
    """Publish every message in one request; returns them by message id.

    The client's own `publish(topic, data, **attributes)` cannot take an attribute named
    `data` or `ordering_key`, so the request goes through the generated client it extends.
    """
    publisher = pubsub_v1.PublisherClient()
    request = [PubsubMessage(data=message["data"], attributes=message["attributes"],
                             ordering_key=message["ordering_key"]) for message in messages]
    response = GeneratedPublisherClient.publish(publisher, topic=topic_path, messages=request, timeout=60)
    return dict(zip(response.message_ids, messages, strict=True))


def matches_csv_cell(cell: str, expected: str) -> bool:
    """Exact, or with the quote a spreadsheet-safe export puts before a formula-like cell."""
    return cell == expected or (expected.startswith(CSV_FORMULA_STARTS) and cell == "'" + expected)


def textarea(page: str, element_id: str) -> str:
    found = re.search(rf'<textarea id="{element_id}"[^>]*>(.*?)</textarea>', page, re.DOTALL)
    assert found, f"no #{element_id} on the page"
    return html.unescape(found.group(1))


@settings(max_examples=1, deadline=None, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(messages=BATCHES)
def test_every_published_message_comes_back_byte_for_byte_from_every_page_and_export(
    app, client, auth, emulator, worker_factory, messages
):
    # Made here, not by the pubsub_names fixture, so that every example has a subscription of its own.
    names = make_pubsub_names()
    topic_path, subscription = names["topic_path"], names["subscription"]
    subscription_path = names["subscription_path"]

    with app.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.username == "alice"))
    user_id = user_id or create_user(app, "alice")
    published = publish_all(topic_path, messages)
    note(f"published: {published!r}")
    worker_factory()
    with app.app_context():
        task_id = polling.launch(db.session.get(User, user_id), polling.canonical(subscription)).id

    def stored() -> dict[str, UserItem]:
        with app.app_context():
            items = db.session.scalars(sa.select(UserItem).where(UserItem.subscription == subscription_path)).all()
            db.session.expunge_all()
            return {item.message_id: item for item in items}

    wait_until(lambda: len(stored()) == len(published), 60, interval=0.3, message="every message stored")
    with app.app_context():
        polling.transition(task_id, polling.TaskState.STOPPING)
    items = stored()
    assert set(items) == set(published)

    # The database: exact, directly or through the quarantined form's raw message.
    for message_id, message in published.items():
        original = items[message_id].original_message()
        assert original["data"] == message["data"]
        assert original["attributes"] == message["attributes"]
        assert original["ordering_key"] == message["ordering_key"]
        if not items[message_id].is_quarantined:
            assert items[message_id].data == message["data"]
            assert (items[message_id].ordering_key or "") == message["ordering_key"]

    auth.login()
    # The list rows, page by page, as the live poll fetches them.
    listed: list[int] = []
    after = 0
    while True:
        page = client.get(f"/useritems?after={after}")
        assert page.status_code == 200
        listed += page.json["ids"]
        if not page.json["more"]:
            break
        after = page.json["ids"][-1]
    assert {item.id for item in items.values()} <= set(listed)
    assert client.get("/user/alice").status_code == 200

    for message_id, message in published.items():
        item = items[message_id]
        download = client.get(f"/useritems/{item.id}/data")
        assert download.status_code == 200 and download.data == message["data"]
        detail = client.get(f"/useritems/{item.id}")
        assert detail.status_code == 200, f"the detail page of {message_id} answers {detail.status_code}"
        page = detail.get_data(as_text=True)
        data_text = item.data_text if item.data_text is not None else base64.b64encode(message["data"]).decode()
        assert textarea(page, "copy-data") == data_text
        assert json.loads(textarea(page, "copy-attributes")) == message["attributes"]

    exported = client.get("/explore/export.jsonl")
    assert exported.status_code == 200
    records = {record["message_id"]: record for record in map(json.loads, exported.get_data().splitlines())}
    for message_id, message in published.items():
        record = records[message_id]
        assert decoded_data(record) == message["data"]
        assert record["attributes"] == message["attributes"]
        # A quarantined message's ordering key is exact only in raw_message; the export shows its readable copy.
        assert record["ordering_key"] == (items[message_id].ordering_key or "")
        if not items[message_id].is_quarantined:
            assert record["ordering_key"] == message["ordering_key"]

    exported = client.get("/explore/export.csv")
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True), newline="")))
    by_id = {row["message_id"]: row for row in rows}
    for message_id, message in published.items():
        row = by_id[message_id]
        if row["data_encoding"] == "base64":
            assert base64.b64decode(row["data"]) == message["data"]
        else:
            assert matches_csv_cell(row["data"], message["data"].decode("utf-8"))
        assert json.loads(row["attributes"].removeprefix("'")) == message["attributes"]
        assert matches_csv_cell(row["ordering_key"], items[message_id].ordering_key or "")
