"""Retention: stored messages older than their subscription's limit are deleted, a small batch at a time.

`MESSAGE_RETENTION_DAYS` is the default (0 keeps messages forever). `Subscription.retention_days`
overrides it for one user's subscription (an admin sets it on /admin/storage). Every row of a user
counts, quarantined messages included: the rule looks only at `received_at`.

A pass runs in the worker's maintenance step (app.worker), when a worker starts and then once per
RETENTION_INTERVAL_SECONDS across all workers: the first worker to find the Redis key `...:next`
absent runs it and sets the key again with that expiry. A pass works for at most SLICE_SECONDS at
a time, so that a worker is never kept from its own heartbeats; a pass that is cut short goes on at
the next maintenance step of any worker. `flask purge` deletes with the same `delete_older_than`.

Each batch is one short transaction that deletes up to BATCH_ROWS rows picked through the
(user_id, received_at) index, so no lock is held for long and a pass that finds nothing due
reads only the index.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from redis import Redis, RedisError
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.models import Subscription, Task, User, UserItem, as_utc, utcnow
from app.polling import TaskState, transition

log = logging.getLogger(__name__)

BATCH_ROWS = 5000
# After each batch a pass rests as long as the batch took, so that it takes at most about half of the
# database's time for itself and pages polling meanwhile keep their latency (bench/retention.py).
PAUSE_RATIO = 1.0
# A pass hands the worker back after this long and goes on at the next maintenance step.
SLICE_SECONDS = 10.0
# How long the storage figure shown on the live page may be old.
SIZE_CACHE_SECONDS = 60
WARNING_SHARE = 0.80
CRITICAL_SHARE = 0.95
DATABASE_FULL_REASON = "the database is full: delete old messages or raise the limit"


# --- deleting ------------------------------------------------------------------------------------


def delete_older_than(cutoff: datetime, user_id: int, *criteria: Any, batch_rows: int = BATCH_ROWS,
                      deadline: float | None = None, pause_ratio: float = 0.0,
                      progress: Callable[[int], None] | None = None) -> tuple[int, bool]:
    """Delete the user's messages received before `cutoff` (and matching `criteria`), one batch per
    transaction, resting `pause_ratio` times each batch's duration after it; return (how many were
    deleted, whether all were)."""
    due = sa.select(UserItem.id).where(UserItem.user_id == user_id, UserItem.received_at < cutoff, *criteria)
    deleted = 0
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            return deleted, False
        started = time.monotonic()
        batch = due.order_by(UserItem.received_at).limit(batch_rows)
        result = db.session.execute(sa.delete(UserItem).where(UserItem.id.in_(batch)),
                                    execution_options={"synchronize_session": False})
        db.session.commit()
        deleted += result.rowcount
        if progress and result.rowcount:
            progress(deleted)
        if result.rowcount < batch_rows:
            return deleted, True
        if pause_ratio > 0:
            time.sleep((time.monotonic() - started) * pause_ratio)


def user_ids() -> list[int]:
    return list(db.session.scalars(sa.select(User.id).order_by(User.id)))


def overrides() -> list[tuple[int, str, int]]:
    """(user id, subscription, days) of every subscription whose retention an admin has set."""
    rows = db.session.execute(
        sa.select(Subscription.user_id, Subscription.name, Subscription.retention_days)
        .where(Subscription.retention_days.is_not(None)).order_by(Subscription.user_id, Subscription.name)
    )
    return [(row.user_id, row.name, row.retention_days) for row in rows]


def has_override():
    """SQL: the message's subscription has its own retention for its user."""
    return sa.exists().where(Subscription.user_id == UserItem.user_id, Subscription.name == UserItem.subscription,
                             Subscription.retention_days.is_not(None))


def apply_retention(now: datetime | None = None, deadline: float | None = None) -> tuple[int, bool]:
    """Delete every message older than its retention; (how many, whether the pass got through)."""
    now = now or utcnow()
    deleted = 0
    for user_id, subscription, days in overrides():
        if days <= 0:
            continue
        count, finished = delete_older_than(now - timedelta(days=days), user_id, UserItem.subscription == subscription,
                                            deadline=deadline, pause_ratio=PAUSE_RATIO)
        deleted += count
        if not finished:
            return deleted, False
    default_days = current_app.config["MESSAGE_RETENTION_DAYS"]
    if default_days > 0:
        cutoff = now - timedelta(days=default_days)
        for user_id in user_ids():
            count, finished = delete_older_than(cutoff, user_id, ~has_override(), deadline=deadline,
                                                pause_ratio=PAUSE_RATIO)
            deleted += count
            if not finished:
                return deleted, False
    return deleted, True


def retention_days_of(user_id: int, subscription: str) -> float:
    """The days a user's messages of a subscription are kept (0: forever)."""
    days = db.session.scalar(sa.select(Subscription.retention_days).where(
        Subscription.user_id == user_id, Subscription.name == subscription))
    return current_app.config["MESSAGE_RETENTION_DAYS"] if days is None else days


def set_retention_days(user_id: int, subscription: str, days: int | None) -> None:
    """Set (None: clear) a user's retention for one subscription; the row is added to their list if
    missing (their default subscription has none until then). The caller commits."""
    row = db.session.scalar(sa.select(Subscription).where(Subscription.user_id == user_id,
                                                          Subscription.name == subscription))
    if row is None:
        if days is None:
            return
        row = Subscription(user_id=user_id, name=subscription)
        db.session.add(row)
    row.retention_days = days


# --- the database's size ---------------------------------------------------------------------------


def database_size_bytes() -> int:
    """The database's size on disk: pg_database_size on PostgreSQL, page_count * page_size on SQLite."""
    if db.engine.dialect.name == "postgresql":
        return int(db.session.scalar(sa.text("SELECT pg_database_size(current_database())")))
    page_count = db.session.execute(sa.text("PRAGMA page_count")).scalar()
    page_size = db.session.execute(sa.text("PRAGMA page_size")).scalar()
    return int(page_count) * int(page_size)


@dataclass
class SizeStatus:
    size_bytes: int
    limit_bytes: int | None
    level: str  # "ok", "warning" (80% of the limit) or "critical" (95%); "ok" when no limit is set

    @property
    def share(self) -> float | None:
        return self.size_bytes / self.limit_bytes if self.limit_bytes else None

    def words(self) -> str:
        if not self.limit_bytes:
            return human_size(self.size_bytes)
        return f"{human_size(self.size_bytes)} of {human_size(self.limit_bytes)} ({self.share:.0%})"


def human_size(size_bytes: int | float) -> str:
    """1,536 -> '1.5 kB'; binary multiples, as PostgreSQL's pg_size_pretty counts them."""
    size = float(size_bytes)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def size_status(size_bytes: int) -> SizeStatus:
    limit_mb = current_app.config["DATABASE_SIZE_LIMIT_MB"]
    limit = limit_mb * 1024 * 1024 if limit_mb > 0 else None
    level = "ok"
    if limit and size_bytes >= CRITICAL_SHARE * limit:
        level = "critical"
    elif limit and size_bytes >= WARNING_SHARE * limit:
        level = "warning"
    return SizeStatus(size_bytes, limit, level)


def cached_size_status() -> SizeStatus:
    """The size status, measured at most once a minute across processes (kept in Redis)."""
    key = redis_key("size")
    try:
        cached = current_app.redis.get(key)
    except RedisError:
        cached = None
    if cached is not None:
        return size_status(int(cached))
    size = database_size_bytes()
    try:
        current_app.redis.set(key, size, ex=SIZE_CACHE_SECONDS)
    except RedisError:
        pass  # measured again next time; the page still shows it
    return size_status(size)


def log_size(status: SizeStatus) -> None:
    """Warn in the log when the database nears DATABASE_SIZE_LIMIT_MB (once per retention pass)."""
    if status.level == "critical":
        log.error("The database is nearly full: %s. Lower MESSAGE_RETENTION_DAYS or move to a bigger plan.",
                  status.words())
    elif status.level == "warning":
        log.warning("The database is filling up: %s. Lower MESSAGE_RETENTION_DAYS or move to a bigger plan.",
                    status.words())


# --- passes, scheduled through Redis -------------------------------------------------------------------


def redis_key(name: str) -> str:
    # Workers of one deployment share the task queue's name; tests and several apps on one Redis do not.
    return f"pubsub-monitor:{current_app.config['RQ_QUEUE']}:retention:{name}"


@dataclass
class PassRecord:
    started_at: str
    finished_at: str | None = None
    deleted: int = 0
    size_bytes: int | None = None
    slices: int = 0
    default_days: float = 0
    overrides: list[list[Any]] = field(default_factory=list)

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.started_at)

    @property
    def finished(self) -> datetime | None:
        return datetime.fromisoformat(self.finished_at) if self.finished_at else None

    @classmethod
    def load(cls, raw: bytes | str | None) -> PassRecord | None:
        if not raw:
            return None
        return cls(**json.loads(raw))


def iso(moment: datetime) -> str:
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def last_pass() -> PassRecord | None:
    """The last (or the running) pass, as the storage page shows it."""
    return PassRecord.load(current_app.redis.get(redis_key("last")))


def next_pass_at() -> datetime | None:
    """When the next pass is due; None when it is due now (the next maintenance step of a worker runs it)."""
    ttl_ms = current_app.redis.pttl(redis_key("next"))
    if ttl_ms is None or ttl_ms < 0:
        return None
    return utcnow() + timedelta(milliseconds=ttl_ms)


def run_if_due(slice_seconds: float = SLICE_SECONDS) -> PassRecord | None:
    """Run (or go on with) the retention pass when it is due and no other worker runs it; the record, or None.

    Raises RedisError and SQLAlchemyError; the worker logs them and tries again at its next step.
    """
    redis: Redis = current_app.redis
    if redis.exists(redis_key("next")):
        return None
    token = uuid.uuid4().hex
    # One worker at a time; the lock outlives a slice so that a crashed worker does not block for long.
    if not redis.set(redis_key("running"), token, nx=True, ex=int(slice_seconds * 6) + 1):
        return None
    try:
        record = last_pass()
        if record is None or record.finished_at is not None:
            record = PassRecord(started_at=iso(utcnow()))
        record.default_days = current_app.config["MESSAGE_RETENTION_DAYS"]
        record.overrides = [list(rule) for rule in overrides()]
        try:
            deleted, finished = apply_retention(deadline=time.monotonic() + slice_seconds)
        except SQLAlchemyError:
            db.session.rollback()
            raise
        record.deleted += deleted
        record.slices += 1
        if finished:
            record.finished_at = iso(utcnow())
            status = size_status(database_size_bytes())
            db.session.rollback()
            record.size_bytes = status.size_bytes
            log_size(status)
            redis.set(redis_key("size"), status.size_bytes, ex=SIZE_CACHE_SECONDS)
            redis.set(redis_key("next"), record.finished_at,
                      ex=max(1, current_app.config["RETENTION_INTERVAL_SECONDS"]))
        redis.set(redis_key("last"), json.dumps(asdict(record)))
        return record
    finally:
        if redis.get(redis_key("running")) == token.encode():
            redis.delete(redis_key("running"))


# --- writes that fail for lack of space ---------------------------------------------------------------


def is_disk_full(error: BaseException) -> bool:
    """Whether a database error says the disk (or the database's page limit) is full."""
    original = getattr(error, "orig", None) or error
    if getattr(original, "pgcode", None) == "53100":  # PostgreSQL disk_full
        return True
    if isinstance(original, sqlite3.Error):
        return getattr(original, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(original)
    return False


def over_size_limit() -> bool:
    """Whether the database has reached DATABASE_SIZE_LIMIT_MB (measured on a connection of its own)."""
    limit_mb = current_app.config["DATABASE_SIZE_LIMIT_MB"]
    if limit_mb <= 0:
        return False
    try:
        with db.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                size = connection.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
            else:
                size = (connection.execute(sa.text("PRAGMA page_count")).scalar()
                        * connection.execute(sa.text("PRAGMA page_size")).scalar())
    except SQLAlchemyError:
        return False
    return size >= limit_mb * 1024 * 1024


def write_failure_reason(error: BaseException) -> str | None:
    """The words a person can act on when a write failed for lack of space, else None.

    Besides a full disk, Heroku's Essential plans revoke the right to insert once the database is over
    its plan's size (SQLSTATE 42501, insufficient_privilege): that too is "full" when the size is
    over DATABASE_SIZE_LIMIT_MB.
    """
    if is_disk_full(error):
        return DATABASE_FULL_REASON
    original = getattr(error, "orig", None) or error
    if getattr(original, "pgcode", None) == "42501" and over_size_limit():
        return DATABASE_FULL_REASON
    return None


def report_write_failure(task_id: str, error: BaseException, mode: str | None = None) -> None:
    """Put the reason on the polling task when a write failed for lack of space (the task keeps
    polling: its messages are nacked and redelivered once there is room). Other failures pass."""
    reason = write_failure_reason(error)
    if reason is None:
        return
    try:
        db.session.rollback()
        if db.session.scalar(sa.select(Task.state_reason).where(Task.id == task_id)) == reason:
            db.session.rollback()
            return
        try:
            transition(task_id, TaskState.POLLING, reason, mode=mode)
        except SQLAlchemyError:
            # No room for a notification either: the state alone may still fit in its row.
            db.session.rollback()
            transition(task_id, TaskState.POLLING, reason, mode=mode, notify=False)
    except SQLAlchemyError as failure:
        db.session.rollback()
        log.warning("Task %s: the database is full and the task's state could not say so (%s)",
                    task_id, failure.__class__.__name__)
    log.error("Task %s: %s", task_id, reason)
