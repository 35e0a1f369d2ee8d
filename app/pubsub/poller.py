"""The polling loop shared by both sources: write, then ack; stop, heartbeat and progress."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import current_app
from redis import RedisError
from rq.exceptions import ShutDownImminentException
from sqlalchemy.exc import SQLAlchemyError

from app import polling, retention
from app.alerts.evaluate import RuleEvaluator
from app.extensions import db
from app.models import Task, stream_job_id
from app.polling import RESUMED_STAGE, TaskState, mark_alive
from app.pubsub.client import SetupError, make_subscriber_client, on_emulator, pull_mode, subscription_path
from app.pubsub.filtering import LocalFilter, filters_locally
from app.pubsub.sources import EMULATOR_PULL_SIZE, Batch, PullSource, SourceError, StreamingSource
from app.pubsub.writer import BatchWriter, UserGone

log = logging.getLogger(__name__)

STOP_CHECK_SECONDS = 1.0  # the contract is "at least every 2 s"
HEARTBEAT_SECONDS = 10.0  # the contract is "at least every 15 s"
PROGRESS_SECONDS = 5.0  # the page polls every 5 s; more often would only pile up notifications
RECEIVE_WAIT_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0


class PollingFailed(RuntimeError):
    """Polling cannot go on; the message is the reason shown to the user."""


class WorkerGone(RuntimeError):
    """The worker that started this work horse has died; polling must stop here and resume elsewhere."""


def backoff_seconds(failures: int, first: float = 1.0, limit: float = MAX_BACKOFF_SECONDS) -> float:
    """Bounded exponential backoff: 1, 2, 4, ... seconds, never more than `limit`."""
    return min(limit, first * 2 ** max(0, failures - 1))


class Poller:
    """Runs one source into one writer for a Task until the Task is marked complete."""

    def __init__(
        self,
        task_id: str,
        source: PullSource | StreamingSource,
        writer: BatchWriter,
        *,
        stream: int = 0,
        clock: Callable[[], float] = time.monotonic,
        local_filter: LocalFilter | None = None,
    ):
        self.task_id = task_id
        # Which of the Task's jobs this is; only the first (stream 0) posts progress for the Task.
        self.stream = stream
        self.job_id = stream_job_id(task_id, stream)
        self.source = source
        self.writer = writer
        self.clock = clock
        # The subscription's filter where the app applies it (the emulator); None where Pub/Sub does.
        self.local_filter = local_filter
        task = db.session.get(Task, task_id)
        if task is None:
            raise LookupError(f"no task {task_id}")
        self.user_id = task.user_id
        self.subscription = task.subscription or ""
        self.description = task.description or f"Polling subscription {self.subscription}"
        self.stored_count = task.stored_count or 0
        self.streams = task.streams or 1
        # A Task that has heartbeated before is being run again: rq retried it after a restart.
        self.resumed = task.heartbeat_at is not None
        db.session.rollback()
        self.write_failures = 0
        # rq's work horse is a child of the worker; if the worker dies, the horse must not poll on as
        # an orphan while rq and app.polling.reconcile start the task again elsewhere.
        self.worker_pid = os.getppid()
        self.reported_count = -1
        self.reported_filtered = 0
        self.state: TaskState | None = None

    # -- the loop --
    def run(self) -> int:
        """Poll until a stop is requested; return how many new messages were stored."""
        started_with = self.stored_count
        if self.local_filter is not None:
            self.local_filter.refresh()
        self.source.open()
        if self.stream == 0:
            self.report(TaskState.POLLING, RESUMED_STAGE if self.resumed else None)
        now = self.clock()
        next_stop_check = now + STOP_CHECK_SECONDS
        next_heartbeat = now
        next_progress = now + PROGRESS_SECONDS
        pause_until = 0.0
        connect_failures = 0
        self.source.cpu.watch_gc(True)
        try:
            while True:
                now = self.clock()
                if now >= next_stop_check:
                    if os.getppid() != self.worker_pid:
                        raise WorkerGone(f"worker process {self.worker_pid} is gone")
                    if self.stop_requested():
                        break
                    next_stop_check = now + STOP_CHECK_SECONDS
                if now >= next_heartbeat:
                    self.heartbeat()
                    next_heartbeat = now + HEARTBEAT_SECONDS
                if now >= next_progress:
                    if self.stream == 0 and (self.task_stored_count() != self.reported_count
                                             or self.filtered_count() != self.reported_filtered
                                             or self.state != TaskState.POLLING):
                        self.report(TaskState.POLLING)
                    next_progress = now + PROGRESS_SECONDS
                if now < pause_until:
                    # Backing off after a failed write or a lost connection; keep checking for a stop.
                    time.sleep(min(pause_until - now, next_stop_check - now, 0.5))
                    continue
                try:
                    self.source.check()
                    waiting = time.perf_counter()
                    batch = self.source.receive(RECEIVE_WAIT_SECONDS)
                except SourceError as error:
                    if not error.retryable:
                        raise PollingFailed(error.reason) from None
                    connect_failures += 1
                    delay = backoff_seconds(connect_failures)
                    log.warning("Task %s: %s; reconnecting in %.0f s", self.task_id, error.reason, delay)
                    self.report(TaskState.RECONNECTING)
                    self._sleep_unless_stopped(delay)
                    if self.stop_requested():
                        break
                    if self.local_filter is not None:
                        self.local_filter.refresh()
                    self.source.reconnect()
                    continue
                if batch is None:
                    continue
                self.source.cpu.add_wall("waiting", time.perf_counter() - waiting)
                if connect_failures:
                    connect_failures = 0
                    self.report(TaskState.POLLING)
                if not self.store(batch):
                    pause_until = self.clock() + backoff_seconds(self.write_failures)
        finally:
            try:
                self.finish_source()
            finally:
                cpu = self.source.cpu
                cpu.watch_gc(False)
                # Read by bench/ingest.py: where this job's CPU and its loop's time went, per message written.
                log.info("Task %s (stream %d) ingest CPU per message (µs) %s over %d messages in %d writes; %d "
                         "garbage collections; wall time per message (µs) %s", self.task_id, self.stream,
                         json.dumps(cpu.per_message_us()), cpu.messages, cpu.writes, sum(cpu.gc_collections),
                         json.dumps(cpu.wall_per_message_us()))
        return self.stored_count - started_with

    def finish_source(self) -> None:
        """Write and ack what has already been received, then close the source."""
        self.source.stop_receiving()
        if self.write_failures == 0:
            while True:
                try:
                    batch = self.source.receive(0)
                except SourceError:
                    break  # an error already reported, or one that no longer matters
                if batch is None or not self.store(batch):
                    break
        self.source.close()

    def _sleep_unless_stopped(self, seconds: float) -> None:
        deadline = self.clock() + seconds
        while (remaining := deadline - self.clock()) > 0:
            time.sleep(min(remaining, STOP_CHECK_SECONDS))
            if self.stop_requested():
                return

    # -- one batch --
    def store(self, batch: Batch) -> bool:
        """Commit the batch, then ack it; nack it when the commit fails. Returns whether it was stored.

        Messages a local filter leaves out are not written, and are acked with the batch once
        the rest is committed (nacked with it when the commit fails, to be filtered again).
        """
        rows = batch.rows if self.local_filter is None else self.local_filter.keep(batch.rows)
        started, wall = time.thread_time(), time.perf_counter()
        try:
            inserted = self.writer.write(rows)
        except (SQLAlchemyError, UserGone) as error:
            self.write_failures += 1
            log.warning(
                "Task %s: could not store %d messages (%s); they are nacked and will be redelivered",
                self.task_id, len(batch.rows), error.__class__.__name__,
            )
            self.source.nack(batch)
            retention.report_write_failure(self.task_id, error, self.source.mode)
            return False
        self.source.cpu.add("write", time.thread_time() - started, len(batch.rows))
        self.source.cpu.add_wall("write", time.perf_counter() - wall)
        self.write_failures = 0
        self.source.ack(batch)
        self.stored_count += inserted
        return True

    # -- the Task row --
    def stop_requested(self) -> bool:
        try:
            complete = db.session.scalar(sa.select(Task.complete).where(Task.id == self.task_id))
            db.session.rollback()  # end the read: SQLite would otherwise keep an old snapshot
        except SQLAlchemyError as error:
            db.session.rollback()
            log.warning("Task %s: could not check for a stop request (%s)", self.task_id, error.__class__.__name__)
            return False
        return complete is None or bool(complete)

    def heartbeat(self) -> None:
        """Prove this job alive in Redis and in the database; either one is enough (see app.polling)."""
        try:
            mark_alive(current_app.redis, self.job_id)
        except RedisError as error:
            log.warning("Task %s: heartbeat in Redis failed (%s)", self.task_id, error.__class__.__name__)
        try:
            db.session.execute(
                sa.update(Task).where(Task.id == self.task_id).values(heartbeat_at=datetime.now(UTC))
            )
            db.session.commit()
        except SQLAlchemyError as error:
            db.session.rollback()
            log.warning("Task %s: heartbeat failed (%s)", self.task_id, error.__class__.__name__)

    def task_stored_count(self) -> int:
        """Messages stored for the Task: this job's own count, or the database's sum over all its streams."""
        if self.streams == 1:
            return self.stored_count
        try:
            count = db.session.scalar(sa.select(Task.stored_count).where(Task.id == self.task_id))
            db.session.rollback()
        except SQLAlchemyError:
            db.session.rollback()
            return self.reported_count
        return count or 0

    def filtered_count(self) -> int:
        """Messages this job's local filter left out (acked, not stored); 0 where Pub/Sub filters."""
        return 0 if self.local_filter is None else self.local_filter.filtered_count

    def report(self, state: TaskState, stage: str | None = None) -> None:
        """Record the task's state and post its progress (app.polling); a database outage only delays it."""
        self.state = state
        try:
            stored_count = self.task_stored_count()
            filtered_count = self.filtered_count()
            polling.report(self.task_id, state, stage, self.source.mode,
                           local_filter=None if self.local_filter is None else self.local_filter.progress())
            self.reported_count = stored_count
            self.reported_filtered = filtered_count
        except SQLAlchemyError as error:
            db.session.rollback()
            log.warning("Task %s: could not post %s (%s)", self.task_id, state, error.__class__.__name__)


def make_source(mode: str, client, path: str, user_id: int, subscription: str,
                on_emulator: bool = False) -> PullSource | StreamingSource:
    if mode == "streaming":
        return StreamingSource(client, path, user_id=user_id, subscription=subscription)
    return PullSource(client, path, user_id=user_id, subscription=subscription,
                      pull_size=EMULATOR_PULL_SIZE if on_emulator else None)


def run_polling_task(task_id: str, stream: int = 0) -> str:
    """Poll the Task's subscription until stopped; every outcome ends in a task_progress notification.

    `stream` says which of the Task's jobs this is (Task.streams of them share the subscription).
    Runs inside an application context. Returns the final stage ("Finished" or "Failed: ...").
    """
    config = current_app.config
    task = db.session.get(Task, task_id)
    if task is None:
        log.warning("Task %s does not exist; nothing to poll", task_id)
        return "Failed: no such task"
    mode: str | None = None
    try:
        mode = pull_mode(config)
        if task.complete:
            polling.end(task_id, TaskState.FINISHED, mode=mode)
            return "Finished"
        path = subscription_path(config["GCP_PROJECT_ID"], task.subscription or config["SUBSCRIPTION_NAME"])
        client = make_subscriber_client(config)
        try:
            # Messages are stored under the subscription's full path, its one canonical name.
            source = make_source(mode, client, path, task.user_id, path, on_emulator=on_emulator(config))
            writer = BatchWriter(db.engine, task.user_id, task_id, evaluator=RuleEvaluator(task.user_id, path))
            local_filter = LocalFilter(client, path) if filters_locally(config) else None
            db.session.rollback()
            poller = Poller(task_id, source, writer, stream=stream, local_filter=local_filter)
            stored = poller.run()
        finally:
            client.close()
    except (SetupError, PollingFailed) as error:
        reason = str(error)
        log.error("Task %s failed: %s", task_id, reason)
        polling.end(task_id, TaskState.FAILED, reason, mode)
        return f"Failed: {reason}"
    except WorkerGone as error:
        # Received messages were written and acked on the way out. The Task stays in progress; a
        # live worker resumes it once its heartbeat goes stale (app.polling.reconcile).
        log.warning("Task %s: %s; stopping so that a live worker resumes polling", task_id, error)
        with suppress(SQLAlchemyError):
            polling.report(task_id, TaskState.RECONNECTING, mode=mode)
        return "Interrupted"
    except ShutDownImminentException:
        # The worker is restarting (Heroku's daily restart, a deploy). What was received has been
        # written and acked on the way out; rq runs the job again and polling resumes.
        log.warning("Task %s: the worker is shutting down; polling resumes when the job is retried", task_id)
        with suppress(SQLAlchemyError):
            polling.report(task_id, TaskState.RECONNECTING, mode=mode)
        raise
    except Exception as error:
        # The process boundary: whatever went wrong, the user sees it and the task ends. The job
        # returns normally, so rq does not run it again: no crash loop.
        log.exception("Task %s crashed", task_id)
        reason = f"internal error ({error.__class__.__name__})"
        try:
            polling.end(task_id, TaskState.FAILED, reason, mode)
        except SQLAlchemyError:
            log.exception("Task %s: could not record the failure", task_id)
        return f"Failed: {reason}"
    log.info("Task %s (stream %d) finished after storing %d new messages", task_id, stream, stored)
    if stream == 0:
        polling.end(task_id, TaskState.FINISHED, mode=mode)
    return "Finished"
