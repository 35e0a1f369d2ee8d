"""Fast bulk inserts of stored messages for the volume tests (search, export, purge, charts)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

from app.extensions import db
from app.models import UserItem
from app.names import canonical_subscription
from app.pubsub.messages import build_row

CHUNK = 5000


def item_row(user_id: int, data: bytes | str, attributes: dict | None = None, *, subscription: str = "monitor-sub",
             publish_time: datetime | None = None, received_at: datetime | None = None, ordering_key: str = "",
             message_id: str | None = None, delivery_attempt: int | None = None) -> dict:
    """A row as the subscriber writes it (the same conversion, app.pubsub.messages.build_row)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    # Stored by its full path in the tests' project, as the subscriber stores it.
    subscription = canonical_subscription(subscription, "test-project")
    return build_row(user_id=user_id, subscription=subscription, message_id=message_id or uuid.uuid4().hex,
                     data=raw, attributes=attributes or {}, publish_time=publish_time or datetime.now(UTC),
                     ordering_key=ordering_key, delivery_attempt=delivery_attempt, size=len(raw),
                     received_at=received_at or datetime.now(UTC))


def insert_rows(app, rows: Iterable[dict]) -> int:
    """Insert rows in executemany chunks of 5,000; returns how many."""
    inserted = 0
    with app.app_context():
        chunk: list[dict] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= CHUNK:
                db.session.execute(sa.insert(UserItem), chunk)
                inserted += len(chunk)
                chunk = []
        if chunk:
            db.session.execute(sa.insert(UserItem), chunk)
            inserted += len(chunk)
        db.session.commit()
    return inserted
