"""The web process's cache of rendered rows stays inside its memory budget and keeps what is in use."""

import sys

from app.items import RenderedRows


def row(key: int, length: int) -> str:
    return f"<tr id=item-{key}>" + "x" * length


def test_rows_are_evicted_least_recently_used_first_when_over_budget():
    one = sys.getsizeof(row(1, 1000))
    cache = RenderedRows(max_bytes=3 * one)
    for key in (1, 2, 3):
        cache.put((key, "sub", str(key)), row(key, 1000))
    assert cache.get((1, "sub", "1")) == row(1, 1000)  # 1 is now the most recently used
    cache.put((4, "sub", "4"), row(4, 1000))
    assert cache.get((2, "sub", "2")) is None
    assert [cache.get((key, "sub", str(key))) is not None for key in (1, 3, 4)] == [True, True, True]
    assert cache.bytes == 3 * one <= cache.max_bytes


def test_budget_counts_bytes_not_rows():
    small = sys.getsizeof(row(1, 100))
    cache = RenderedRows(max_bytes=20 * small)
    for key in range(10):
        cache.put((key, "sub", str(key)), row(key, 100))
    assert len(cache.rows) == 10
    cache.put((99, "sub", "99"), row(99, 15 * small))  # one large row pushes out the oldest small ones
    assert cache.get((99, "sub", "99")) is not None
    assert cache.bytes <= cache.max_bytes
    assert len(cache.rows) < 10 and cache.get((0, "sub", "0")) is None


def test_a_row_larger_than_the_whole_budget_is_not_kept_and_evicts_nothing():
    cache = RenderedRows(max_bytes=10_000)
    cache.put((1, "sub", "1"), row(1, 100))
    cache.put((2, "sub", "2"), row(2, 50_000))
    assert cache.get((2, "sub", "2")) is None
    assert cache.get((1, "sub", "1")) is not None
    assert cache.bytes == sys.getsizeof(row(1, 100))


def test_putting_a_key_again_replaces_its_size():
    cache = RenderedRows(max_bytes=100_000)
    cache.put((1, "sub", "1"), row(1, 100))
    cache.put((1, "sub", "1"), row(1, 5000))
    assert cache.bytes == sys.getsizeof(row(1, 5000))
    assert len(cache.rows) == 1


def test_a_reused_id_never_shows_another_users_message(app, client, auth):
    """Issue 14, finding 6: after a delete, a database may give the same id to another user's message
    (SQLite reuses the highest id), with the same subscription and message id (the emulator numbers
    messages from 1 after a restart). The cached row must not be served for it."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from app.extensions import db
    from app.models import UserItem
    from tests.conftest import TEST_PASSWORD, create_user, store_item

    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    item_id = store_item(app, alice, {"owner": "alice-secret"}, message_id="1")
    auth.login("alice")
    assert "alice-secret" in "".join(client.get("/useritems?after=0").get_json()["items"])  # now cached
    with app.app_context():
        db.session.execute(sa.delete(UserItem).where(UserItem.id == item_id))
        db.session.add(UserItem(id=item_id, user_id=bob, subscription=app.config["SUBSCRIPTION_NAME"],
                                message_id="1", publish_time=datetime.now(UTC), data_text='{"owner": "bob"}',
                                is_json=True, attributes_json="{}", size=16))
        db.session.commit()
    client.post("/logout", data={"csrf_token": auth.csrf_token("/user/alice")})
    auth.login("bob", TEST_PASSWORD)
    shown = "".join(client.get("/useritems?after=0").get_json()["items"])
    assert "alice-secret" not in shown and "bob" in shown
