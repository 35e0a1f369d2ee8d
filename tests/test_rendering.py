"""How one stored message is shown: highlighted JSON, escaped text, labelled binary, cut when large."""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import UserItem
from app.rendering import HEX_PREVIEW_BYTES, LIST_PREVIEW_BYTES, render_attributes, render_data
from tests.bulk import insert_rows, item_row
from tests.conftest import create_user, store_item

HOSTILE_IMG = '<img src=x onerror="window.__pwned=1">'
HOSTILE_SCRIPT = "</script><script>window.__pwned=1</script>"


@pytest.fixture
def stored(app):
    """Store one message for a fresh user and hand back the loaded UserItem, inside an app context."""
    user_id = create_user(app, "alice")

    def store(data, attributes=None):
        item_id = store_item(app, user_id, data, attributes)
        return db.session.get(UserItem, item_id)

    with app.app_context():
        yield store


def test_json_data_is_pretty_printed_and_highlighted(stored):
    rendered = render_data(stored('{"temperature": 21.5, "room": "kitchen"}'))
    assert rendered.kind == "json" and not rendered.truncated
    assert '<div class="highlight">' in rendered.html
    # Pygments wraps keys and numbers in token classes (nt: name tag, mf: float).
    assert '<span class="nt">"temperature"</span>' in rendered.html
    assert '<span class="mf">21.5</span>' in rendered.html
    assert "\n" in rendered.html  # indented, not one long line


def test_plain_text_is_escaped(stored):
    rendered = render_data(stored(f"hello {HOSTILE_IMG} {HOSTILE_SCRIPT}"))
    assert rendered.kind == "text"
    assert "<img" not in rendered.html and "<script" not in rendered.html
    assert "&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;" in rendered.html
    assert "&lt;/script&gt;&lt;script&gt;" in rendered.html


def test_hostile_strings_inside_json_and_attributes_are_escaped(stored):
    item = stored({"html": HOSTILE_IMG, "script": HOSTILE_SCRIPT}, {"note": HOSTILE_IMG, "x": HOSTILE_SCRIPT})
    for html in (render_data(item).html, render_attributes(item)):
        assert "<img" not in html and "<script" not in html and "</script" not in html
        assert "&lt;img" in html and "&lt;/script&gt;" in html


def test_attributes_are_highlighted_json(stored):
    html = render_attributes(stored("x", {"origin": "sensor-7", "kind": "reading"}))
    assert '<div class="highlight">' in html
    assert '"origin"' in html and '"sensor-7"' in html


def test_no_attributes_says_none(stored):
    assert "(none)" in render_attributes(stored("x"))


def test_binary_data_gets_a_hex_view(stored):
    payload = bytes([0xFF, 0xFE, 0x00, 0x41, 0x42, 0x80])
    rendered = render_data(stored(payload))
    assert rendered.kind == "binary"
    assert 'class="hexdump"' in rendered.html
    assert "ff fe 00 41 42 80" in rendered.html
    assert "..AB." in rendered.html  # printable bytes alongside the hex


def test_binary_row_is_labelled(app, client, auth):
    user_id = create_user(app, "alice")
    store_item(app, user_id, b"\xff\xfe\x00binary")
    auth.login()
    row = client.get("/useritems?after=0").get_json()["items"][0]
    assert "binary data · hex view" in row
    assert "ff fe 00 62 69 6e 61 72 79" in row


def test_large_text_is_cut_in_the_list_and_whole_in_the_detail(stored):
    item = stored("a" * (LIST_PREVIEW_BYTES + 5_000))
    listed = render_data(item)
    assert listed.truncated
    assert listed.html.count("a") <= LIST_PREVIEW_BYTES + 100
    whole = render_data(item, limit=None)
    assert not whole.truncated
    assert whole.html.count("a") >= LIST_PREVIEW_BYTES + 5_000


def test_large_json_is_cut_in_the_list(stored):
    item = stored({"values": list(range(10_000))})
    assert item.size > LIST_PREVIEW_BYTES
    listed = render_data(item)
    assert listed.truncated and listed.kind == "json"
    assert len(listed.html) < LIST_PREVIEW_BYTES + 1_000


def test_cut_counts_bytes_not_characters(stored):
    # 8,000 four-byte characters are 32 KB: over the limit although under it in characters.
    item = stored("\U0001F600" * 8_000)
    listed = render_data(item)
    assert listed.truncated
    assert len(str(listed.html).encode("utf-8")) < LIST_PREVIEW_BYTES + 200


def test_small_data_is_not_cut(stored):
    assert not render_data(stored("b" * (LIST_PREVIEW_BYTES - 10))).truncated


def test_large_binary_is_cut_in_the_list(stored):
    item = stored(b"\xff" * (HEX_PREVIEW_BYTES * 3))
    listed = render_data(item)
    assert listed.kind == "binary" and listed.truncated
    assert listed.html.count("ff") <= HEX_PREVIEW_BYTES + 10
    # Without a limit, binary data is still cut to the hex view's own limit (its HTML is ~12 times its size).
    assert render_data(item, limit=None).truncated
    whole = render_data(item, limit=None, hex_limit=HEX_PREVIEW_BYTES * 3)
    assert not whole.truncated and whole.html.count("ff") >= HEX_PREVIEW_BYTES * 3


def test_empty_data_says_so(stored):
    rendered = render_data(stored(""))
    assert rendered.kind == "empty" and "(no data)" in rendered.html


def test_invalid_json_falls_back_to_escaped_text(stored):
    rendered = render_data(stored("{not json <b>"))
    assert rendered.kind == "text" and "&lt;b&gt;" in rendered.html


def test_pygments_css_is_served(client):
    response = client.get("/pygments.css")
    assert response.status_code == 200
    assert response.content_type.startswith("text/css")
    assert ".highlight .nt" in response.get_data(as_text=True)


HOSTILE_PAYLOADS = {
    "nested 1,000 deep": "[" * 1000 + "]" * 1000,
    "nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
    "objects nested 5,000 deep": '{"a":' * 5000 + "1" + "}" * 5000,
    "nested 500 deep (parses)": "[" * 500 + "]" * 500,
    "NaN before deep nesting": "[NaN," + "[" * 900 + "]" * 900 + "]",
    "huge JSON": "[" + ",".join(['"' + "x" * 1000 + '"'] * 1500) + "]",
    "invalid JSON": '{"a": [1, 2,',
    "invalid UTF-8": b'{"a": "\xff\xfe"}',
    "NUL": '{"a": "\x00"}',
    "bidi controls": '{"user": "admin\u202e\u2066txt.exe\u2069"}',
}


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS.values(), ids=HOSTILE_PAYLOADS.keys())
def test_every_page_renders_a_hostile_payload(app, client, auth, payload):
    """Any payload renders on every page that shows it: highlighting failures fall back to escaped text."""
    user_id = create_user(app, "alice")
    # Stored as the subscriber stores it (text a database cannot hold is kept as bytes).
    insert_rows(app, [item_row(user_id, payload, {"k": "v"})])
    with app.app_context():
        item_id = db.session.scalar(sa.select(UserItem.id))
    auth.login()
    for path in ("/user/alice", "/useritems?after=0", "/useritems?before=999999999", "/explore",
                 "/explore?q=a", "/explore/items?after=0", f"/useritems/{item_id}",
                 f"/useritems/{item_id}/data", "/explore/export.jsonl", "/explore/export.csv"):
        with client.get(path) as response:
            assert response.status_code == 200, path
            response.get_data()
    # The list still holds the message (the live poll moves past it).
    assert client.get("/useritems?after=0").get_json()["ids"] == [item_id]


def test_attributes_holding_nul_and_bidi_controls_render_filter_and_chart(app, client, auth):
    """jsonb cannot hold \\u0000: pages, filters and the activity breakdown must not depend on it."""
    user_id = create_user(app, "alice")
    odd = store_item(app, user_id, "odd", {"k": "a\x00b", "nul\x00key": "v", "bidi": "\u202eevil"})
    plain = store_item(app, user_id, "plain", {"k": "plain"})
    auth.login()
    for path in ("/user/alice", "/useritems?after=0", f"/useritems/{odd}", "/explore", "/explore/export.jsonl",
                 "/activity?attribute=k", "/activity?attribute=bidi", "/activity?attribute=nul%20key"):
        with client.get(path) as response:
            assert response.status_code == 200, path
            response.get_data()
    assert client.get("/explore/items", query_string={"attr": "k=plain", "after": 0}).get_json()["ids"] == [plain]
    assert client.get("/explore/items", query_string={"attr": "bidi=\u202eevil", "after": 0}).get_json()["ids"] == [odd]
    assert "plain" in client.get("/activity?attribute=k").get_data(as_text=True)
