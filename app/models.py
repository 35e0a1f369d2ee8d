"""The data model: users, their polling tasks, notifications and received messages."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from flask_login import UserMixin
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db, login
from app.names import lenient_canonical


def utcnow() -> datetime:
    return datetime.now(UTC)


def full_subscription_path(name: str | None) -> str | None:
    """A subscription name as the models store it: the full path (see app.names)."""
    return None if name is None else lenient_canonical(name, current_app.config["GCP_PROJECT_ID"])


# Stored as timezone-aware where the database can (PostgreSQL); SQLite hands
# naive datetimes back, which as_utc() repairs.
TZDateTime = sa.DateTime(timezone=True)


def as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z: how every time leaves the server, so no browser reads it as local."""
    moment = as_utc(moment)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


class User(UserMixin, db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    username: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(120), unique=True)
    password_hash: so.Mapped[str | None] = so.mapped_column(sa.String(256))
    is_admin: so.Mapped[bool] = so.mapped_column(default=False)
    last_seen: so.Mapped[datetime | None] = so.mapped_column(TZDateTime, default=utcnow)
    # Part of every session and remember-me cookie; signing out increments it, which ends them all.
    session_generation: so.Mapped[int] = so.mapped_column(default=0, server_default="0")

    tasks: so.WriteOnlyMapped[Task] = so.relationship(back_populates="user")
    notifications: so.WriteOnlyMapped[Notification] = so.relationship(back_populates="user")
    items: so.WriteOnlyMapped[UserItem] = so.relationship(
        back_populates="user", primaryjoin="User.id == foreign(UserItem.user_id)")

    def __repr__(self) -> str:
        return f"<User {self.username}>"

    def get_id(self) -> str:
        """The id kept in the session and remember-me cookies, tied to the current password and
        session generation: changing the password, or signing out, ends every other session."""
        return f"{self.id}:{self.password_fingerprint()}:{self.session_generation}"

    def end_sessions(self) -> None:
        """Make every session and remember-me cookie issued so far invalid; the caller commits."""
        self.session_generation = (self.session_generation or 0) + 1

    def password_fingerprint(self) -> str:
        return hashlib.sha256((self.password_hash or "").encode()).hexdigest()[:16]

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return bool(self.password_hash) and check_password_hash(self.password_hash, password)

    def add_notification(self, name: str, data: dict[str, Any]) -> Notification:
        """Add a notification and prune this user's old ones; the caller commits.

        Pruning happens here, at write time, so the table stays small without a periodic job:
        one indexed range delete (ix_notification_user_id_timestamp) per notification, usually
        of a single row. Pages only ever ask for notifications newer than their last poll.
        """
        now = time.time()
        retention = current_app.config["NOTIFICATION_RETENTION_SECONDS"]
        db.session.execute(
            sa.delete(Notification).where(Notification.user_id == self.id, Notification.timestamp < now - retention)
        )
        notification = Notification(name=name, payload_json=json.dumps(data), user=self, timestamp=now)
        db.session.add(notification)
        return notification


@login.user_loader
def load_user(user_id: str) -> User | None:
    user_key, _, rest = user_id.partition(":")
    fingerprint, _, generation = rest.partition(":")
    if not (user_key.isascii() and user_key.isdigit() and len(user_key) < 10):
        return None
    user = db.session.get(User, int(user_key))
    if user is None or not hmac.compare_digest(f"{fingerprint}:{generation}".encode(),
                                               f"{user.password_fingerprint()}:{user.session_generation}".encode()):
        return None
    return user


def stream_job_id(task_id: str, stream: int) -> str:
    return task_id if stream == 0 else f"{task_id}-{stream}"


def task_id_of_job(job_id: str) -> str:
    """The Task a polling job belongs to (task ids are uuid hex, so they hold no '-')."""
    return job_id.partition("-")[0]


class Task(db.Model):
    id: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(128), index=True)
    description: so.Mapped[str | None] = so.mapped_column(sa.String(256))
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id), index=True)
    subscription: so.Mapped[str | None] = so.mapped_column(sa.String(512))
    complete: so.Mapped[bool] = so.mapped_column(default=False)
    started_at: so.Mapped[datetime] = so.mapped_column(TZDateTime, default=utcnow)
    finished_at: so.Mapped[datetime | None] = so.mapped_column(TZDateTime)
    heartbeat_at: so.Mapped[datetime | None] = so.mapped_column(TZDateTime)
    stored_count: so.Mapped[int] = so.mapped_column(default=0)
    # Of stored_count, how many were stored in the quarantined form (see UserItem.quarantine_reason).
    quarantined_count: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    # How many RQ jobs (streams or pullers, one per worker) share this task's subscription.
    streams: so.Mapped[int] = so.mapped_column(default=1, server_default="1")
    # The task's state (app.polling.TaskState), why it is in it, and since when; written only by
    # app.polling.transition. `complete` is True once the state is stopping, finished or failed.
    state: so.Mapped[str] = so.mapped_column(sa.String(16), default="queued", server_default="queued")
    state_reason: so.Mapped[str | None] = so.mapped_column(sa.Text)
    state_changed_at: so.Mapped[datetime | None] = so.mapped_column(TZDateTime, default=utcnow)
    # The user has read the failure; the page stops showing it.
    dismissed: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())

    user: so.Mapped[User] = so.relationship(back_populates="tasks")

    __table_args__ = (
        sa.Index("ix_task_user_id_complete", "user_id", "complete"),
        # At most one running task per user, task kind and subscription, enforced
        # by the database so that concurrent starts cannot both win.
        sa.Index(
            "uq_task_active",
            "user_id",
            "name",
            "subscription",
            unique=True,
            sqlite_where=sa.text("complete = 0"),
            postgresql_where=sa.text("complete = false"),
        ),
    )

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.name}>"

    @so.validates("subscription")
    def _full_subscription_path(self, _key: str, name: str | None) -> str | None:
        return full_subscription_path(name)

    def job_ids(self) -> list[str]:
        """The RQ job ids of this task's streams: the task's own id for the first, then `<id>-<n>`."""
        return [stream_job_id(self.id, stream) for stream in range(self.streams or 1)]


class Notification(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(128))
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id))
    timestamp: so.Mapped[float] = so.mapped_column(default=time.time)
    payload_json: so.Mapped[str] = so.mapped_column(sa.Text)

    user: so.Mapped[User] = so.relationship(back_populates="notifications")

    __table_args__ = (sa.Index("ix_notification_user_id_timestamp", "user_id", "timestamp"),)

    def get_data(self) -> dict[str, Any]:
        return json.loads(self.payload_json)


# What makes two deliveries the same message (see UserItem's unique constraint).
DEDUP_KEY = ("subscription", "message_id", "publish_time")


class UserItem(db.Model):
    """One received Pub/Sub message, stored as it arrived."""

    __tablename__ = "user_item"

    id: so.Mapped[int] = so.mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    # Not a foreign key: PostgreSQL checks one row by row, a query of the user table for each
    # message stored (a quarter of its CPU on a batch of 1 KB messages, bench/foreign_key.py).
    # The writer checks once a batch instead that its task (or user) still exists, under the user's
    # lock, which deleting a user takes before its deletes (app.pubsub.writer.BatchWriter,
    # app.users.delete_user): no message outlives its user.
    user_id: so.Mapped[int] = so.mapped_column()
    subscription: so.Mapped[str] = so.mapped_column(sa.String(512))
    message_id: so.Mapped[str] = so.mapped_column(sa.String(128))
    publish_time: so.Mapped[datetime | None] = so.mapped_column(TZDateTime)
    received_at: so.Mapped[datetime] = so.mapped_column(TZDateTime, default=utcnow)
    # Exactly one of data_text / data_bytes holds the payload: text when it is
    # valid UTF-8, the raw bytes otherwise.
    data_text: so.Mapped[str | None] = so.mapped_column(sa.Text)
    data_bytes: so.Mapped[bytes | None] = so.mapped_column(sa.LargeBinary)
    is_json: so.Mapped[bool] = so.mapped_column(default=False)
    attributes_json: so.Mapped[str] = so.mapped_column(sa.Text, default="{}")
    ordering_key: so.Mapped[str | None] = so.mapped_column(sa.String(1024))
    delivery_attempt: so.Mapped[int | None] = so.mapped_column()
    size: so.Mapped[int] = so.mapped_column(default=0)
    # Set when the message could not be stored as it arrived: a text field the database cannot
    # hold as text (NUL, too long), or a batch write that failed on this message's data. The
    # text columns then hold a readable copy, and raw_message the exact message, byte for byte.
    quarantine_reason: so.Mapped[str | None] = so.mapped_column(sa.String(256))
    raw_message: so.Mapped[bytes | None] = so.mapped_column(sa.LargeBinary)

    user: so.Mapped[User] = so.relationship(
        back_populates="items", primaryjoin="User.id == foreign(UserItem.user_id)")

    __table_args__ = (
        # A redelivery repeats all three. The publish time is part of the key because message ids
        # are only unique per topic while it lives: the emulator numbers them from 1 after every
        # restart, and a deleted and re-created topic may reuse them.
        sa.UniqueConstraint(*DEDUP_KEY, name="uq_user_item_subscription_message_id_publish_time"),
        # The item list and the live poll walk a user's items by id.
        sa.Index("ix_user_item_user_id_id", "user_id", "id"),
        # The list narrowed to one subscription, and the activity chart and purge by time.
        sa.Index("ix_user_item_user_id_subscription_id", "user_id", "subscription", "id"),
        sa.Index("ix_user_item_user_id_received_at", "user_id", "received_at"),
    )

    def __repr__(self) -> str:
        return f"<UserItem {self.id} {self.message_id}>"

    @so.validates("subscription")
    def _full_subscription_path(self, _key: str, name: str | None) -> str | None:
        return full_subscription_path(name)

    @property
    def attributes(self) -> dict[str, str]:
        return json.loads(self.attributes_json or "{}")

    @property
    def data(self) -> bytes:
        if self.data_bytes is not None:
            return self.data_bytes
        return (self.data_text or "").encode("utf-8")

    @property
    def is_binary(self) -> bool:
        return self.data_bytes is not None

    @property
    def is_quarantined(self) -> bool:
        return self.quarantine_reason is not None

    def original_message(self) -> dict[str, Any]:
        """The message exactly as received: from raw_message when quarantined, else from the columns."""
        from app.pubsub.messages import decode_raw_message

        if self.raw_message is not None:
            return decode_raw_message(self.raw_message)
        return {"message_id": self.message_id, "data": self.data, "attributes": self.attributes,
                "ordering_key": self.ordering_key or ""}


# The columns of user_item whose large values PostgreSQL compresses (TOAST, in rows over about 2 kB).
# With its default, pglz, compressing took over a quarter of the server's CPU storing realistic
# payloads (perf); with lz4 the server's CPU a row is 23% less, and the table 3% larger
# (bench/compression.py).
COMPRESSED_COLUMNS = ("data_text", "data_bytes", "attributes_json", "raw_message")


def lz4_available(connection: sa.Connection) -> bool:
    """Whether the database is a PostgreSQL that compresses with lz4 (14 or later, built with lz4)."""
    return connection.dialect.name == "postgresql" and bool(connection.scalar(sa.text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")))


# Built once: it runs for every batch (app.pubsub.writer.BatchWriter also sends it, compiled, with its check).
LOCK_USER_ITEMS = sa.select(sa.func.pg_advisory_xact_lock(sa.bindparam("user_id", type_=sa.Integer)))


def lock_user_items(executor: sa.Connection | so.Session | so.scoped_session, user_id: int) -> None:
    """Take the user's lock on their messages until the transaction ends (PostgreSQL; SQLite has one
    writer at a time anyway). Every batch of the user's messages is written under it, so their ids
    commit in id order, and deleting the user takes it before deleting any row: a batch either
    commits before those deletes, or finds the user gone (app.pubsub.writer.BatchWriter)."""
    bind = executor if isinstance(executor, sa.Connection) else executor.get_bind()
    if bind.dialect.name == "postgresql":
        executor.execute(LOCK_USER_ITEMS, {"user_id": user_id})


def compress_with_lz4(connection: sa.Connection, table: str, columns: tuple[str, ...]) -> bool:
    """Have PostgreSQL compress the columns' new values with lz4, where it can; returns whether it did.

    Only the catalog changes: values already stored keep their compression, and both read back alike.
    Elsewhere (SQLite, a PostgreSQL without lz4) nothing changes.
    """
    if not lz4_available(connection):
        return False
    connection.execute(compression_statement(table, columns, "lz4"))
    return True


def compression_statement(table: str, columns: tuple[str, ...], method: str) -> sa.TextClause:
    """ALTER TABLE setting how PostgreSQL (14 or later) compresses the columns' new values: lz4, pglz or default."""
    return sa.text(f'ALTER TABLE "{table}" '
                   + ", ".join(f"ALTER COLUMN {column} SET COMPRESSION {method}" for column in columns))


@sa.event.listens_for(UserItem.__table__, "after_create")
def _user_item_created(table: sa.Table, connection: sa.Connection, **_kw: Any) -> None:
    # create_all() (tests, benches); a migrated database gets the same from its migration.
    compress_with_lz4(connection, table.name, COMPRESSED_COLUMNS)


SUBSCRIPTION_EXISTING = "existing"
SUBSCRIPTION_TAP = "tap"


class Subscription(db.Model):
    """A subscription a user watches: the short name or the full path they gave, checked when added."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id))
    name: so.Mapped[str] = so.mapped_column(sa.String(512))
    created_at: so.Mapped[datetime] = so.mapped_column(TZDateTime, default=utcnow)
    # Days this user's messages of this subscription are kept (0: forever); None follows
    # MESSAGE_RETENTION_DAYS. Set by an admin on /admin/storage (app.retention).
    retention_days: so.Mapped[int | None] = so.mapped_column()
    # "existing": made elsewhere, polled here (its messages are shared with its other consumers);
    # "tap": created by the app on `topic` for this user alone, deleted with the row.
    kind: so.Mapped[str] = so.mapped_column(sa.String(16), default=SUBSCRIPTION_EXISTING,
                                            server_default=SUBSCRIPTION_EXISTING)
    # The topic's full path and the Pub/Sub filter expression; None when not known.
    topic: so.Mapped[str | None] = so.mapped_column(sa.String(512))
    filter: so.Mapped[str | None] = so.mapped_column(sa.Text)

    user: so.Mapped[User] = so.relationship()

    __table_args__ = (sa.UniqueConstraint("user_id", "name", name="uq_subscription_user_id_name"),)

    @so.validates("name")
    def _full_subscription_path(self, _key: str, name: str) -> str | None:
        return full_subscription_path(name)

    def __repr__(self) -> str:
        return f"<Subscription {self.user_id} {self.name}>"


ALERT_FORMATS = ("json", "slack")


class AlertRule(db.Model):
    """A user's alert: when a newly stored message matches `condition`, a webhook is sent to `url`."""

    __tablename__ = "alert_rule"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id))
    name: so.Mapped[str] = so.mapped_column(sa.String(128))
    # A subscription's full path, or None for every subscription of the user.
    subscription: so.Mapped[str | None] = so.mapped_column(sa.String(512))
    # Pub/Sub's filter language with the data extension (app.filterlang, extensions=True); "" matches all.
    condition: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    url: so.Mapped[str] = so.mapped_column(sa.String(2048))
    format: so.Mapped[str] = so.mapped_column(sa.String(8), default="json")
    # The HMAC key of the signature header; shown to the user once, at creation.
    secret: so.Mapped[str] = so.mapped_column(sa.String(128))
    enabled: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[datetime] = so.mapped_column(TZDateTime, default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(TZDateTime, default=utcnow, onupdate=utcnow)

    user: so.Mapped[User] = so.relationship()

    # The worker loads a user's enabled rules once per batch.
    __table_args__ = (sa.Index("ix_alert_rule_user_id_enabled", "user_id", "enabled"),)

    def __repr__(self) -> str:
        return f"<AlertRule {self.id} {self.name}>"

    @so.validates("subscription")
    def _full_subscription_path(self, _key: str, name: str | None) -> str | None:
        return full_subscription_path(name or None)


ALERT_PENDING = "pending"
ALERT_DELIVERING = "delivering"
ALERT_DELIVERED = "delivered"
ALERT_FAILED = "failed"


class Alert(db.Model):
    """One firing of a rule (or a test, or a digest of rate-limited firings) and its delivery.

    States: pending (waiting for its next attempt at next_attempt_at), delivering (claimed by a
    worker at claimed_at), delivered, failed (gave up after ALERT_RETRY_HOURS). Written by
    app.alerts only.
    """

    __tablename__ = "alert"

    id: so.Mapped[int] = so.mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    rule_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(AlertRule.id, ondelete="CASCADE"))
    # The message that fired it; None for a test or a digest. Not a foreign key: retention may
    # delete the message while its alert's history stays.
    user_item_id: so.Mapped[int | None] = so.mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"))
    kind: so.Mapped[str] = so.mapped_column(sa.String(8), default="message")  # message, test, digest
    # For a digest: how many firings it stands for.
    count: so.Mapped[int] = so.mapped_column(default=1)
    state: so.Mapped[str] = so.mapped_column(sa.String(16), default=ALERT_PENDING)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = so.mapped_column(TZDateTime, default=utcnow)
    # When the message was committed (the start of the delivery latency).
    next_attempt_at: so.Mapped[datetime] = so.mapped_column(TZDateTime, default=utcnow)
    claimed_at: so.Mapped[datetime | None] = so.mapped_column(TZDateTime)
    delivered_at: so.Mapped[datetime | None] = so.mapped_column(TZDateTime)

    rule: so.Mapped[AlertRule] = so.relationship()

    __table_args__ = (
        # A rule's history, newest first, its rate limit (firings in the last minute) and open digest.
        sa.Index("ix_alert_rule_id_created_at", "rule_id", "created_at"),
        # Due and stuck deliveries (the worker's courier and maintenance step), and old history to prune.
        sa.Index("ix_alert_state_next_attempt_at", "state", "next_attempt_at"),
    )

    def __repr__(self) -> str:
        return f"<Alert {self.id} {self.state}>"
