"""The page's `/useritems?after=` cursor while several writers commit for one user at once.

The page asks for items with an id above the newest it has shown. That is only safe if a
user's ids become visible in id order: a batch that took lower ids but commits after a
batch with higher ids would be skipped for good. The writer serialises a user's batches
with an advisory lock on PostgreSQL (SQLite has a single writer anyway).
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime

import sqlalchemy as sa

from app.extensions import db
from app.models import UserItem
from app.pubsub.messages import build_row
from app.pubsub.writer import BatchWriter
from tests.conftest import create_user

WRITERS = 3
BATCHES_PER_WRITER = 40
ROWS_PER_BATCH = 20
# Up to this long between a batch taking its ids and its commit: the window in which another
# writer's later ids could become visible first. Real commits are slower under load.
COMMIT_DELAY_SECONDS = 0.02


def batch_rows(user_id: int, writer: int, batch: int) -> list[dict]:
    now = datetime.now(UTC)
    rows = []
    for number in range(ROWS_PER_BATCH):
        data = json.dumps({"writer": writer, "batch": batch, "number": number}).encode()
        rows.append(build_row(
            user_id=user_id, subscription=f"stream-{writer}", message_id=f"{writer}-{batch}-{number}",
            data=data, attributes={}, publish_time=now, ordering_key="", delivery_attempt=None,
            size=len(data), received_at=now,
        ))
    return rows


class Writer(threading.Thread):
    """One job's BatchWriter on an engine of its own, as a worker process has."""

    def __init__(self, database_url: str, user_id: int, number: int, start_together: threading.Barrier):
        super().__init__(daemon=True)
        self.engine = sa.create_engine(database_url)
        self.user_id, self.number, self.start_together = user_id, number, start_together
        self.error: BaseException | None = None
        randomness = random.Random(number)
        sa.event.listen(self.engine, "commit",
                        lambda _connection: time.sleep(randomness.uniform(0, COMMIT_DELAY_SECONDS)))

    def run(self):
        try:
            writer = BatchWriter(self.engine, self.user_id)
            self.start_together.wait(30)
            for batch in range(BATCHES_PER_WRITER):
                assert writer.write(batch_rows(self.user_id, self.number, batch)) == ROWS_PER_BATCH
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            self.error = error
        finally:
            self.engine.dispose()


def follow_cursor(client, after: int) -> tuple[list[int], int]:
    """What the page does on each tick: ask for items after its newest, page after page while `more`."""
    seen = []
    while True:
        reply = client.get("/useritems", query_string={"after": after}).get_json()
        ids = reply["ids"]
        assert ids == sorted(ids) and all(item_id > after for item_id in ids), (after, ids)
        seen.extend(ids)
        if ids:
            after = ids[-1]
        if not reply["more"]:
            return seen, after


def test_cursor_sees_every_id_in_order_while_writers_commit_at_once(app, require_postgres, client, auth):
    user_id = create_user(app, "alice")
    auth.login()
    start_together = threading.Barrier(WRITERS)
    writers = [Writer(app.config["SQLALCHEMY_DATABASE_URI"], user_id, number, start_together)
               for number in range(WRITERS)]
    for writer in writers:
        writer.start()
    seen, cursor = [], 0
    while any(writer.is_alive() for writer in writers):
        ids, cursor = follow_cursor(client, cursor)
        seen.extend(ids)
    ids, cursor = follow_cursor(client, cursor)  # what the last commits added
    seen.extend(ids)
    for writer in writers:
        writer.join(30)
        assert writer.error is None, writer.error
    with app.app_context():
        stored = db.session.scalars(sa.select(UserItem.id).where(UserItem.user_id == user_id)
                                    .order_by(UserItem.id)).all()
    assert len(stored) == WRITERS * BATCHES_PER_WRITER * ROWS_PER_BATCH
    skipped = sorted(set(stored) - set(seen))
    assert not skipped, f"the cursor skipped {len(skipped)} of {len(stored)} ids, e.g. {skipped[:10]}"
    assert seen == stored  # each once, in id order
