"""What a foreign key on user_item.user_id costs the ingest path on PostgreSQL (issue 19).

    .venv/bin/python bench/foreign_key.py [--rows 20000] [--repeat 5] [--database-url URL]

PostgreSQL checks a foreign key row by row: for each row stored, a query of the user table. The
app has no such key (app.models.UserItem.user_id); its writer checks once a batch that the user
exists. On a scratch database made by the migrations (bench/stack.py FreshDatabase, dropped at
exit), this stores --rows messages of the padded corpus (1 KB Cloud Build notifications, as
bench/ingest.py's default) through the app's own BatchWriter, 1,000 per batch, into an emptied
user_item, alternating between the key put back (as the schema had it before migration
f2c8e5a7b931) and the app's schema; both run the writer's own check, one query a batch. It
prints, per round and as medians, the wall time and the PostgreSQL backend's CPU per row, and
the ratio of the medians. Not run in CI.
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

CONSTRAINT = "fk_user_item_user_id_user"
SETTINGS = ("foreign key", "checked once a batch")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, repeat=5)
    with scratch_database(args.database_url, "foreign-key") as (engine, user_id):
        results: dict[str, list[tuple[float, float]]] = {setting: [] for setting in SETTINGS}
        print(f"{args.rows:,} rows of the padded corpus per round and setting, 1,000 per batch, "
              f"{args.repeat} rounds; load {load_average()}", flush=True)
        for run in range(args.repeat):
            for setting in SETTINGS:
                rows = rows_for(user_id, args.rows, run, corpus="padded")
                keyed = setting == "foreign key"
                with engine.begin() as connection:
                    connection.execute(sa.text("TRUNCATE user_item"))
                    if keyed:
                        connection.execute(sa.text(f'ALTER TABLE user_item ADD CONSTRAINT {CONSTRAINT} '
                                                   f'FOREIGN KEY (user_id) REFERENCES "user" (id)'))
                try:
                    results[setting].append(store(engine, user_id, rows))
                finally:
                    if keyed:
                        with engine.begin() as connection:
                            connection.execute(sa.text(f"ALTER TABLE user_item DROP CONSTRAINT {CONSTRAINT}"))
                wall, cpu = results[setting][-1]
                print(f"  round {run + 1} {setting:20s} {wall * 1e6 / args.rows:6.1f} µs/row wall, PostgreSQL "
                      f"{cpu * 1e6 / args.rows:6.1f} µs/row CPU; load {load_average()}", flush=True)
        print("\nmedians:")
        medians = {setting: [statistics.median(result[field] for result in results[setting]) for field in range(2)]
                   for setting in SETTINGS}
        for setting, (wall, cpu) in medians.items():
            print(f"  {setting:20s} {wall * 1e6 / args.rows:6.1f} µs/row wall, PostgreSQL "
                  f"{cpu * 1e6 / args.rows:6.1f} µs/row CPU")
        (wall_key, cpu_key), (wall_app, cpu_app) = medians["foreign key"], medians["checked once a batch"]
        print(f"  checked once a batch / foreign key: wall {wall_app / wall_key:.2f}, "
              f"PostgreSQL CPU {cpu_app / cpu_key:.2f}")
        print(f"load at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
