"""What PostgreSQL's compression of large payloads costs the ingest path: pglz against lz4 (issue 19).

    .venv/bin/python bench/compression.py [--rows 20000] [--repeat 5] [--database-url URL]

On a scratch database made by the migrations (bench/stack.py FreshDatabase, dropped at exit), it
stores --rows messages of the realistic corpus (bench/corpus.py; about a quarter of them are over
the 2 kB beyond which PostgreSQL compresses) through the app's own BatchWriter, 1,000 per batch,
into an emptied user_item, alternating the payload columns' compression between pglz (PostgreSQL's
default) and lz4 (what the app sets: app.models.compress_with_lz4). It prints, per round and as
medians, the wall time and the PostgreSQL backend's CPU per row, the table's size, and the lz4/pglz
ratio of the medians. Not run in CI.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from index_cost import parse_args, rows_for, scratch_database, store  # noqa: E402
from stack import load_average  # noqa: E402

from app.models import COMPRESSED_COLUMNS, compression_statement, lz4_available  # noqa: E402

METHODS = ("pglz", "lz4")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, repeat=5)
    with scratch_database(args.database_url, "compression") as (engine, user_id):
        with engine.connect() as connection:
            if not lz4_available(connection):
                print("this PostgreSQL has no lz4 (14 or later, built with lz4): nothing to compare")
                return 1
        results: dict[str, list[tuple[float, float, int]]] = {method: [] for method in METHODS}
        print(f"{args.rows:,} rows of the realistic corpus per round and method, 1,000 per batch, "
              f"{args.repeat} rounds; load {load_average()}", flush=True)
        for run in range(args.repeat):
            for method in METHODS:
                rows = rows_for(user_id, args.rows, run)
                with engine.begin() as connection:
                    connection.execute(sa.text("TRUNCATE user_item"))
                    connection.execute(compression_statement("user_item", COMPRESSED_COLUMNS, method))
                wall, cpu = store(engine, user_id, rows)
                with engine.connect() as connection:
                    size = connection.scalar(sa.text("SELECT pg_total_relation_size('user_item')"))
                    used = connection.execute(sa.text(
                        "SELECT pg_column_compression(data_text), count(*) FROM user_item "
                        "WHERE pg_column_compression(data_text) IS NOT NULL GROUP BY 1")).all()
                assert [name for name, _ in used] == [method], used  # each round compressed as it says
                results[method].append((wall, cpu, size))
                print(f"  round {run + 1} {method:5s} {wall * 1e6 / args.rows:6.1f} µs/row wall, PostgreSQL "
                      f"{cpu * 1e6 / args.rows:6.1f} µs/row CPU, table {size / 1e6:5.1f} MB "
                      f"({used[0][1]:,} rows compressed); load {load_average()}", flush=True)
        print("\nmedians:")
        medians = {method: [statistics.median(result[field] for result in results[method]) for field in range(3)]
                   for method in METHODS}
        for method, (wall, cpu, size) in medians.items():
            print(f"  {method:5s} {wall * 1e6 / args.rows:6.1f} µs/row wall, PostgreSQL {cpu * 1e6 / args.rows:6.1f} "
                  f"µs/row CPU, table {size / 1e6:5.1f} MB")
        (wall_pglz, cpu_pglz, size_pglz), (wall_lz4, cpu_lz4, size_lz4) = medians["pglz"], medians["lz4"]
        print(f"  lz4/pglz: wall {wall_lz4 / wall_pglz:.2f}, PostgreSQL CPU {cpu_lz4 / cpu_pglz:.2f}, "
              f"size {size_lz4 / size_pglz:.2f}")
        print(f"load at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
