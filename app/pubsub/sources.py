"""The two ways of receiving messages, behind one small interface.

A source hands out batches of converted rows together with the handles needed to
ack or nack them. It never acks on its own: the poller acks a batch only after
the writer has committed it.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.api_core import exceptions as api_exceptions
from google.api_core.gapic_v1 import routing_header
from google.cloud import pubsub_v1
from google.pubsub_v1.types import AcknowledgeRequest, ModifyAckDeadlineRequest, PullRequest

from app.pubsub.client import CALL_ERRORS, within
from app.pubsub.messages import row_from_pulled, row_from_streamed

log = logging.getLogger(__name__)

# How often a pull in flight looks at the stop flag: a stop cancels it rather than waiting out
# the pull's timeout (the emulator holds an empty pull open for all of it).
PULL_STOP_CHECK_SECONDS = 0.05
# The longest an acknowledge or a lease extension takes, retries included: a failed one only means a
# redelivery, which the unique key absorbs, and the threads that make them must go on to the next.
SETTLE_CALL_SECONDS = 10.0
# The emulator answers a pull with at most 100 messages, however many are asked for, and asking for
# more costs it more: with 3 pulls in flight and a 20,000-message backlog, 49 µs of its CPU a message
# asking for 1,000, 31 asking for 100 (medians of 4 drains; on the same warm emulator).
EMULATOR_PULL_SIZE = 100
# Giving messages back (a deadline of 0) is a courtesy: they come back at their ack deadline anyway. It
# runs as a job stops, which must not wait long on an unreachable Pub/Sub.
GIVE_BACK_CALL_SECONDS = 2.0

# Errors that no retry will cure: the subscription, the project or the credentials are wrong.
FATAL_ERRORS = (
    api_exceptions.NotFound,
    api_exceptions.PermissionDenied,
    api_exceptions.Unauthenticated,
    api_exceptions.Unauthorized,
    api_exceptions.InvalidArgument,
    api_exceptions.FailedPrecondition,
)


class SourceError(RuntimeError):
    """Receiving stopped. `retryable` says whether reconnecting may help."""

    def __init__(self, reason: str, retryable: bool):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def describe_error(error: BaseException, subscription_path: str) -> SourceError:
    """Name the cause in words a user can act on."""
    if isinstance(error, api_exceptions.NotFound):
        return SourceError(f"subscription not found: {subscription_path} does not exist", retryable=False)
    if isinstance(error, api_exceptions.PermissionDenied):
        return SourceError(f"permission denied on subscription {subscription_path}: {error.message}", False)
    if isinstance(error, api_exceptions.Unauthenticated | api_exceptions.Unauthorized):
        return SourceError(f"Google Cloud rejected the credentials: {error.message}", retryable=False)
    if isinstance(error, FATAL_ERRORS):
        return SourceError(f"{error.__class__.__name__}: {error.message}", retryable=False)
    if isinstance(error, api_exceptions.GoogleAPICallError):
        return SourceError(f"{error.__class__.__name__}: {error.message}", retryable=True)
    return SourceError(f"{error.__class__.__name__}: {error}", retryable=True)


class CpuCounters:
    """CPU seconds a job spent on each step of ingestion (time.thread_time of the thread doing it).

    pull: the puller thread outside conversion (batch mode; in streaming mode the client library's
    threads pull, and are not counted here); convert: message to row; write: BatchWriter.write;
    ack: acknowledging. Read once a job ends (Poller logs them). Counting costs two thread_time
    calls per batch, and per message for a streamed message's conversion; the wall times, two
    perf_counter calls per batch.
    """

    STEPS = ("pull", "convert", "write", "ack")
    # Wall time, not CPU, of the job's own loop: in BatchWriter.write, and waiting in receive() for a
    # batch that then came. Their shares of a drain show whether the writing or the receiving side
    # set its pace (bench/ingest.py).
    WALL = ("write", "waiting")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.STEPS, 0.0)
        self.messages = 0
        self.writes = 0  # batches written: messages / writes is the mean batch
        self._lock = threading.Lock()
        # Garbage collection while watch_gc() is on, in any of the job's threads: CPU seconds and
        # collections per generation. Most of it interrupts one of the steps above, and so is also
        # counted there; the rest is in threads no step counts (the leaser, the library's own threads).
        self.gc_seconds = 0.0
        self.gc_collections = [0, 0, 0]
        self._gc_started: float | None = None
        self.wall = dict.fromkeys(self.WALL, 0.0)  # only the job's loop adds to it: no lock

    def _on_gc(self, phase: str, info: dict) -> None:
        # A collection runs from start to stop on one thread, and collections never overlap.
        if phase == "start":
            self._gc_started = time.thread_time()
        elif self._gc_started is not None:  # not a stop whose start came before watch_gc(True)
            self.gc_seconds += time.thread_time() - self._gc_started
            self.gc_collections[info["generation"]] += 1
            self._gc_started = None

    def watch_gc(self, on: bool) -> None:
        """Count collections from now (on) or no longer (off). The callback runs with the GIL held."""
        if on and self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        elif not on and self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def add(self, step: str, seconds: float, messages: int = 0) -> None:
        with self._lock:
            self.seconds[step] += seconds
            self.messages += messages
            if step == "write":
                self.writes += 1

    def add_wall(self, part: str, seconds: float) -> None:
        self.wall[part] += seconds

    def per_message_us(self) -> dict[str, float]:
        per_message = {step: round(seconds * 1e6 / max(1, self.messages), 1) for step, seconds in self.seconds.items()}
        per_message["gc"] = round(self.gc_seconds * 1e6 / max(1, self.messages), 1)
        return per_message

    def wall_per_message_us(self) -> dict[str, float]:
        return {part: round(seconds * 1e6 / max(1, self.messages), 1) for part, seconds in self.wall.items()}


@dataclass
class Batch:
    rows: list[dict[str, Any]]
    handles: list[Any]  # ack ids (batch mode) or Message objects (streaming mode)
    received_at: float = field(default_factory=time.monotonic)
    size: int = 0  # the messages' bytes (batch mode), for the memory budgets of PullSource

    @property
    def message_ids(self) -> list[str]:
        return [row["message_id"] for row in self.rows]


class PullSource:
    """Unary Pull in a background thread, one batch ahead of the writer, with deadlines kept alive."""

    mode = "batch"

    def __init__(
        self,
        client: pubsub_v1.SubscriberClient,
        subscription_path: str,
        *,
        user_id: int,
        subscription: str,
        max_messages: int = 1000,
        pull_timeout: float = 10.0,
        prefetch: int = 4,
        prefetch_bytes: int = 64 * 1024 * 1024,
        write_bytes: int = 16 * 1024 * 1024,
        pulls_in_flight: int = 3,
        extend_after: float = 5.0,
        extension_seconds: int = 60,
        pull_size: int | None = None,
    ):
        self.client = client
        self.subscription_path = subscription_path
        self.user_id = user_id
        self.subscription = subscription
        self.max_messages = max_messages
        # What one pull asks for: `max_messages` unless told less (EMULATOR_PULL_SIZE on the emulator).
        self.pull_size = min(pull_size or max_messages, max_messages)
        self.pull_timeout = pull_timeout
        self.extend_after = extend_after
        self.extension_seconds = extension_seconds
        self.pulls_in_flight = max(1, pulls_in_flight)
        # Memory is bounded by the batch size and in bytes: pulls stop while `prefetch` full pulls' worth
        # of messages, or `prefetch_bytes` of them, wait, and then at most `pulls_in_flight` more are on
        # their way; one write (of up to `max_messages` or about `write_bytes`) and two acks are in
        # flight. (A pull response is at most 1,000 messages and about 10 MB.)
        self.prefetch_messages = prefetch * max_messages
        self.prefetch_bytes = prefetch_bytes
        self.write_bytes = write_bytes
        self._ready: queue.Queue[Batch | SourceError] = queue.Queue()
        self._buffered = 0  # messages in _ready
        self._buffered_bytes = 0  # and their bytes
        self._carried: Batch | None = None  # taken from _ready, too large to join the last write
        self._buffered_lock = threading.Lock()
        self._taken = threading.Event()  # set when the writer takes a batch out of _ready
        self._pending_error: SourceError | None = None
        self._held: dict[int, tuple[Batch, float]] = {}
        self._held_lock = threading.Lock()
        self._stopping = threading.Event()
        self._puller: threading.Thread | None = None
        self._leaser: threading.Thread | None = None
        # Acks go out from their own thread, so the next batch is written while the last is acked.
        self._acks: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._acker: threading.Thread | None = None
        self.cpu = CpuCounters()

    # -- life cycle --
    def open(self) -> None:
        self._stopping.clear()
        self._puller = threading.Thread(target=self._pull_loop, name="pubsub-puller", daemon=True)
        self._puller.start()
        if self._leaser is None or not self._leaser.is_alive():
            self._leaser = threading.Thread(target=self._lease_loop, name="pubsub-leaser", daemon=True)
            self._leaser.start()
        if self._acker is None or not self._acker.is_alive():
            self._acker = threading.Thread(target=self._ack_loop, name="pubsub-acker", daemon=True)
            self._acker.start()

    def reconnect(self) -> None:
        if self._puller is not None:
            self._puller.join(timeout=self.pull_timeout + 5)
        self._pending_error = None  # the error that brought us here has been handled
        self.open()

    def stop_receiving(self) -> None:
        """Stop pulling; batches already pulled can still be received and written."""
        self._stopping.set()

    def close(self, timeout: float = 3.0) -> None:
        """Stop pulling and give back anything pulled but not handed out."""
        self._stopping.set()
        if self._puller is not None:
            self._puller.join(timeout=timeout)
        while (item := self._next(0)) is not None:
            self._taken_out(item)
            if isinstance(item, Batch):
                self.nack(item)
        if self._acker is not None and self._acker.is_alive():
            self._acks.put(None)
            self._acker.join(timeout=30)

    # -- receiving --
    def check(self) -> None:
        """Nothing to check: pull errors arrive through receive()."""

    def receive(self, timeout: float) -> Batch | None:
        """The pulled messages waiting, merged into one batch of up to `max_messages` (and, unless one
        pull's batch alone is larger, `write_bytes`).

        A pull often returns far fewer than asked for; writing what several pulls
        returned in one transaction keeps the per-transaction cost off each message.
        """
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        item = self._next(timeout)
        if item is None:
            return None
        self._taken_out(item)
        if isinstance(item, SourceError):
            raise item
        batches = [item]
        count, size = len(item.rows), item.size
        while count < self.max_messages:
            item = self._next(0)
            if item is None:
                break
            if isinstance(item, Batch) and size + item.size > self.write_bytes:
                self._carried = item  # the first of the next write
                break
            self._taken_out(item)
            if isinstance(item, SourceError):
                self._pending_error = item
                break
            batches.append(item)
            count, size = count + len(item.rows), size + item.size
        return self._merge(batches) if len(batches) > 1 else batches[0]

    def _next(self, timeout: float) -> Batch | SourceError | None:
        """The batch carried over from the last receive(), else the next one pulled (None when none comes)."""
        if self._carried is not None:
            item, self._carried = self._carried, None
            return item
        try:
            return self._ready.get(timeout=timeout) if timeout > 0 else self._ready.get_nowait()
        except queue.Empty:
            return None

    def _merge(self, batches: list[Batch]) -> Batch:
        merged = Batch(rows=[row for batch in batches for row in batch.rows],
                       handles=[handle for batch in batches for handle in batch.handles],
                       size=sum(batch.size for batch in batches))
        with self._held_lock:
            since = min(self._held.pop(id(batch), (batch, time.monotonic()))[1] for batch in batches)
            self._held[id(merged)] = (merged, since)
        return merged

    def _start_pull(self, request: PullRequest, metadata: list, arrived: threading.Event):
        """A pull in flight, as a future on the transport's stub (so that a stop can cancel it)."""
        call = self.client.transport.pull.future(request, timeout=self.pull_timeout, metadata=metadata)
        call.add_done_callback(lambda _call: arrived.set())
        return call

    def _pull_loop(self) -> None:
        """Pull until stopped, with up to `pulls_in_flight` pulls outstanding while a backlog drains.

        One pull at a time waits on its round trip, and on the emulator each pull returns at most
        100 messages: several in flight keep the server busy while this thread converts what came
        back. After an empty or timed-out pull (nothing waiting) it drops back to one pull, so an idle
        subscription holds one long pull open. Pulls stop being made while `prefetch_messages`
        pulled messages, or `prefetch_bytes` of them, wait for the writer. Responses are handled as
        they arrive; a stop cancels what is in flight and gives back what arrived too late to be handled.
        """
        request = PullRequest(subscription=self.subscription_path, max_messages=self.pull_size)
        metadata = [routing_header.to_grpc_metadata((("subscription", self.subscription_path),))]
        arrived = threading.Event()
        in_flight: list = []
        wanted = 1
        counted = time.thread_time()
        try:
            while not self._stopping.is_set():
                while (len(in_flight) < wanted and self._buffered < self.prefetch_messages
                       and self._buffered_bytes < self.prefetch_bytes):
                    in_flight.append(self._start_pull(request, metadata, arrived))
                if not in_flight:
                    self._taken.wait(PULL_STOP_CHECK_SECONDS)  # the writer is behind: wait for room
                    self._taken.clear()
                    continue
                # Woken by a response itself, or after a stop-check period with none.
                arrived.wait(PULL_STOP_CHECK_SECONDS)
                arrived.clear()
                for call in [call for call in in_flight if call.done()]:
                    in_flight.remove(call)
                    try:
                        response = call.result()
                    except grpc.RpcError as error:
                        error = api_exceptions.from_grpc_error(error)
                        if isinstance(error, api_exceptions.DeadlineExceeded):
                            wanted = 1  # nothing arrived within the timeout
                            continue
                        self._put(describe_error(error, self.subscription_path))
                        return
                    received_messages = type(response).pb(response).received_messages
                    if not received_messages:
                        wanted = 1
                        continue
                    wanted = self.pulls_in_flight
                    received_at = datetime.now(UTC)
                    converting = time.thread_time()
                    self.cpu.add("pull", converting - counted)
                    rows = [row_from_pulled(received, user_id=self.user_id, subscription=self.subscription,
                                            received_at=received_at) for received in received_messages]
                    batch = Batch(rows=rows, handles=[received.ack_id for received in received_messages],
                                  size=sum([row["size"] for row in rows]))
                    counted = time.thread_time()
                    self.cpu.add("convert", counted - converting)
                    self._hold(batch)
                    if self._stopping.is_set():
                        self.nack(batch)
                        return
                    self._put(batch)
        except Exception as error:  # noqa: BLE001 - every pull error is handed to the poller, which decides
            self._put(describe_error(error, self.subscription_path))
        finally:
            for call in in_flight:
                # cancel() is False once the response is in: its messages go back at once.
                if not call.cancel():
                    self._give_back(call)

    def _give_back(self, call) -> None:
        try:
            response = call.result(timeout=0)
        except Exception:  # noqa: BLE001 - a failed or cancelled pull holds no messages
            return
        ack_ids = [received.ack_id for received in type(response).pb(response).received_messages]
        if ack_ids:
            self._modify_deadline(ack_ids, 0)

    def _put(self, item: Batch | SourceError) -> None:
        if isinstance(item, Batch):
            with self._buffered_lock:
                self._buffered += len(item.rows)
                self._buffered_bytes += item.size
        self._ready.put(item)

    def _taken_out(self, item: Batch | SourceError) -> None:
        if isinstance(item, Batch):
            with self._buffered_lock:
                self._buffered -= len(item.rows)
                self._buffered_bytes -= item.size
            self._taken.set()

    # -- leases --
    def _hold(self, batch: Batch) -> None:
        with self._held_lock:
            self._held[id(batch)] = (batch, time.monotonic())

    def _release(self, batch: Batch) -> None:
        with self._held_lock:
            self._held.pop(id(batch), None)

    def _lease_loop(self) -> None:
        """Extend the deadlines of batches held longer than `extend_after` (a slow or failing write)."""
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with self._held_lock:
                due = [batch for batch, since in self._held.values() if now - since >= self.extend_after]
                for batch in due:
                    self._held[id(batch)] = (batch, now + self.extension_seconds / 2 - self.extend_after)
            for batch in due:
                self._modify_deadline(batch.handles, self.extension_seconds)
            if self._stopping.is_set() and not self._held:
                return

    # Acknowledge and ModifyAckDeadline requests are built as raw protobufs and wrapped: given the ack
    # ids as keywords, proto-plus converts each in Python, 2.6 µs an id (most of the acker's CPU).
    def _modify_deadline(self, ack_ids: list[str], seconds: int) -> None:
        bound = within(GIVE_BACK_CALL_SECONDS if seconds == 0 else SETTLE_CALL_SECONDS)
        for start in range(0, len(ack_ids), 1000):
            try:
                self.client.modify_ack_deadline(
                    request=ModifyAckDeadlineRequest.wrap(ModifyAckDeadlineRequest.pb()(
                        subscription=self.subscription_path, ack_ids=ack_ids[start : start + 1000],
                        ack_deadline_seconds=seconds)),
                    **bound,
                )
            except CALL_ERRORS as error:
                # The messages come back after their deadline and are stored once: nothing is lost.
                log.warning("modify_ack_deadline(%s) failed: %s", seconds, error)

    # -- settling --
    def ack(self, batch: Batch) -> None:
        """Hand a committed batch to the acker thread (waiting while two acks are queued)."""
        self._acks.put(batch)

    def _ack_loop(self) -> None:
        bound = within(SETTLE_CALL_SECONDS)
        while (batch := self._acks.get()) is not None:
            started = time.thread_time()
            for start in range(0, len(batch.handles), 1000):
                try:
                    self.client.acknowledge(request=AcknowledgeRequest.wrap(AcknowledgeRequest.pb()(
                        subscription=self.subscription_path, ack_ids=batch.handles[start : start + 1000])), **bound)
                except CALL_ERRORS as error:
                    # A lost ack means a redelivery, which the unique key absorbs.
                    log.warning("acknowledge failed (the messages will be redelivered and stored once): %s", error)
            # Leases are kept alive until the ack has gone out.
            self._release(batch)
            self.cpu.add("ack", time.thread_time() - started)

    def nack(self, batch: Batch) -> None:
        self._release(batch)
        self._modify_deadline(batch.handles, 0)


class StreamingSource:
    """StreamingPull through `SubscriberClient.subscribe`, with flow control; one stream for the job's life."""

    mode = "streaming"

    def __init__(
        self,
        client: pubsub_v1.SubscriberClient,
        subscription_path: str,
        *,
        user_id: int,
        subscription: str,
        max_messages: int = 1000,
        max_bytes: int = 64 * 1024 * 1024,
        batch_size: int = 500,
        batch_wait: float = 0.05,
    ):
        self.client = client
        self.subscription_path = subscription_path
        self.user_id = user_id
        self.subscription = subscription
        # Flow control bounds memory: at most this many messages (and bytes) are outstanding.
        self.flow_control = pubsub_v1.types.FlowControl(max_messages=max_messages, max_bytes=max_bytes)
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self._received: queue.Queue[tuple[dict[str, Any], Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._stopping = False
        self._future = None
        self.cpu = CpuCounters()

    def open(self) -> None:
        with self._lock:
            self._stopping = False
        self._future = self.client.subscribe(
            self.subscription_path, callback=self._on_message, flow_control=self.flow_control,
            await_callbacks_on_shutdown=True,
        )

    def _on_message(self, message) -> None:
        started = time.thread_time()
        row = row_from_streamed(message, user_id=self.user_id, subscription=self.subscription)
        self.cpu.add("convert", time.thread_time() - started)
        with self._lock:
            if self._stopping:
                message.nack()
                return
            self._received.put((row, message))

    def check(self) -> None:
        """Raise SourceError when the stream has ended on its own (the library already retried what it could)."""
        future = self._future
        if future is None or not future.done():
            return
        try:
            error = future.exception(timeout=0)
        except Exception as cancelled:  # noqa: BLE001 - a cancelled future raises instead of returning
            error = cancelled
        if error is None:
            raise SourceError("the stream closed", retryable=True)
        raise describe_error(error, self.subscription_path)

    def reconnect(self) -> None:
        self._shutdown_stream()
        self.open()

    def receive(self, timeout: float) -> Batch | None:
        try:
            first = self._received.get(timeout=timeout) if timeout > 0 else self._received.get_nowait()
        except queue.Empty:
            return None
        items = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(items) < self.batch_size:
            try:
                items.append(self._received.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(remaining, 0.01))
        return Batch(rows=[row for row, _ in items], handles=[message for _, message in items])

    def stop_receiving(self) -> None:
        """From now on the callback nacks; everything queued before can still be written and acked."""
        with self._lock:
            self._stopping = True

    def close(self, timeout: float = 10.0) -> None:
        self.stop_receiving()
        # Whatever is still queued was never written: give it back before the stream goes.
        while True:
            try:
                _row, message = self._received.get_nowait()
            except queue.Empty:
                break
            message.nack()
        self._shutdown_stream(timeout)

    def _shutdown_stream(self, timeout: float = 10.0) -> None:
        future, self._future = self._future, None
        if future is None:
            return
        future.cancel()
        try:
            future.result(timeout=timeout)
        except Exception as error:  # noqa: BLE001 - the stream's end state no longer matters
            log.debug("stream ended: %r", error)

    def ack(self, batch: Batch) -> None:
        started = time.thread_time()
        for message in batch.handles:
            message.ack()
        self.cpu.add("ack", time.thread_time() - started)

    def nack(self, batch: Batch) -> None:
        for message in batch.handles:
            message.nack()

