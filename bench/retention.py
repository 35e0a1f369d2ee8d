"""Poll latency while retention deletes a million old messages: 100 watching pages, with and without the deletion.

    .venv/bin/python bench/retention.py
    .venv/bin/python bench/retention.py --old 1000000 --recent 20000 --clients 100 --baseline 60

It seeds a fresh PostgreSQL database (schema through the migrations) with 10 users, --old messages
received 60 days ago and --recent ones received two days ago (COPY, users taking turns), then
VACUUM ANALYZE. gunicorn runs as the Procfile does, and --clients simulated pages behave as
static/main.js does (bench/web.py's Page: /notifications and /useritems?after= every 5 s, an older
page now and then), while a writer stores 2 new messages per user per second.

Phases: a baseline of --baseline seconds; then a real worker (the Procfile's `rq worker` with
app.worker.PollingWorker) starts, and its maintenance step runs the retention pass
(MESSAGE_RETENTION_DAYS=30) until the pass's record in Redis says it finished; then a second
baseline as long as the deletion (up to --max-after), so that a drift in the machine's load shows.
It prints p50/p95/p99 of the polls (/useritems?after=) as the pages saw them in each phase, with
the median of the p99s of 30-s windows (phases of different lengths compare fairly), the ratio of
the p99 during the deletion to each baseline's (target: at most 2x and under 100 ms), and the
deletion's rate.
Not run in CI.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
import uuid
from collections import defaultdict

import redis
import sqlalchemy as sa
from stack import (
    FreshDatabase,
    app_env,
    load_average,
    page_bench_parser,
    sign_in,
    start_page_bench,
    start_procfile_process,
    start_web,
    stop,
)
from web import PASSWORD, SUBSCRIPTION, USERS, LiveWriter, Page, copy_lines, create_watchers, percentile

POLL = "/useritems?after (poll)"
LABELS = [POLL, "/notifications", "/useritems?before (scroll)"]
RETENTION_KEY = "pubsub-monitor:gcpubsub-tasks:retention:last"
WINDOW = 30.0


# Stored by the full path, as the app stores it (app.names), so that each page opens on its messages.
FULL_SUBSCRIPTION = f"projects/bench-project/subscriptions/{SUBSCRIPTION}"


def lines(user_ids: list[int], count: int, received_at: str, start: int):
    """COPY lines of ~400-byte JSON messages received at `received_at`, users taking turns."""
    for index in range(start, start + count):
        data = json.dumps({"id": str(uuid.UUID(int=random.getrandbits(128), version=4)), "status": "SUCCESS",
                           "projectId": "bench-project", "sequence": index,
                           "logUrl": f"https://console.cloud.google.com/cloud-build/builds/{index}?project=bench",
                           "steps": [{"name": "gcr.io/cloud-builders/docker", "args": ["build", "-t", "app", "."]}]},
                          separators=(",", ":"))
        yield (f"{user_ids[index % len(user_ids)]}\t{FULL_SUBSCRIPTION}\t{index}\t{received_at}\t{received_at}\t"
               f"{data}\t\\N\tt\t{{}}\t\\N\t\\N\t{len(data)}\n")


def seed(database: FreshDatabase, old: int, recent: int) -> tuple[sa.Engine, list[str], list[int]]:
    engine = sa.create_engine(database.url, pool_size=2)
    with engine.begin() as connection:
        names, user_ids = create_watchers(connection)
    started = time.monotonic()
    old_at = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(time.time() - 60 * 86400))
    recent_at = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(time.time() - 2 * 86400))
    copy_lines(engine, lines(user_ids, old, old_at, 0))
    copy_lines(engine, lines(user_ids, recent, recent_at, old))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))
        size = connection.execute(sa.text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar()
    print(f"seeded {old:,} messages 60 days old and {recent:,} 2 days old across {USERS} users in "
          f"{time.monotonic() - started:.0f} s; database {size}; VACUUM ANALYZE done", flush=True)
    return engine, names, user_ids


class TimedPage(Page):
    """bench/web.py's page, keeping when each request ended, so that phases can be told apart."""

    def get(self, label: str, path: str, **params):
        started = time.perf_counter()
        try:
            response = self.session.get(self.base_url + path, params=params, timeout=30)
        except Exception:  # noqa: BLE001 - a bench counts every failure alike
            self.errors += 1
            return None
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            self.errors += 1
            return None
        with self.lock:
            self.samples[label].append((time.monotonic(), elapsed))
        return response


def drop(database: FreshDatabase, timeout: float = 300) -> None:
    """Drop the database once autovacuum, busy after a million deletes, has let go of it (only a
    superuser may end an autovacuum worker)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            database.drop()
            return
        except sa.exc.DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(5)


def figures(samples: dict, label: str, start: float, end: float) -> dict:
    """Percentiles over the phase, and the median of the p99s of its WINDOW-second windows (a long phase
    on a machine whose load comes and goes meets more bad moments than a short one; windows of one
    length compare phases of different lengths fairly)."""
    timed = [(at, elapsed) for at, elapsed in samples[label] if start <= at < end]
    values = [elapsed for _, elapsed in timed]
    windows = []
    window_start = start
    while window_start + WINDOW <= end:
        window = [elapsed for at, elapsed in timed if window_start <= at < window_start + WINDOW]
        if window:
            windows.append(percentile(window, 0.99))
        window_start += WINDOW
    if not windows:  # a phase shorter than a window is one window
        windows = [percentile(values, 0.99)]
    return {"n": len(values), "p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99), "window_p99": statistics.median(windows) if windows else float("nan"),
            "windows": len(windows)}


def main(argv: list[str] | None = None) -> int:
    parser = page_bench_parser(__doc__, warmup_help="seconds of page loads before measuring")
    parser.add_argument("--old", type=int, default=1_000_000, help="messages past retention, to delete")
    parser.add_argument("--recent", type=int, default=20_000, help="messages within retention, to keep")
    parser.add_argument("--baseline", type=float, default=60, help="seconds of the baseline before the deletion")
    parser.add_argument("--max-after", type=float, default=300,
                        help="the baseline after the deletion lasts as long as the deletion, up to this")
    args = parser.parse_args(argv)

    workdir, redis_server = start_page_bench("retention", f"{args.old:,} old messages, {args.clients} pages")
    database = FreshDatabase(args.database_url)
    processes = []
    writer = None
    try:
        engine, names, user_ids = seed(database, args.old, args.recent)
        env = app_env(database.url, redis_server.url, SUBSCRIPTION_NAME=SUBSCRIPTION, MESSAGE_RETENTION_DAYS="30",
                      RETENTION_INTERVAL_SECONDS="3600")
        web, base_url = start_web(env, workdir / "web.log")
        processes.append(web)
        cookies = {name: sign_in(base_url, name, PASSWORD)[0].cookies for name in names}
        samples: dict = defaultdict(list)
        lock = threading.Lock()
        writer = LiveWriter(engine, user_ids, args.old + args.recent)
        writer.start()
        pages = [TimedPage(base_url, names[number % USERS], cookies[names[number % USERS]], float("inf"), samples,
                           lock, 0.0) for number in range(args.clients)]
        for page in pages:
            page.start()
        time.sleep(args.warmup)

        before_start = time.monotonic()
        time.sleep(args.baseline)
        deletion_start = time.monotonic()
        worker = start_procfile_process("worker", env, workdir / "worker.log")
        processes.append(worker)
        connection = redis.Redis.from_url(redis_server.url)
        record = None
        while True:
            raw = connection.get(RETENTION_KEY)
            record = json.loads(raw) if raw else None
            if record and record["finished_at"]:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited; see {workdir / 'worker.log'}")
            time.sleep(0.5)
        deletion_end = time.monotonic()
        # As long as the deletion took (within reason), so that both baselines see the machine alike.
        time.sleep(max(args.baseline, min(deletion_end - deletion_start, args.max_after)))
        after_end = time.monotonic()
        for page in pages:
            page.until = 0
        for page in pages:
            page.join(40)

        with engine.connect() as db_connection:
            left = db_connection.execute(sa.text(
                "SELECT count(*) FROM user_item WHERE received_at < now() - interval '30 days'")).scalar()
            kept = db_connection.execute(sa.text("SELECT count(*) FROM user_item")).scalar()
        seconds = deletion_end - deletion_start
        print(f"\nretention pass: {record['deleted']:,} messages deleted in {seconds:.1f} s from the worker's start "
              f"({record['deleted'] / seconds:,.0f} rows/s, {record['slices']} slices); {left} past retention left, "
              f"{kept:,} kept; {sum(page.errors for page in pages)} request errors; load {load_average()}")
        phases = {"before": (before_start, deletion_start), "during deletion": (deletion_start, deletion_end),
                  "after": (deletion_end, after_end)}
        results = {}
        for label in LABELS:
            print(f"  {label}")
            for phase, (start, end) in phases.items():
                result = figures(samples, label, start, end)
                results[(label, phase)] = result
                print(f"    {phase:16s} n={result['n']:5d}  p50 {result['p50'] * 1000:6.1f} ms  "
                      f"p95 {result['p95'] * 1000:6.1f} ms  p99 {result['p99'] * 1000:6.1f} ms  "
                      f"median p99 of {result['windows']} {WINDOW:.0f}-s windows {result['window_p99'] * 1000:6.1f} ms")
        for key, words in (("p99", "p99 over the phase"), ("window_p99", f"median of {WINDOW:.0f}-s windows' p99")):
            during = results[(POLL, "during deletion")][key]
            before, after = results[(POLL, "before")][key], results[(POLL, "after")][key]
            print(f"\npoll {words}: during the deletion {during * 1000:.1f} ms, without {before * 1000:.1f} ms "
                  f"before and {after * 1000:.1f} ms after: {during / before:.2f}x and {during / after:.2f}x "
                  f"(target: at most 2x and under 100 ms) -> "
                  f"{'met' if during <= 2 * min(before, after) and during < 0.1 else 'NOT met'}")
        p50 = {phase: results[(POLL, phase)]["p50"] * 1000 for phase in phases}
        print(f"poll p50 during {p50['during deletion']:.1f} ms, before {p50['before']:.1f} ms, "
              f"after {p50['after']:.1f} ms")
        return 0
    finally:
        if writer is not None:
            writer.stopping.set()
        for process in processes:
            stop(process)
        drop(database)
        redis_server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
