"""What each index on user_item costs the ingest path on PostgreSQL (issue 19).

    .venv/bin/python bench/index_cost.py [--rows 20000] [--repeat 3] [--database-url URL]

On a scratch database made by the migrations (bench/stack.py FreshDatabase, dropped at exit),
it stores --rows messages of the realistic corpus (bench/corpus.py) through the app's own
BatchWriter (COPY into the stage table, INSERT ... ON CONFLICT DO NOTHING), 1,000 per batch:
with every index, then with each secondary index dropped in turn (and created again), then with
none of them. The primary key and the dedup unique constraint stay: ON CONFLICT needs the one,
and the ids come from the other. It prints the median wall and PostgreSQL backend CPU per row
of each setting and what each index adds. Not run in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from corpus import padded_corpus, real_corpus  # noqa: E402
from stack import FreshDatabase, cpu_seconds, load_average  # noqa: E402

from app.models import UserItem  # noqa: E402
from app.pubsub.messages import build_row  # noqa: E402
from app.pubsub.writer import BatchWriter  # noqa: E402

SECONDARY = [index for index in UserItem.__table__.indexes if not index.unique]


def rows_for(user_id: int, count: int, run: int, corpus: str = "real") -> list[dict]:
    """Rows of the realistic corpus, or of the padded one (1 KB Cloud Build notifications), as the poller makes them."""
    messages = real_corpus(count, "bench-project") if corpus == "real" else padded_corpus(count, "bench-project", 1000)
    now = datetime.now(UTC)
    return [build_row(user_id=user_id, subscription="projects/bench-project/subscriptions/index-cost",
                      message_id=f"{run}-{index}", data=message.data, attributes=message.attributes,
                      publish_time=now, ordering_key="", delivery_attempt=None, size=len(message.data),
                      received_at=now)
            for index, message in enumerate(messages)]


def store(engine: sa.Engine, user_id: int, rows: list[dict]) -> tuple[float, float]:
    """(wall seconds, PostgreSQL backend CPU seconds) to store the rows 1,000 per transaction."""
    writer = BatchWriter(engine, user_id)
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))  # the pool's one connection is the writer's
        backend = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    cpu_before, started = cpu_seconds(backend), time.perf_counter()
    for start in range(0, len(rows), 1000):
        assert writer.write(rows[start:start + 1000]) == len(rows[start:start + 1000])
    return time.perf_counter() - started, cpu_seconds(backend) - cpu_before


def parse_args(argv: list[str] | None, description: str, repeat: int) -> argparse.Namespace:
    """The options this bench and bench/compression.py share."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--database-url", help="PostgreSQL server URL; a scratch database is created on it")
    return parser.parse_args(argv)


@contextlib.contextmanager
def scratch_database(server_url: str | None, username: str) -> Iterator[tuple[sa.Engine, int]]:
    """A one-connection engine on a migrated scratch database, and a user's id; the database is dropped after."""
    database = FreshDatabase(server_url)
    engine = sa.create_engine(database.url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as connection:
            user_id = connection.execute(sa.text(
                "INSERT INTO \"user\" (username, email, is_admin) VALUES (:name, :email, false) RETURNING id"),
                {"name": username, "email": f"{username}@example.com"}).scalar()
        yield engine, user_id
    finally:
        engine.dispose()
        database.drop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, repeat=3)
    with scratch_database(args.database_url, "index-cost") as (engine, user_id):
        settings = [("every index", [])] + [(f"without {index.name}", [index]) for index in SECONDARY] + [
            ("without the three", SECONDARY)]
        results: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in settings}
        print(f"{args.rows:,} rows of the realistic corpus per setting, 1,000 per batch, {args.repeat} rounds; "
              f"load {load_average()}", flush=True)
        for run in range(args.repeat):
            for label, dropped in settings:
                rows = rows_for(user_id, args.rows, run)
                with engine.begin() as connection:
                    connection.execute(sa.text("TRUNCATE user_item"))
                    for index in dropped:
                        connection.execute(sa.text(f"DROP INDEX {index.name}"))
                try:
                    results[label].append(store(engine, user_id, rows))
                finally:
                    with engine.begin() as connection:
                        for index in dropped:
                            index.create(connection)
                wall, cpu = results[label][-1]
                print(f"  round {run + 1} {label:48s} {wall * 1e6 / args.rows:6.1f} µs/row wall, PostgreSQL "
                      f"{cpu * 1e6 / args.rows:6.1f} µs/row CPU; load {load_average()}", flush=True)
        print("\nmedians:")
        base_wall = statistics.median(wall for wall, _ in results["every index"])
        base_cpu = statistics.median(cpu for _, cpu in results["every index"])
        for label, _ in settings:
            wall = statistics.median(wall for wall, _ in results[label])
            cpu = statistics.median(cpu for _, cpu in results[label])
            saved_wall, saved_cpu = (base_wall - wall) * 1e6 / args.rows, (base_cpu - cpu) * 1e6 / args.rows
            print(f"  {label:50s} {wall * 1e6 / args.rows:6.1f} µs/row wall ({saved_wall:+6.1f} saved), "
                  f"PostgreSQL {cpu * 1e6 / args.rows:6.1f} µs/row CPU ({saved_cpu:+6.1f} saved)")
        print(f"load at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
