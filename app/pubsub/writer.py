"""The batching writer shared by both sources: one idempotent transaction per batch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.models import Task, UserItem


class BatchWriter:
    """Stores rows for one user's task; a redelivered (subscription, message_id) is stored once."""

    def __init__(self, engine: sa.Engine, user_id: int, task_id: str | None = None):
        self.engine = engine
        self.user_id = user_id
        self.task_id = task_id
        table = UserItem.__table__
        dialect = engine.dialect.name
        if dialect == "postgresql":
            insert = postgresql.insert(table)
        elif dialect == "sqlite":
            insert = sqlite.insert(table)
        else:
            raise RuntimeError(f"unsupported database {dialect!r}: use PostgreSQL or SQLite")
        self.is_postgresql = dialect == "postgresql"
        self.insert = insert.on_conflict_do_nothing(index_elements=["subscription", "message_id"]).returning(
            table.c.id
        )

    def write(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert the rows in one transaction and return how many were new. Raises SQLAlchemyError on failure."""
        if not rows:
            return 0
        with self.engine.begin() as connection:
            if self.is_postgresql:
                # Serialise a user's batches so their item ids commit in id order: the page's
                # `after=<id>` cursor must never miss a lower id that commits late.
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(self.user_id)))
            inserted = len(connection.execute(self.insert, list(rows)).all())
            if self.task_id is not None:
                connection.execute(
                    sa.update(Task)
                    .where(Task.id == self.task_id)
                    .values(stored_count=Task.stored_count + inserted, heartbeat_at=datetime.now(UTC))
                )
        return inserted
