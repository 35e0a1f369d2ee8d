"""The user page and the item endpoints behind it: cursors, caps, keyset paging, who sees what."""

import re

from app.items import MAX_ITEMS_PER_RESPONSE
from tests.conftest import create_user, store_item, store_items


def store_numbered(app, user_id, count):
    return store_items(app, user_id, [{"data": {"n": number}} for number in range(count)])


def test_after_is_capped_at_100_oldest_first_with_more_flag(app, client, auth):
    user_id = create_user(app, "alice")
    ids = store_numbered(app, user_id, 250)
    auth.login()
    first = client.get("/useritems?after=0").get_json()
    assert first["status"] == "success"
    assert len(first["items"]) == MAX_ITEMS_PER_RESPONSE == 100
    assert first["ids"] == ids[:100]
    assert first["more"] is True
    second = client.get(f"/useritems?after={first['ids'][-1]}").get_json()
    assert second["ids"] == ids[100:200] and second["more"] is True
    third = client.get(f"/useritems?after={second['ids'][-1]}").get_json()
    assert third["ids"] == ids[200:] and third["more"] is False


def test_after_the_newest_id_answers_unchanged(app, client, auth):
    user_id = create_user(app, "alice")
    ids = store_numbered(app, user_id, 3)
    auth.login()
    reply = client.get(f"/useritems?after={ids[-1]}").get_json()
    assert reply == {"status": "unchanged", "items": [], "ids": [], "more": False}


def test_after_returns_only_items_stored_since_the_cursor(app, client, auth):
    user_id = create_user(app, "alice")
    old_ids = store_numbered(app, user_id, 5)
    auth.login()
    new_ids = store_numbered(app, user_id, 2)
    reply = client.get(f"/useritems?after={old_ids[-1]}").get_json()
    assert reply["ids"] == new_ids
    assert all(f'id="item-{item_id}"' in row for item_id, row in zip(new_ids, reply["items"], strict=True))


def test_before_walks_all_older_items_newest_first_without_gaps(app, client, auth):
    user_id = create_user(app, "alice")
    ids = store_numbered(app, user_id, 250)
    page_size = app.config["ITEMS_PER_PAGE"]
    auth.login()
    seen = []
    cursor = ids[-1] + 1
    while True:
        reply = client.get(f"/useritems?before={cursor}").get_json()
        assert len(reply["ids"]) <= page_size
        assert reply["ids"] == sorted(reply["ids"], reverse=True)
        seen.extend(reply["ids"])
        if not reply["more"]:
            break
        cursor = reply["ids"][-1]
    assert seen == list(reversed(ids))


def test_before_paging_is_stable_while_new_items_arrive(app, client, auth):
    user_id = create_user(app, "alice")
    ids = store_numbered(app, user_id, 120)
    auth.login()
    first = client.get(f"/useritems?before={ids[-1] + 1}").get_json()
    store_numbered(app, user_id, 30)  # new arrivals must not shift the older pages
    second = client.get(f"/useritems?before={first['ids'][-1]}").get_json()
    assert second["ids"][0] == first["ids"][-1] - 1


def test_items_of_other_users_are_never_listed(app, client, auth):
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    store_numbered(app, bob, 3)
    mine = store_numbered(app, alice, 2)
    auth.login("alice")
    assert client.get("/useritems?after=0").get_json()["ids"] == mine
    assert client.get("/useritems?before=100000").get_json()["ids"] == list(reversed(mine))


def test_non_admin_cannot_read_another_users_items(app, client, auth):
    create_user(app, "alice")
    bob = create_user(app, "bob")
    bob_item = store_item(app, bob, "bob's secret")
    auth.login("alice")
    assert client.get("/useritems?after=0&user=bob").status_code == 403
    assert client.get(f"/useritems/{bob_item}").status_code == 404


def test_admin_can_read_another_users_items(app, client, auth):
    create_user(app, "root", is_admin=True)
    bob = create_user(app, "bob")
    bob_item = store_item(app, bob, "bob's data")
    auth.login("root")
    assert client.get("/useritems?after=0&user=bob").get_json()["ids"] == [bob_item]
    assert client.get(f"/useritems/{bob_item}").status_code == 200


def test_item_endpoints_need_sign_in(app, client):
    user_id = create_user(app, "alice")
    item_id = store_item(app, user_id, "x")
    assert client.get("/useritems?after=0").status_code in (302, 401)
    assert client.get(f"/useritems/{item_id}").status_code in (302, 401)


def test_user_page_shows_the_newest_page_newest_first(app, client, auth):
    user_id = create_user(app, "alice")
    ids = store_numbered(app, user_id, 60)
    page_size = app.config["ITEMS_PER_PAGE"]
    auth.login()
    html = client.get("/user/alice").get_data(as_text=True)
    shown = [int(found) for found in re.findall(r'<tr class="useritem" id="item-(\d+)"', html)]
    assert shown == list(reversed(ids))[:page_size]
    assert f'data-newest-id="{ids[-1]}"' in html
    assert f'data-oldest-id="{shown[-1]}"' in html
    assert 'data-more-older="true"' in html


def test_user_page_has_no_inline_script_or_style(app, client, auth):
    user_id = create_user(app, "alice")
    store_item(app, user_id, {"a": 1}, {"k": "v"})
    auth.login()
    html = client.get("/user/alice").get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script> would be blocked by the CSP"
    assert not re.search(r"\sstyle=", html), "style attributes would be blocked by the CSP"
    assert not re.search(r"\son[a-z]+=", html), "inline event handlers would be blocked by the CSP"
    assert "cdn" not in html.lower()


def test_large_message_is_cut_in_the_list_and_in_the_detail_view_and_whole_on_load_all(app, client, auth):
    from app.main.routes import DETAIL_PREVIEW_BYTES

    user_id = create_user(app, "alice")
    big = "x" * 5_000_000
    item_id = store_item(app, user_id, big)
    auth.login()
    listed = client.get("/useritems?after=0").get_json()["items"][0]
    assert len(listed) < 30_000
    assert f'href="/useritems/{item_id}"' in listed and "show all" in listed
    detail = client.get(f"/useritems/{item_id}").get_data(as_text=True)
    # The first 256 KB, said so, with the way to the rest; the size shown is the download's.
    assert "x" * DETAIL_PREVIEW_BYTES in detail and "x" * (DETAIL_PREVIEW_BYTES + 1) not in detail
    assert f'href="/useritems/{item_id}?all=1"' in detail and "Load all" in detail
    assert '<span id="data-size">5,000,000</span> bytes' in detail
    assert len(client.get(f"/useritems/{item_id}/data").data) == 5_000_000
    assert big in client.get(f"/useritems/{item_id}?all=1").get_data(as_text=True)


def test_a_large_binary_message_is_shown_in_hex_only_up_to_a_limit_and_offers_the_download(app, client, auth):
    from app.main.routes import HEX_VIEW_MAX_BYTES

    user_id = create_user(app, "alice")
    big = bytes(range(256)) * (3_000_000 // 256) + b"\xff-end"
    small = b"\xfe" * (HEX_VIEW_MAX_BYTES - 1)
    big_id, small_id = store_item(app, user_id, big), store_item(app, user_id, small)
    auth.login()

    def rows(html: str) -> int:
        return html.count('<span class="hex-row">')

    # A 3 MB hex dump would make a page of about 37 MB: with ?all=1 too, the hex view stops at its limit.
    for url in (f"/useritems/{big_id}", f"/useritems/{big_id}?all=1"):
        detail = client.get(url).get_data(as_text=True)
        assert rows(detail) == HEX_VIEW_MAX_BYTES // 16 and len(detail) < 1_500_000
        assert (f"Showing the first {HEX_VIEW_MAX_BYTES:,} bytes of {len(big):,} in hex: the rest is in the "
                f'<a href="/useritems/{big_id}/data" download>download</a>.') in " ".join(detail.split())
        assert 'id="load-all"' not in detail
    assert client.get(f"/useritems/{big_id}/data").data == big
    # Under the limit, all of it is shown and nothing is said to be cut.
    whole = client.get(f"/useritems/{small_id}").get_data(as_text=True)
    assert rows(whole) == -(-len(small) // 16) and 'id="data-cut"' not in whole


def test_detail_view_shows_the_message(app, client, auth):
    user_id = create_user(app, "alice")
    item_id = store_item(app, user_id, {"reading": 7}, {"origin": "<b>sensor</b>"}, message_id="m-123")
    auth.login()
    html = client.get(f"/useritems/{item_id}").get_data(as_text=True)
    assert "m-123" in html
    assert '<span class="nt">"reading"</span>' in html
    assert "&lt;b&gt;sensor&lt;/b&gt;" in html and "<b>sensor" not in html


def test_missing_item_is_404(app, client, auth):
    create_user(app, "alice")
    auth.login()
    assert client.get("/useritems/999999").status_code == 404


def test_user_page_shows_the_running_task_and_a_stop_button(app, client, auth):
    from app.extensions import db
    from app.models import Task

    user_id = create_user(app, "alice")
    auth.login()
    idle = client.get("/user/alice").get_data(as_text=True)
    assert 'data-polling="false">Start polling' in idle
    with app.app_context():
        db.session.add(Task(id="t1", name="polling_subscription", description="Polling subscription monitor-sub",
                            user_id=user_id, subscription=app.config["SUBSCRIPTION_NAME"], stored_count=7))
        db.session.commit()
    busy = client.get("/user/alice").get_data(as_text=True)
    assert 'data-polling="true">Stop polling' in busy
    assert "Polling subscription monitor-sub" in busy and "7 stored" in busy


def test_user_page_follows_notifications_from_the_newest_one(app, client, auth):
    from app.extensions import db
    from app.models import User

    user_id = create_user(app, "alice")
    with app.app_context():
        notification = db.session.get(User, user_id).add_notification("task_progress", {"progress": "Finished"})
        db.session.commit()
        newest = notification.timestamp
    auth.login()
    html = client.get("/user/alice").get_data(as_text=True)
    # An old "Finished" must not replay into a fresh page.
    assert f'data-notifications-since="{newest}"' in html


def test_data_download_is_byte_for_byte_and_never_rendered(app, client, auth):
    user_id = create_user(app, "alice")
    payload = b"\x89PNG\x00\xff<script>alert(1)</script>"
    item_id = store_item(app, user_id, payload)
    auth.login()
    response = client.get(f"/useritems/{item_id}/data")
    assert response.status_code == 200
    assert response.data == payload
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"] == f'attachment; filename="message-{item_id}.bin"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_data_download_of_another_users_item_is_404(app, client, auth):
    create_user(app, "alice")
    bob = create_user(app, "bob")
    item_id = store_item(app, bob, "bob's data")
    auth.login("alice")
    assert client.get(f"/useritems/{item_id}/data").status_code == 404


def test_admin_sees_another_users_messages_read_only(app, client, auth):
    bob = create_user(app, "bob")
    create_user(app, "root", is_admin=True)
    bob_item = store_item(app, bob, {"owner": "bob"})
    auth.login("root")
    html = client.get("/user/bob").get_data(as_text=True)
    assert f'id="item-{bob_item}"' in html
    assert 'data-owner="bob"' in html and 'data-own-page="false"' in html
    # Polling and passwords are the owner's business: no button, no form.
    assert 'id="pollnav"' not in html and 'id="changepwd"' not in html
