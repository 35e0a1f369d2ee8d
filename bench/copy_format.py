"""The writer's COPY data: PostgreSQL's binary format against the text format it replaced (issue 19).

    .venv/bin/python bench/copy_format.py [--rows 20000] [--repeat 5] [--database-url URL]

Before: the text format, each value escaped with a chain of `str.replace` (backslash first),
kept below as it was in app/pubsub/writer.py. After: writer.copy_data, the binary format, which
has no escapes and sends integers and times as they are held. For the padded corpus (1 KB Cloud
Build notifications, bench/ingest.py's default) and the realistic one (bench/corpus.py), it times
this process formatting --rows rows, 1,000 per batch, and, with --database-url, the PostgreSQL
backend's CPU to COPY them into user_item on a scratch database (bench/stack.py FreshDatabase,
dropped at exit), one batch a transaction. Formats alternate within each of --repeat rounds;
it prints medians and the binary/text ratios. Both formats are first COPYed and read back,
and must store the same rows. Not run in CI.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from index_cost import parse_args, rows_for, scratch_database  # noqa: E402
from stack import cpu_seconds, load_average  # noqa: E402

from app.pubsub import writer  # noqa: E402
from app.pubsub.writer import COLUMNS  # noqa: E402

BATCH = 1000


def _text(value: str | None) -> str:
    if value is None:
        return "\\N"
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value:
        value = value.replace("\t", "\\t")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if "\r" in value:
        value = value.replace("\r", "\\r")
    return value


def _number(value: int | None) -> str:
    return "\\N" if value is None else str(value)


def _time(value: datetime | None) -> str:
    return "\\N" if value is None else value.isoformat()


def _bytes(value: bytes | None) -> str:
    return "\\N" if value is None else "\\\\x" + value.hex()


def text_copy_data(rows: list[dict]) -> bytes:
    """The rows in COPY's text format, as the writer formatted them before (values the rows share, once)."""
    lines = []
    subscription, subscription_text = None, ""
    received, received_text = None, ""
    for row in rows:
        if row["subscription"] is not subscription:
            subscription, subscription_text = row["subscription"], _text(row["subscription"])
        if row["received_at"] is not received:
            received, received_text = row["received_at"], _time(row["received_at"])
        lines.append(
            f"{_number(row['user_id'])}\t{subscription_text}\t{_text(row['message_id'])}\t"
            f"{_time(row['publish_time'])}\t{received_text}\t{_text(row['data_text'])}\t"
            f"{_bytes(row['data_bytes'])}\t{'t' if row['is_json'] else 'f'}\t{_text(row['attributes_json'])}\t"
            f"{_text(row['ordering_key'])}\t{_number(row['delivery_attempt'])}\t{_number(row['size'])}\n"
        )
    return "".join(lines).encode()


FORMATS = {"text": (text_copy_data, ""), "binary": (writer.copy_data, " (FORMAT binary)")}


def format_all(rows: list[dict], format_batch) -> tuple[float, list[bytes]]:
    started = time.perf_counter()
    batches = [format_batch(rows[start : start + BATCH]) for start in range(0, len(rows), BATCH)]
    return time.perf_counter() - started, batches


def copy_all(engine: sa.Engine, batches: list[bytes], options: str) -> float:
    """The backend's CPU seconds to COPY the batches into an emptied user_item, one transaction each."""
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE user_item"))
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
        before = cpu_seconds(backend)
        for batch in batches:
            cursor.copy_expert(f"COPY user_item ({', '.join(COLUMNS)}) FROM STDIN{options}", io.BytesIO(batch),
                               size=1 << 20)
            raw.commit()
        return cpu_seconds(backend) - before
    finally:
        raw.close()


def stored(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT {', '.join(COLUMNS)} FROM user_item ORDER BY id")).all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, repeat=5)
    with scratch_database(args.database_url, "copy-format") as (engine, user_id):
        corpora = {corpus: rows_for(user_id, args.rows, 0, corpus=corpus) for corpus in ("padded", "real")}
        for corpus, rows in corpora.items():
            sample = rows[:BATCH]
            copy_all(engine, [text_copy_data(sample)], "")
            as_text = stored(engine)
            copy_all(engine, [writer.copy_data(sample)], " (FORMAT binary)")
            assert stored(engine) == as_text, f"{corpus}: the formats store different rows"
        print(f"{args.rows:,} rows per corpus, {BATCH:,} per batch, {args.repeat} rounds; load {load_average()}",
              flush=True)
        results = {(corpus, name): [] for corpus in corpora for name in FORMATS}
        for run in range(args.repeat):
            for corpus, rows in corpora.items():
                for name, (format_batch, options) in FORMATS.items():
                    formatting, batches = format_all(rows, format_batch)
                    server = copy_all(engine, batches, options)
                    results[corpus, name].append((formatting, server, sum(len(batch) for batch in batches)))
                    print(f"  round {run + 1} {corpus:6s} {name:6s} formatting {formatting * 1e6 / len(rows):5.2f} "
                          f"µs/row, PostgreSQL {server * 1e6 / len(rows):5.1f} µs/row CPU; load {load_average()}",
                          flush=True)
        print("\nmedians:")
        for corpus, rows in corpora.items():
            medians = {name: [statistics.median(result[field] for result in results[corpus, name])
                              for field in range(3)] for name in FORMATS}
            for name, (formatting, server, size) in medians.items():
                print(f"  {corpus:6s} {name:6s} formatting {formatting * 1e6 / len(rows):5.2f} µs/row, PostgreSQL "
                      f"{server * 1e6 / len(rows):5.1f} µs/row CPU, {size / 1e6:5.1f} MB sent")
            (text_format, text_server, text_size), (binary_format, binary_server, binary_size) = medians.values()
            print(f"  {corpus:6s} binary/text: formatting {binary_format / text_format:.2f}, PostgreSQL CPU "
                  f"{binary_server / text_server:.2f}, bytes {binary_size / text_size:.2f}")
        print(f"load at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
