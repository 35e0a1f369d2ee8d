"""The subscriber module on its own: conversion, the writer, and both sources against the real emulator.

The poller runs in a thread of the test process so that faults can be injected
(a commit that fails, an ack that is lost) and every ack and nack observed; the
database, the emulator and the Pub/Sub client are all real.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Notification, Task, UserItem
from app.pubsub import BatchWriter, CredentialsError, Poller, PullSource, StreamingSource, make_subscriber_client
from app.pubsub.client import load_credentials, pull_mode, subscription_path
from app.pubsub.messages import is_json_text, split_payload
from app.pubsub.poller import backoff_seconds, make_source, run_polling_task
from app.pubsub.sources import EMULATOR_PULL_SIZE, CpuCounters
from helpers import publish as publisher
from tests.conftest import TEST_PROJECT, create_user, wait_until

MODES = ["batch", "streaming"]


# --- pure logic ------------------------------------------------------------------------------------


def test_utf8_json_is_kept_as_text_and_flagged_json():
    assert split_payload(b'{"status": "SUCCESS"}') == ('{"status": "SUCCESS"}', None, True)


def test_invalid_json_is_kept_as_text_and_not_flagged():
    assert split_payload(b'{"status": ') == ('{"status": ', None, False)
    assert not is_json_text("NaN")
    assert not is_json_text("")
    assert not is_json_text("[" * 100_000)  # too deep for the parser: not JSON, and no crash


def test_data_that_is_not_utf8_is_kept_byte_exact():
    data = b"\xff\xfe\x00\x01\xc3\x28"
    assert split_payload(data) == (None, data, False)


def test_utf8_with_nul_is_kept_as_bytes_because_postgresql_text_cannot_hold_it():
    assert split_payload(b"a\x00b") == (None, b"a\x00b", False)


def test_backoff_grows_and_is_bounded():
    delays = [backoff_seconds(failures) for failures in range(1, 12)]
    assert delays[:4] == [1, 2, 4, 8]
    assert max(delays) == 30


def test_subscription_path_keeps_full_names():
    assert subscription_path("proj", "sub") == "projects/proj/subscriptions/sub"
    assert subscription_path("proj", "projects/other/subscriptions/sub") == "projects/other/subscriptions/sub"


def test_pull_mode_defaults_to_batch_on_the_emulator_and_streaming_on_google_cloud():
    assert pull_mode({"PUBSUB_EMULATOR_HOST": "localhost:8085", "PUBSUB_PULL_MODE": ""}) == "batch"
    assert pull_mode({"PUBSUB_EMULATOR_HOST": None, "PUBSUB_PULL_MODE": ""}) == "streaming"
    assert pull_mode({"PUBSUB_EMULATOR_HOST": "localhost:8085", "PUBSUB_PULL_MODE": "Streaming"}) == "streaming"


def test_credentials_that_are_not_json_give_a_clear_error():
    with pytest.raises(CredentialsError, match="not valid JSON"):
        load_credentials('{"type": "service_account", ')


def test_credentials_key_file_that_is_missing_gives_a_clear_error(tmp_path):
    with pytest.raises(CredentialsError, match="does not exist"):
        load_credentials(str(tmp_path / "missing-key.json"))


def test_credentials_json_that_is_not_a_key_gives_a_clear_error():
    with pytest.raises(CredentialsError, match="not a usable key"):
        load_credentials(json.dumps({"type": "service_account", "project_id": "x"}))


# --- the writer ------------------------------------------------------------------------------------


def make_task(app, subscription: str, username: str = "alice") -> tuple[int, str]:
    user_id = create_user(app, username)
    with app.app_context():
        task = Task(id=uuid.uuid4().hex, name="polling_subscription", user_id=user_id,
                    description=f"Polling subscription {subscription}", subscription=subscription)
        db.session.add(task)
        db.session.commit()
        return user_id, task.id


def sample_row(user_id: int, message_id: str, subscription: str = "sub-a") -> dict:
    from datetime import UTC, datetime

    return {"user_id": user_id, "subscription": subscription, "message_id": message_id,
            "publish_time": datetime(2026, 1, 1, tzinfo=UTC),
            "received_at": datetime.now(UTC), "data_text": "{}", "data_bytes": None, "is_json": True,
            "attributes_json": "{}", "ordering_key": None, "delivery_attempt": None, "size": 2}


def test_redelivered_message_is_stored_once(app):
    user_id, task_id = make_task(app, "sub-a")
    with app.app_context():
        writer = BatchWriter(db.engine, user_id, task_id)
        assert writer.write([sample_row(user_id, "1"), sample_row(user_id, "2")]) == 2
        assert writer.write([sample_row(user_id, "2"), sample_row(user_id, "3")]) == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UserItem)) == 3
        assert db.session.get(Task, task_id).stored_count == 3
        assert db.session.get(Task, task_id).heartbeat_at is not None


def test_a_reused_message_id_with_another_publish_time_is_a_new_message(app):
    """The emulator numbers message ids from 1 after each restart; those are new messages, not redeliveries."""
    from datetime import UTC, datetime

    user_id, task_id = make_task(app, "sub-a")
    before_restart = sample_row(user_id, "1")
    after_restart = sample_row(user_id, "1") | {"publish_time": datetime(2026, 1, 2, tzinfo=UTC)}
    with app.app_context():
        writer = BatchWriter(db.engine, user_id, task_id)
        assert writer.write([before_restart]) == 1
        assert writer.write([after_restart]) == 1
        assert writer.write([before_restart, after_restart]) == 0  # and each is still stored once
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UserItem)) == 2


def test_writer_keeps_tabs_newlines_backslashes_and_bytes_exact(app):
    from datetime import UTC, datetime

    user_id, task_id = make_task(app, "sub-a")
    text = 'tab\there\nnew line\r\\N back\\slash "quoted" \\x00 é ✓'
    raw = bytes(range(256)) + b"\\\t\n"
    published = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [
        sample_row(user_id, "1") | {"data_text": text, "is_json": False, "ordering_key": "key\t1",
                                    "attributes_json": json.dumps({"a\tb": "c\\d"}), "publish_time": published,
                                    "delivery_attempt": 3},
        sample_row(user_id, "2") | {"data_text": None, "data_bytes": raw, "is_json": False, "size": len(raw)},
    ]
    with app.app_context():
        assert BatchWriter(db.engine, user_id, task_id).write(rows) == 2
        first, second = db.session.scalars(sa.select(UserItem).order_by(UserItem.message_id)).all()
        assert first.data_text == text and first.ordering_key == "key\t1" and first.delivery_attempt == 3
        assert first.attributes == {"a\tb": "c\\d"}
        assert first.publish_time.replace(tzinfo=first.publish_time.tzinfo or UTC) == published
        assert second.data_bytes == raw and second.data_text is None and second.size == len(raw)


def test_same_message_id_on_another_subscription_is_another_message(app):
    user_id, task_id = make_task(app, "sub-a")
    with app.app_context():
        writer = BatchWriter(db.engine, user_id, task_id)
        assert writer.write([sample_row(user_id, "1", "sub-a"), sample_row(user_id, "1", "sub-b")]) == 2


# --- the sources against the emulator ------------------------------------------------------------


class Observed:
    """Records every ack and nack a source makes, and checks each ack against the database first."""

    def __init__(self, app):
        self.app = app
        self.acked: list[str] = []
        self.nacked: list[str] = []
        self.acked_before_commit: list[str] = []
        self.acked_during_outage: list[str] = []
        self.outage = False
        self.lose_next_ack = False
        self.lost: list[str] = []
        self.lock = threading.Lock()

    def committed(self, message_ids: list[str]) -> set[str]:
        # A separate connection sees only what has been committed.
        with self.app.app_context(), db.engine.connect() as connection:
            found = connection.execute(sa.select(UserItem.message_id).where(UserItem.message_id.in_(message_ids)))
            return set(found.scalars())


def observed_source(source_class, observed: Observed):
    class ObservedSource(source_class):
        def ack(self, batch):
            ids = batch.message_ids
            missing = set(ids) - observed.committed(ids)
            with observed.lock:
                observed.acked_before_commit.extend(missing)
                if observed.outage:
                    observed.acked_during_outage.extend(ids)
                if observed.lose_next_ack:
                    # The commit succeeded but the ack never reaches Pub/Sub: the server redelivers,
                    # here at once (a nack) instead of after the ack deadline.
                    observed.lose_next_ack = False
                    observed.lost.extend(ids)
                    super().nack(batch)
                    return
                observed.acked.extend(ids)
            super().ack(batch)

        def nack(self, batch):
            with observed.lock:
                observed.nacked.extend(batch.message_ids)
            super().nack(batch)

    return ObservedSource


class RunningPoller:
    """A Poller in a thread with its own app context, stopped the way the web stops it."""

    def __init__(self, app, emulator, mode: str, names: dict, username: str = "alice", observed=None,
                 source_class=None, **options):
        self.app = app
        self.user_id, self.task_id = make_task(app, names["subscription"], username)
        self.client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
        source_class = source_class or (PullSource if mode == "batch" else StreamingSource)
        if observed is not None:
            source_class = observed_source(source_class, observed)
        self.source = source_class(self.client, names["subscription_path"], user_id=self.user_id,
                                   subscription=names["subscription"], **options)
        self.result: dict = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with self.app.app_context():
            try:
                writer = BatchWriter(db.engine, self.user_id, self.task_id)
                self.result["stored"] = Poller(self.task_id, self.source, writer).run()
            except BaseException as error:  # noqa: BLE001 - handed to the test thread
                self.result["error"] = error

    def start(self) -> RunningPoller:
        self.thread.start()
        wait_until(lambda: self.progress(), 30, message="the first progress notification")
        return self

    def stop(self, timeout: float = 15) -> float:
        started = time.monotonic()
        with self.app.app_context():
            db.session.execute(sa.update(Task).where(Task.id == self.task_id).values(complete=True))
            db.session.commit()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the poller did not stop"
        self.client.close()
        if "error" in self.result:
            raise self.result["error"]
        return time.monotonic() - started

    def progress(self) -> list[dict]:
        with self.app.app_context():
            rows = db.session.scalars(sa.select(Notification).order_by(Notification.timestamp)).all()
            return [row.get_data() for row in rows]

    def items(self) -> list[UserItem]:
        with self.app.app_context():
            items = db.session.scalars(sa.select(UserItem).order_by(UserItem.id)).all()
            db.session.expunge_all()
            return items

    def count(self) -> int:
        with self.app.app_context():
            return db.session.scalar(sa.select(sa.func.count()).select_from(UserItem))


def cloud_build_samples(count: int, size: int = 300) -> list[publisher.Sample]:
    return [publisher.cloud_build_message(TEST_PROJECT, index, size) for index in range(count)]


def publish_samples(names: dict, samples) -> dict[str, publisher.Sample]:
    """Publish and return the samples by message id."""
    import io

    out = io.StringIO()
    publisher.publish(TEST_PROJECT, names["topic"], samples, as_json=True, out=out)
    by_id = {}
    for line, sample in zip(out.getvalue().splitlines(), samples, strict=True):
        by_id[json.loads(line)["message_id"]] = sample
    return by_id


@pytest.fixture
def fault_injection(app):
    """Make every commit on the app's engine fail while `state['down']` is true."""
    state = {"down": False, "failed_commits": 0}
    with app.app_context():
        engine = db.engine

    def on_commit(connection):
        if state["down"]:
            state["failed_commits"] += 1
            raise sa.exc.OperationalError("COMMIT", {}, ConnectionError("database unavailable (simulated)"))

    sa.event.listen(engine, "commit", on_commit)
    yield state
    state["down"] = False
    sa.event.remove(engine, "commit", on_commit)


@pytest.mark.parametrize("mode", MODES)
def test_every_message_is_stored_once_and_acked_after_commit(app, emulator, pubsub_names, mode):
    observed = Observed(app)
    poller = RunningPoller(app, emulator, mode, pubsub_names, observed=observed).start()
    published = publish_samples(pubsub_names, cloud_build_samples(300))
    wait_until(lambda: poller.count() >= 300, 30, message="300 stored messages")
    # While it polls, the job counts garbage collections (any thread's); once stopped, it no longer does.
    cpu = poller.source.cpu
    assert cpu._on_gc in gc.callbacks
    gc.collect()
    stop_seconds = poller.stop()
    assert cpu._on_gc not in gc.callbacks and cpu.gc_collections[2] >= 1
    items = poller.items()
    assert sorted(item.message_id for item in items) == sorted(published)
    for item in items:
        assert item.data == published[item.message_id].data
        assert item.attributes == published[item.message_id].attributes
        assert item.is_json and item.subscription == pubsub_names["subscription"]
        assert item.publish_time is not None and item.size >= len(item.data)
    assert sorted(observed.acked) == sorted(published)
    assert observed.acked_before_commit == []
    assert stop_seconds < 5
    progress = poller.progress()
    assert progress[0]["progress"] == "Polling" and progress[0]["mode"] == mode
    with app.app_context():
        assert db.session.get(Task, poller.task_id).stored_count == 300


class CountingPullSource(PullSource):
    """Counts the pulls it has in flight at once, and records how many messages each asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_flight = 0
        self.most_in_flight = 0
        self.asked: list[int] = []
        self.counting = threading.Lock()

    def _start_pull(self, request, metadata, arrived):
        self.asked.append(request.max_messages)
        call = super()._start_pull(request, metadata, arrived)
        with self.counting:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        call.add_done_callback(self._pull_ended)
        return call

    def _pull_ended(self, _call):
        with self.counting:
            self.in_flight -= 1


def test_batch_mode_pulls_several_at_once_through_a_backlog_and_one_at_a_time_when_idle(
        app, emulator, pubsub_names):
    published = publish_samples(pubsub_names, cloud_build_samples(2000))
    poller = RunningPoller(app, emulator, "batch", pubsub_names, source_class=CountingPullSource,
                           pull_timeout=2.0).start()
    source = poller.source
    wait_until(lambda: poller.count() >= 2000, 60, message="the backlog of 2,000 stored")
    # The emulator returns at most 100 messages a pull: the backlog took many, several at a time.
    assert source.most_in_flight == source.pulls_in_flight == 3
    # Idle: the pulls that met an empty subscription time out (2 s here), and one long pull stays open.
    time.sleep(5)
    with source.counting:
        source.most_in_flight = source.in_flight
    time.sleep(3)
    assert source.most_in_flight == 1 and source.in_flight == 1
    # A message published now is stored at once, by the one pull that is waiting.
    late = publish_samples(pubsub_names, cloud_build_samples(1))
    wait_until(lambda: poller.count() >= 2001, 3, message="the message published while idle, stored")
    poller.stop()
    assert sorted(item.message_id for item in poller.items()) == sorted({**published, **late})


def test_a_stop_in_the_middle_of_a_backlog_gives_back_what_it_pulled_and_loses_nothing(app, emulator, pubsub_names):
    published = publish_samples(pubsub_names, cloud_build_samples(3000))
    observed = Observed(app)
    first = RunningPoller(app, emulator, "batch", pubsub_names, observed=observed).start()
    wait_until(lambda: first.count() >= 300, 60, message="the first 300 stored")
    first.stop()
    assert observed.acked_before_commit == []
    # What the first poller pulled but did not store went back at once (nack), not after the
    # subscription's 30-second ack deadline: a second poller stores the rest well within it.
    second = RunningPoller(app, emulator, "batch", pubsub_names, username="bob").start()
    wait_until(lambda: second.count() >= 3000, 20, message="all 3,000 stored")
    second.stop()
    stored = [item.message_id for item in second.items()]
    assert sorted(stored) == sorted(published), "a message was lost or stored twice"


def _drain(source: PullSource, count: int) -> list:
    """Receive and ack `count` messages; the batches received."""
    batches = []
    while sum(len(batch.rows) for batch in batches) < count:
        batch = source.receive(5)
        assert batch is not None, "the pulled messages stopped coming"
        source.ack(batch)
        batches.append(batch)
    return batches


def test_batch_mode_stops_pulling_at_its_byte_budget_though_far_fewer_messages_wait(emulator, pubsub_names):
    # 300 messages of about 20 kB: well under the 4,000 messages that may wait, but over the byte budget.
    published = publish_samples(pubsub_names, cloud_build_samples(300, size=20_000))
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    source = PullSource(client, pubsub_names["subscription_path"], user_id=1, subscription=pubsub_names["subscription"],
                        pulls_in_flight=1, prefetch_bytes=1)
    source.open()
    try:
        wait_until(lambda: source._buffered > 0, 20, message="a first pull")
        time.sleep(2)  # time for many more pulls, had the budget not stopped them
        # The first response (the emulator returns at most 100 messages) went over the budget: nothing more was pulled.
        assert 0 < source._buffered <= 100
        assert source._buffered_bytes >= source._buffered * 20_000
        batches = _drain(source, 300)
        assert source._buffered == source._buffered_bytes == 0
    finally:
        source.close()
        client.close()
    assert sorted(row["message_id"] for batch in batches for row in batch.rows) == sorted(published)


def test_on_the_emulator_a_pull_asks_for_the_hundred_it_can_get_and_writes_still_merge_to_a_thousand(
        emulator, pubsub_names):
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    path, name = pubsub_names["subscription_path"], pubsub_names["subscription"]
    try:
        on_emulator = make_source("batch", client, path, 1, name, on_emulator=True)
        on_google_cloud = make_source("batch", client, path, 1, name)
        assert (on_emulator.pull_size, on_emulator.max_messages) == (EMULATOR_PULL_SIZE, 1000) == (100, 1000)
        assert (on_google_cloud.pull_size, on_google_cloud.max_messages) == (1000, 1000)

        published = publish_samples(pubsub_names, cloud_build_samples(60))
        source = CountingPullSource(client, path, user_id=1, subscription=name, pull_size=7, pulls_in_flight=1)
        source.open()
        try:
            wait_until(lambda: source._buffered >= 60, 20, message="all 60 pulled")
            # Seven at most a pull, so at least nine pulls; received, they make one write.
            batches = _drain(source, 60)
        finally:
            source.close()
        assert set(source.asked) == {7} and len(source.asked) >= 9
        assert len(batches) == 1
        assert sorted(row["message_id"] for row in batches[0].rows) == sorted(published)
    finally:
        client.close()


@pytest.mark.parametrize("write_bytes", [1, 64 * 1024 * 1024])
def test_batch_mode_merges_pulls_into_one_write_only_within_its_byte_limit(emulator, pubsub_names, write_bytes):
    published = publish_samples(pubsub_names, cloud_build_samples(300, size=20_000))
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    source = PullSource(client, pubsub_names["subscription_path"], user_id=1, subscription=pubsub_names["subscription"],
                        write_bytes=write_bytes)
    source.open()
    try:
        wait_until(lambda: source._buffered == 300, 20, message="all 300 pulled")
        batches = _drain(source, 300)
        assert source._buffered == source._buffered_bytes == 0 and source._carried is None
    finally:
        source.close()
        client.close()
    assert sorted(row["message_id"] for batch in batches for row in batch.rows) == sorted(published)
    assert all(batch.size == sum(row["size"] for row in batch.rows) for batch in batches)
    if write_bytes == 1:
        # No two pulls' messages fit in one write: each write is one pull's (at most 100 on the emulator).
        assert max(len(batch.rows) for batch in batches) <= 100
    else:
        # Unbounded by bytes, the 300 waiting messages go out in one write.
        assert [len(batch.rows) for batch in batches] == [300]


def test_batch_mode_gives_back_a_batch_carried_over_to_the_next_write_when_it_closes(emulator, pubsub_names):
    published = publish_samples(pubsub_names, cloud_build_samples(300, size=20_000))
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    # One pull at a time, stopping at the byte budget after two pulls (the emulator returns at most 100
    # messages of these 20 kB a pull), so no pull is left waiting when it closes: the emulator would hand
    # what is given back to a waiting pull even once the client has cancelled it.
    source = PullSource(client, pubsub_names["subscription_path"], user_id=1, subscription=pubsub_names["subscription"],
                        pulls_in_flight=1, prefetch_bytes=3_000_000, write_bytes=1)
    source.open()
    wait_until(lambda: source._buffered_bytes >= 3_000_000, 20, message="pulled up to the byte budget")
    time.sleep(0.5)
    first = source.receive(5)
    source.ack(first)
    assert source._carried is not None  # the next pull's batch did not fit in this write
    source.close()
    assert source._carried is None and source._buffered == 0
    client.close()
    # Everything not written went back at once (nack), the carried batch too, not after its 30-s ack deadline.
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    again = PullSource(client, pubsub_names["subscription_path"], user_id=1, subscription=pubsub_names["subscription"])
    again.open()
    try:
        wait_until(lambda: again._buffered == 300 - len(first.rows), 5, message="the rest pulled again at once")
        rest = _drain(again, 300 - len(first.rows))
    finally:
        again.close()
        client.close()
    stored = first.message_ids + [message_id for batch in rest for message_id in batch.message_ids]
    assert sorted(stored) == sorted(published)


@pytest.mark.parametrize("mode", MODES)
def test_message_whose_ack_was_lost_is_stored_once(app, emulator, pubsub_names, mode):
    observed = Observed(app)
    observed.lose_next_ack = True
    poller = RunningPoller(app, emulator, mode, pubsub_names, observed=observed).start()
    published = publish_samples(pubsub_names, cloud_build_samples(50))
    # Every message is acked in the end, including the redelivered ones whose first ack was lost.
    wait_until(lambda: set(observed.acked) >= set(published), 60, message="every message acked")
    poller.stop()
    assert observed.lost, "no ack was lost: the fault was not injected"
    assert set(observed.lost) <= set(observed.acked), "the lost messages were not redelivered"
    assert sorted(item.message_id for item in poller.items()) == sorted(published)


@pytest.mark.parametrize("mode", MODES)
def test_nothing_is_acked_while_the_database_is_down_and_all_is_stored_once_after(
    app, emulator, pubsub_names, mode, fault_injection
):
    observed = Observed(app)
    poller = RunningPoller(app, emulator, mode, pubsub_names, observed=observed).start()
    fault_injection["down"] = observed.outage = True
    published = publish_samples(pubsub_names, cloud_build_samples(200))
    wait_until(lambda: fault_injection["failed_commits"] >= 2, 30, message="two failed commits")
    with observed.lock:
        fault_injection["down"] = observed.outage = False
    wait_until(lambda: poller.count() >= 200, 60, message="every message stored after recovery")
    poller.stop()
    assert observed.acked_during_outage == []
    assert observed.nacked, "failed commits must nack their messages"
    assert observed.acked_before_commit == []
    assert sorted(item.message_id for item in poller.items()) == sorted(published)


def test_streaming_mode_acks_only_after_commit_and_nacks_a_failed_commit(
    app, emulator, pubsub_names, fault_injection
):
    observed = Observed(app)
    poller = RunningPoller(app, emulator, "streaming", pubsub_names, observed=observed).start()
    fault_injection["down"] = observed.outage = True
    published = publish_samples(pubsub_names, cloud_build_samples(20))
    wait_until(lambda: len(set(observed.nacked)) >= 1, 30, message="a nack after the failed commit")
    assert observed.acked == []
    with observed.lock:
        fault_injection["down"] = observed.outage = False
    wait_until(lambda: set(observed.acked) >= set(published), 60, message="every message acked")
    poller.stop()
    assert observed.acked_before_commit == []
    assert set(observed.nacked) <= set(published)
    assert poller.count() == 20


@pytest.mark.parametrize("mode", MODES)
def test_odd_payloads_are_stored_acked_and_polling_goes_on(app, emulator, pubsub_names, mode):
    observed = Observed(app)
    poller = RunningPoller(app, emulator, mode, pubsub_names, observed=observed).start()
    kinds = {"invalid-json", "binary", "empty", "attributes", "html", "large"}
    odd = publish_samples(pubsub_names, publisher.odd_samples(TEST_PROJECT, kinds))
    wait_until(lambda: poller.count() >= len(odd), 60, message="the odd payloads stored")
    after = publish_samples(pubsub_names, cloud_build_samples(1))
    wait_until(lambda: poller.count() >= len(odd) + 1, 30, message="a normal message after the odd ones")
    poller.stop()
    published = odd | after
    items = {item.message_id: item for item in poller.items()}
    assert sorted(items) == sorted(published)
    for message_id, sample in published.items():
        item = items[message_id]
        assert item.data == sample.data, sample.kind
        assert item.attributes == sample.attributes, sample.kind
    kinds_by_id = {message_id: sample.kind for message_id, sample in published.items()}
    flags = {kinds_by_id[item.message_id]: (item.is_json, item.is_binary) for item in items.values()}
    assert flags["invalid-json"] == (False, False)
    assert flags["binary"] == (False, True)
    assert flags["nul-text"] == (False, True)
    assert flags["empty"] == (False, False)
    assert flags["large"] == (True, False)
    assert len(items[next(k for k, v in kinds_by_id.items() if v == "many-attributes")].attributes) == 100
    assert sorted(observed.acked) == sorted(published)
    assert observed.nacked == []


def test_subscription_that_does_not_exist_fails_with_the_cause(app, emulator, monkeypatch):
    user_id, task_id = make_task(app, "no-such-subscription")
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host
    with app.app_context():
        outcome = run_polling_task(task_id)
        task = db.session.get(Task, task_id)
        notification = db.session.scalars(sa.select(Notification).order_by(Notification.timestamp.desc())).first()
        assert task.complete and task.finished_at is not None
        assert "no-such-subscription does not exist" in task.last_error
        assert notification.get_data()["progress"] == outcome
    assert outcome.startswith("Failed: ") and "does not exist" in outcome


def test_a_polling_task_on_the_emulator_makes_its_source_ask_for_the_emulators_hundred(app, emulator, monkeypatch):
    """run_polling_task hands make_source whether the app talks to the emulator (the pull size tested above)."""
    from app.pubsub import poller

    made = []

    def recording_make_source(*args, **kwargs):
        made.append(make_source(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(poller, "make_source", recording_make_source)
    _user_id, task_id = make_task(app, "no-such-subscription")
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host
    with app.app_context():
        assert run_polling_task(task_id).startswith("Failed: ")  # the subscription does not exist
    assert [(source.mode, source.pull_size) for source in made] == [("batch", EMULATOR_PULL_SIZE)]


def test_missing_credentials_fail_with_the_cause(app, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud application-default credentials either
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    app.config.update(PUBSUB_EMULATOR_HOST=None, GOOGLE_APPLICATION_CREDENTIALS=None, PUBSUB_PULL_MODE="")
    _user_id, task_id = make_task(app, "monitor-sub")
    with app.app_context():
        outcome = run_polling_task(task_id)
        task = db.session.get(Task, task_id)
        assert task.complete
        data = db.session.scalars(sa.select(Notification)).one().get_data()
    assert outcome.startswith("Failed: no Google Cloud credentials")
    assert data["progress"] == outcome and data["mode"] == "streaming"



def test_batch_mode_reconnects_with_backoff_when_pubsub_goes_away(app, tmp_path, require_postgres):
    import grpc
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    from helpers.services import PubSubEmulator

    private = PubSubEmulator(log_path=str(tmp_path / "emulator.log")).start()

    def create_names():
        """Create the topic and subscription on the private emulator; return a publisher for it."""
        channel = grpc.insecure_channel(private.host)
        publisher_client = pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel))
        publisher_client.create_topic(name=names["topic_path"])
        client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": private.host})
        client.create_subscription(name=names["subscription_path"], topic=names["topic_path"])
        client.close()
        return publisher_client

    names = {"topic": "topic-reconnect", "subscription": "sub-reconnect",
             "topic_path": f"projects/{TEST_PROJECT}/topics/topic-reconnect",
             "subscription_path": f"projects/{TEST_PROJECT}/subscriptions/sub-reconnect"}
    try:
        publisher_client = create_names()
        observed = Observed(app)
        poller = RunningPoller(app, private, "batch", names, observed=observed)
        # The restarted emulator has no subscription until create_names() runs again, and a pull in
        # that gap would rightly end the task ("subscription not found"); real Pub/Sub keeps its
        # subscriptions through an outage. So reconnects wait while the names are missing; while
        # the emulator is down they go ahead and fail, and the poller backs off.
        names_exist = threading.Event()
        names_exist.set()
        reconnect = poller.source.reconnect

        def reconnect_once_names_exist():
            assert names_exist.wait(60), "the test never re-created the names"
            reconnect()

        poller.source.reconnect = reconnect_once_names_exist
        poller.start()
        publisher_client.publish(names["topic_path"], b'{"before": true}').result(timeout=30)
        wait_until(lambda: poller.count() == 1, 30, message="the first message stored")

        private.stop()
        wait_until(lambda: any(n["progress"] == "Reconnecting" for n in poller.progress()), 30,
                   message="a Reconnecting notification")
        names_exist.clear()
        private.start()
        publisher_client = create_names()  # the emulator keeps nothing across a restart
        names_exist.set()
        publisher_client.publish(names["topic_path"], b'{"after": true}').result(timeout=30)
        # A restarted emulator numbers messages from 1 again; this one has a later publish time, so
        # the dedup key (subscription, message id, publish time) keeps it apart from the first.
        wait_until(lambda: len(observed.acked) == 2, 120, message="the message published after the outage")
        wait_until(lambda: poller.progress()[-1]["progress"] == "Polling", 15, message="Polling again")
        poller.stop()
        progress = [n["progress"] for n in poller.progress()]
        assert not any(stage.startswith("Failed") for stage in progress)
    finally:
        private.stop()


def test_the_cpu_counters_count_garbage_collections_only_while_watching():
    counters = CpuCounters()
    counters.add("convert", 0.001, messages=10)
    counters.watch_gc(True)
    try:
        gc.collect()
        gc.collect(0)
    finally:
        counters.watch_gc(False)
    # At least the two asked for (an automatic one may come in between).
    seen = list(counters.gc_collections)
    assert seen[0] >= 1 and seen[2] >= 1, seen
    assert counters.gc_seconds > 0
    assert counters.per_message_us()["gc"] == round(counters.gc_seconds * 1e6 / 10, 1)
    assert counters.per_message_us()["convert"] == 100.0
    counters.add_wall("write", 0.002)
    counters.add_wall("waiting", 0.0005)
    counters.add_wall("write", 0.001)
    assert counters.wall_per_message_us() == {"write": 300.0, "waiting": 50.0}
    gc.collect()  # no longer watched
    assert counters.gc_collections == seen
    assert counters._on_gc not in gc.callbacks
