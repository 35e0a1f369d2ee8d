"""One message never holds back another: hostile text fields, the writer's bisection, and quarantine.

The writer tests run on both databases. PostgreSQL refuses a NUL in text by itself; on SQLite,
which stores anything, the same refusal is injected as the DataError PostgreSQL raises. The
acceptance test runs the real worker on PostgreSQL.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1

from app import polling
from app.extensions import db
from app.models import Notification, Task, User, UserItem
from app.pubsub import BatchWriter
from app.pubsub.messages import build_row, decode_raw_message
from tests.conftest import create_user, database_kind, wait_until
from tests.test_admin import form_token, pull_all
from tests.test_subscriber import MODES, Observed, RunningPoller, make_task

NUL_KEY = "key\x00with nul"


def make_row(user_id: int, message_id: str, *, data: bytes = b'{"ok": true}', attributes: dict | None = None,
             ordering_key: str = "") -> dict:
    return build_row(user_id=user_id, subscription="sub-a", message_id=message_id, data=data,
                     attributes=attributes or {}, publish_time=datetime(2026, 1, 1, tzinfo=UTC),
                     ordering_key=ordering_key, delivery_attempt=None, size=len(data),
                     received_at=datetime.now(UTC))


@pytest.fixture
def refuses_nul(app):
    """On SQLite, refuse NUL in text the way PostgreSQL does (a DataError); PostgreSQL needs no help."""
    if database_kind() == "postgresql":
        yield
        return
    with app.app_context():
        engine = db.engine

    def holds_nul(parameters) -> bool:
        if isinstance(parameters, str):
            return "\x00" in parameters
        if isinstance(parameters, dict):
            parameters = parameters.values()
        return isinstance(parameters, list | tuple | type({}.values())) and any(map(holds_nul, parameters))

    def before_execute(connection, cursor, statement, parameters, context, executemany):
        if holds_nul(parameters):
            raise sa.exc.DataError(statement, parameters, ValueError("invalid byte sequence: 0x00 (simulated)"))

    sa.event.listen(engine, "before_cursor_execute", before_execute)
    yield
    sa.event.remove(engine, "before_cursor_execute", before_execute)


# --- conversion -------------------------------------------------------------------------------------


def test_ordering_key_with_nul_gives_a_quarantined_row_that_keeps_the_message_exactly():
    row = make_row(1, "1", data=b"payload", attributes={"a\x00": "b\x00"}, ordering_key=NUL_KEY)
    assert "NUL" in row["quarantine_reason"]
    assert "\x00" not in row["ordering_key"] and "\x00" not in row["message_id"]
    assert decode_raw_message(row["raw_message"]) == {
        "message_id": "1", "data": b"payload", "attributes": {"a\x00": "b\x00"}, "ordering_key": NUL_KEY,
    }


def test_nul_and_unicode_in_attributes_are_stored_as_ascii_json_without_quarantine():
    attributes = {"k\x00ey": "v\x00alue ✓ 𝄞", "é": "\u202e"}
    row = make_row(1, "1", attributes=attributes)
    assert row["quarantine_reason"] is None and row["raw_message"] is None
    assert row["attributes_json"].isascii()
    assert json.loads(row["attributes_json"]) == attributes


def test_text_fields_longer_than_their_columns_are_quarantined_not_cut():
    long_key = "k" * 5000
    row = make_row(1, "m" * 300, ordering_key=long_key)
    assert "the message id is 300 characters long" in row["quarantine_reason"]
    assert len(row["message_id"]) == 128 and len(row["ordering_key"]) == 1024
    original = decode_raw_message(row["raw_message"])
    assert original["message_id"] == "m" * 300 and original["ordering_key"] == long_key


# --- the writer -------------------------------------------------------------------------------------


def test_message_with_nul_in_its_ordering_key_is_stored_quarantined_with_its_batch(app):
    user_id, task_id = make_task(app, "sub-a")
    rows = [make_row(user_id, str(number)) for number in range(5)]
    rows.insert(2, make_row(user_id, "poison", ordering_key=NUL_KEY))
    with app.app_context():
        writer = BatchWriter(db.engine, user_id, task_id)
        assert writer.write(rows) == 6
        assert writer.write(rows) == 0  # a redelivery, poison included, is stored once
        items = {item.message_id: item for item in db.session.scalars(sa.select(UserItem))}
        assert sorted(items) == ["0", "1", "2", "3", "4", "poison"]
        poison = items["poison"]
        assert poison.is_quarantined and poison.original_message()["ordering_key"] == NUL_KEY
        assert not any(item.is_quarantined for key, item in items.items() if key != "poison")
        task = db.session.get(Task, task_id)
        assert (task.stored_count, task.quarantined_count) == (6, 1)


def test_rows_the_database_refuses_are_bisected_out_quarantined_and_the_rest_stored(app, refuses_nul):
    user_id, task_id = make_task(app, "sub-a")
    rows = [make_row(user_id, str(number), data=f'{{"n": {number}}}'.encode()) for number in range(40)]
    # Rows that slipped past conversion: nothing but the database itself refuses them.
    for number in (3, 17, 18, 39):
        rows[number] = rows[number] | {"ordering_key": f"bad\x00{number}"}
    with app.app_context():
        writer = BatchWriter(db.engine, user_id, task_id)
        assert writer.write(rows) == 40
        items = {item.message_id: item for item in db.session.scalars(sa.select(UserItem))}
        assert len(items) == 40
        quarantined = sorted(int(key) for key, item in items.items() if item.is_quarantined)
        assert quarantined == [3, 17, 18, 39]
        poison = items["17"]
        assert poison.quarantine_reason.startswith("the database refused it")
        assert poison.original_message() == {"message_id": "17", "data": b'{"n": 17}', "attributes": {},
                                             "ordering_key": "bad\x0017"}
        assert items["16"].data == b'{"n": 16}' and items["16"].ordering_key is None
        assert db.session.get(Task, task_id).quarantined_count == 4
        assert writer.write(rows) == 0


def test_a_quarantined_row_the_database_still_refuses_is_stored_bare(app, refuses_nul):
    user_id, task_id = make_task(app, "sub-a")
    # A quarantined row with a fault nobody foresaw (text the database refuses): only its bare form fits.
    row = make_row(user_id, "1", ordering_key=NUL_KEY) | {"data_text": "a\x00b"}
    with app.app_context():
        assert BatchWriter(db.engine, user_id, task_id).write([row, make_row(user_id, "2")]) == 2
        item = db.session.scalar(sa.select(UserItem).where(UserItem.message_id == "1"))
        assert item.quarantine_reason.startswith("the database refused it")
        assert item.data_bytes == b"a\x00b" and item.data_text is None and item.attributes_json == "{}"
        assert item.original_message()["ordering_key"] == NUL_KEY


def test_an_outage_is_not_quarantined_but_raised_so_the_batch_is_nacked(app):
    user_id, task_id = make_task(app, "sub-a")
    with app.app_context():
        engine = db.engine

    def on_commit(connection):
        raise sa.exc.OperationalError("COMMIT", {}, ConnectionError("database unavailable (simulated)"))

    sa.event.listen(engine, "commit", on_commit)
    try:
        with app.app_context(), pytest.raises(sa.exc.OperationalError):
            BatchWriter(db.engine, user_id, task_id).write([make_row(user_id, "1"), make_row(user_id, "2")])
    finally:
        sa.event.remove(engine, "commit", on_commit)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UserItem)) == 0


def test_detail_page_flags_a_quarantined_message(app, client, auth):
    user_id, task_id = make_task(app, "sub-a")
    with app.app_context():
        BatchWriter(db.engine, user_id, task_id).write([make_row(user_id, "poison", ordering_key=NUL_KEY)])
        item_id = db.session.scalar(sa.select(UserItem.id))
    auth.login()
    page = client.get(f"/useritems/{item_id}")
    assert page.status_code == 200
    assert b'id="quarantine-badge"' in page.data and b"Quarantined: the ordering key holds a NUL" in page.data
    assert b'ordering key <code>"key\\u0000with nul"</code>' in page.data  # exact, in JSON notation


def test_replay_of_a_quarantined_message_publishes_it_as_received(app, client, auth, emulator, pubsub_names):
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host
    user_id, task_id = make_task(app, pubsub_names["subscription"])
    create_user(app, "root", is_admin=True)
    row = make_row(user_id, "orig-1", data=b"poison", attributes={"a\x00": "b"}, ordering_key=NUL_KEY)
    with app.app_context():
        BatchWriter(db.engine, user_id, task_id).write([row | {"subscription": pubsub_names["subscription"]}])
        item_id = db.session.scalar(sa.select(UserItem.id))
    auth.login("root")
    token = form_token(client, f"/useritems/{item_id}")
    page = client.post(f"/admin/replay/{item_id}", data={"csrf_token": token, "topic": ""})
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    [message] = pull_all(pubsub_names["subscription_path"], 1)
    assert (message.data, dict(message.attributes), message.ordering_key) == (b"poison", {"a\x00": "b"}, NUL_KEY)


# --- acceptance: the real worker on PostgreSQL --------------------------------------------------------


def test_poison_message_among_good_ones_is_quarantined_and_acked_while_the_rest_are_stored(
    app, require_postgres, emulator, pubsub_names, worker_factory
):
    """Before the fix, the poison's batch failed with a DataError, was nacked, and failed again for ever."""
    good_count = 30
    user_id = create_user(app, "alice")
    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    )
    worker_factory()
    with app.app_context():
        task_id = polling.launch(db.session.get(User, user_id), polling.canonical(pubsub_names["subscription"])).id
    futures = [publisher.publish(pubsub_names["topic_path"], f'{{"seq": {seq}}}'.encode(), seq=str(seq),
                                 note="nul\x00in attribute") for seq in range(good_count // 2)]
    futures.append(publisher.publish(pubsub_names["topic_path"], b"poison", seq="poison", ordering_key=NUL_KEY))
    futures += [publisher.publish(pubsub_names["topic_path"], f'{{"seq": {seq}}}'.encode(), seq=str(seq))
                for seq in range(good_count // 2, good_count)]
    published = {future.result(timeout=30) for future in futures}
    published_at = time.monotonic()

    def stored() -> dict[str, UserItem]:
        with app.app_context():
            items = db.session.scalars(sa.select(UserItem)).all()
            db.session.expunge_all()
            return {item.attributes.get("seq") or item.original_message()["attributes"]["seq"]: item
                    for item in items}

    wait_until(lambda: len(stored()) == good_count + 1, 30, interval=0.2, message="every message stored")
    assert time.monotonic() - published_at < 30
    items = stored()
    assert {item.message_id for item in items.values()} == published
    poison = items.pop("poison")
    assert poison.is_quarantined and "NUL" in poison.quarantine_reason
    assert poison.original_message()["ordering_key"] == NUL_KEY and poison.data == b"poison"
    assert not any(item.is_quarantined for item in items.values())
    assert items["0"].attributes == {"seq": "0", "note": "nul\x00in attribute"}

    def last_progress() -> dict:
        with app.app_context():
            notes = db.session.scalars(sa.select(Notification).where(Notification.name == "task_progress")
                                       .order_by(Notification.timestamp)).all()
            return notes[-1].get_data() if notes else {}

    wait_until(lambda: last_progress().get("stored_count") == good_count + 1, 20, message="progress with counts")
    assert last_progress()["quarantined_count"] == 1
    with app.app_context():
        polling.transition(task_id, polling.TaskState.STOPPING)
    wait_until(lambda: last_progress().get("progress") == "Finished", 30, message="the task to finish")
    # Acked, not merely stored: nothing is left on the subscription to redeliver.
    subscriber = pubsub_v1.SubscriberClient()
    try:
        # The emulator holds an empty pull open until its deadline.
        left = subscriber.pull(subscription=pubsub_names["subscription_path"], max_messages=100,
                               timeout=5).received_messages
    except api_exceptions.DeadlineExceeded:
        left = []
    finally:
        subscriber.close()
    assert list(left) == []


# --- the poller against the emulator, both pull modes -------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_poison_message_is_acked_with_its_batch_and_counted_in_progress(app, emulator, pubsub_names, mode):
    observed = Observed(app)
    poller = RunningPoller(app, emulator, mode, pubsub_names, observed=observed).start()
    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    )
    futures = [publisher.publish(pubsub_names["topic_path"], b"good %d" % number) for number in range(10)]
    futures.append(publisher.publish(pubsub_names["topic_path"], b"poison", ordering_key=NUL_KEY))
    published = {future.result(timeout=30) for future in futures}
    wait_until(lambda: set(observed.acked) >= published, 30, message="every message acked")
    wait_until(lambda: poller.progress()[-1].get("quarantined_count") == 1, 20, message="progress counts it")
    poller.stop()
    assert observed.nacked == [] and observed.acked_before_commit == []
    items = poller.items()
    assert sorted(item.message_id for item in items) == sorted(published)
    assert [item.data for item in items if item.is_quarantined] == [b"poison"]
