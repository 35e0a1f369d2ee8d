"""Web latency with a million stored messages: 100 watching pages against 1,000,000 items and against 1,000.

    .venv/bin/python bench/web.py
    .venv/bin/python bench/web.py --items 1000000 --small-items 1000 --clients 100 --seconds 40 --rounds 5

It seeds two fresh PostgreSQL databases (schema through the migrations): 10 users with
1,000,000 UserItems between them (COPY, ids interleaved across users as concurrent
subscriptions would store them) and, for comparison in the same run, 10 users with
1,000. Each gets 500 notifications per user and ANALYZE. gunicorn runs on each as the
Procfile does (`gunicorn gcpubsub:app`, gunicorn.conf.py: 2 workers x 4 threads).

Each simulated client opens /user/<name> once, then every 5 s polls /notifications?since=
and /useritems?after= as static/main.js does (following `more`), and on one tick in
three fetches an older page (/useritems?before=, infinite scroll; back to the top at
the end). Meanwhile a writer stores 2 new messages per user per second and a
task_progress notification per user every 5 s, so polls return real rows.

The databases are measured in alternation (small, large, large, small, ...) for
--rounds rounds; in each phase the first --warmup seconds (every page opening at
once) count only for the page-load figure. Per endpoint it prints p50/p95/p99 as the client saw them and p99 as
gunicorn timed them (access log %(D)s), then the medians over the rounds and the p99
ratio large/small, which is the headline figure (target: p99 < 50 ms at 1,000,000 items
and ratio <= 1.5). Not run in CI.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import re
import statistics
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import requests
import sqlalchemy as sa
from stack import (
    CpuMeter,
    FreshDatabase,
    app_env,
    children,
    load_average,
    page_bench_parser,
    sign_in,
    start_page_bench,
    start_web,
    stop,
)

USERS = 10
PASSWORD = "bench-password-1"
NOTIFICATIONS_PER_USER = 500
POLL_SECONDS = 5.0
SCROLL_EVERY = 3  # ticks
SUBSCRIPTION = "bench-sub"
# Stored as the app stores every subscription: by its full path (app_env's project).
SUBSCRIPTION_PATH = f"projects/bench-project/subscriptions/{SUBSCRIPTION}"
ACCESS_FORMAT = "BENCH %(U)s %(D)s %(s)s q=%(q)s"
PAGE_ATTRIBUTE = re.compile(r'data-(newest-id|oldest-id|notifications-since)="([^"]*)"')
ENDPOINTS = ["/notifications", "/useritems?after (poll)", "/useritems?before (scroll)", "/user/<name> (page)"]


# --- seeding -------------------------------------------------------------------------------------


class CopySource(io.TextIOBase):
    """A file-like object for COPY that produces its lines on demand, so a million rows never sit in memory."""

    def __init__(self, lines):
        self.lines = lines
        self.buffer = ""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> str:
        while size < 0 or len(self.buffer) < size:
            more = "".join(itertools.islice(self.lines, 2000))
            if not more:
                break
            self.buffer += more
        if size < 0:
            chunk, self.buffer = self.buffer, ""
        else:
            chunk, self.buffer = self.buffer[:size], self.buffer[size:]
        return chunk


def item_lines(user_ids: list[int], count: int, start: int = 0):
    """COPY text lines of Cloud-Build-like JSON messages (about 600 bytes), users taking turns."""
    statuses = ["SUCCESS", "FAILURE", "WORKING", "QUEUED", "TIMEOUT"]
    for index in range(start, start + count):
        build_id = uuid.UUID(int=random.getrandbits(128), version=4)
        data = json.dumps({
            "id": str(build_id), "projectId": "bench-project", "status": statuses[index % 5],
            "source": {"repoSource": {"projectId": "bench-project", "repoName": "pubsub-monitor",
                                      "branchName": "main"}},
            "steps": [{"name": "gcr.io/cloud-builders/docker",
                       "args": ["build", "-t", f"gcr.io/bench-project/app:{index}", "."]}],
            "createTime": "2026-11-29T12:00:00Z", "logsBucket": "gs://bench-project_cloudbuild/logs",
            "logUrl": f"https://console.cloud.google.com/cloud-build/builds/{build_id}?project=bench-project",
            "sequence": index,
        }, separators=(",", ":"))
        attributes = json.dumps({"buildId": str(build_id), "status": statuses[index % 5]})
        yield (f"{user_ids[index % len(user_ids)]}\t{SUBSCRIPTION_PATH}\t{index}\t2026-11-29 12:00:00+00\t"
               f"2026-11-29 12:00:01+00\t{data}\t\\N\tt\t{attributes}\t\\N\t\\N\t{len(data)}\n")


def copy_lines(engine: sa.Engine, lines) -> None:
    """COPY text lines (user_id, subscription, message_id, publish_time, received_at, data_text, data_bytes,
    is_json, attributes_json, ordering_key, delivery_attempt, size) into user_item, in one transaction."""
    columns = ("user_id, subscription, message_id, publish_time, received_at, data_text, data_bytes, is_json, "
               "attributes_json, ordering_key, delivery_attempt, size")
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(f"COPY user_item ({columns}) FROM STDIN", CopySource(lines))
        raw.commit()
    finally:
        raw.close()


def create_watchers(connection: sa.Connection) -> tuple[list[str], list[int]]:
    """The USERS simulated users (watcher0, watcher1, ...; password PASSWORD): their names and ids."""
    from werkzeug.security import generate_password_hash

    password_hash = generate_password_hash(PASSWORD)
    names = [f"watcher{number}" for number in range(USERS)]
    user_ids = [connection.execute(
        sa.text('INSERT INTO "user" (username, email, password_hash, is_admin) '
                "VALUES (:name, :email, :hash, false) RETURNING id"),
        {"name": name, "email": f"{name}@example.com", "hash": password_hash}).scalar() for name in names]
    return names, user_ids


def seed(database: FreshDatabase, items: int) -> tuple[sa.Engine, list[str], list[int]]:
    engine = sa.create_engine(database.url, pool_size=2)
    with engine.begin() as connection:
        names, user_ids = create_watchers(connection)
        now = time.time()
        connection.execute(
            sa.text("INSERT INTO notification (name, user_id, timestamp, payload_json) "
                    "VALUES ('task_progress', :user_id, :timestamp, :payload)"),
            [{"user_id": user_id, "timestamp": now - 3600 + number * 7.0,
              "payload": json.dumps({"progress": "Polling", "stored_count": number})}
             for user_id in user_ids for number in range(NOTIFICATIONS_PER_USER)])
    started = time.monotonic()
    copy_lines(engine, item_lines(user_ids, items))
    seconds = time.monotonic() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))
        size = connection.execute(sa.text("SELECT pg_size_pretty(pg_total_relation_size('user_item'))")).scalar()
    print(f"seeded {items:,} items across {USERS} users in {seconds:.1f} s ({items / seconds:,.0f} rows/s), "
          f"user_item with indexes: {size}; VACUUM ANALYZE done", flush=True)
    return engine, names, user_ids


class LiveWriter(threading.Thread):
    """New messages (2 per user per second) and a progress notification per user every 5 s."""

    def __init__(self, engine: sa.Engine, user_ids: list[int], start_index: int):
        super().__init__(daemon=True)
        self.engine, self.user_ids, self.index = engine, user_ids, start_index
        self.stopping = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.stopping.wait(1.0):
            copy_lines(self.engine, item_lines(self.user_ids, 2 * len(self.user_ids), self.index))
            self.index += 2 * len(self.user_ids)
            tick += 1
            if tick % 5 == 0:
                with self.engine.begin() as connection:
                    connection.execute(
                        sa.text("INSERT INTO notification (name, user_id, timestamp, payload_json) "
                                "VALUES ('task_progress', :user_id, :timestamp, :payload)"),
                        [{"user_id": user_id, "timestamp": time.time(),
                          "payload": json.dumps({"progress": "Polling", "stored_count": self.index})}
                         for user_id in self.user_ids])


# --- the simulated pages -----------------------------------------------------------------------------


class Page(threading.Thread):
    """One open browser tab, as static/main.js behaves."""

    def __init__(self, base_url: str, username: str, cookies, until: float, samples: dict, lock: threading.Lock,
                 measure_from: float):
        super().__init__(daemon=True)
        self.base_url, self.username, self.until = base_url, username, until
        self.measure_from = measure_from
        self.session = requests.Session()
        self.session.cookies.update(cookies)
        self.samples, self.lock = samples, lock
        self.errors = 0

    def get(self, label: str, path: str, **params):
        started = time.perf_counter()
        try:
            response = self.session.get(self.base_url + path, params=params, timeout=30)
        except requests.RequestException:
            self.errors += 1
            return None
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            self.errors += 1
            return None
        # Page loads all happen in the first 5 s and are kept; polls and scrolls count after the warm-up.
        if label.startswith("/user/") or time.monotonic() - elapsed >= self.measure_from:
            with self.lock:
                self.samples[label].append(elapsed)
        return response

    def run(self) -> None:
        time.sleep(random.uniform(0, POLL_SECONDS))
        page = self.get("/user/<name> (page)", f"/user/{self.username}")
        if page is None:
            return
        found = dict(PAGE_ATTRIBUTE.findall(page.text))
        newest = int(found.get("newest-id") or 0)
        oldest = top = int(found.get("oldest-id") or 0)
        since = float(found.get("notifications-since") or 0)
        tick = random.randrange(SCROLL_EVERY)
        while (started := time.monotonic()) < self.until:
            reply = self.get("/notifications", "/notifications", since=since)
            if reply is not None and (notes := reply.json()):
                since = notes[-1]["timestamp"]
            while True:
                reply = self.get("/useritems?after (poll)", "/useritems", after=newest, user=self.username)
                if reply is None:
                    break
                body = reply.json()
                if body["ids"]:
                    newest = body["ids"][-1]
                if not body["more"]:
                    break
                time.sleep(0.2)
            tick += 1
            if tick % SCROLL_EVERY == 0:
                reply = self.get("/useritems?before (scroll)", "/useritems", before=oldest, user=self.username)
                if reply is not None:
                    body = reply.json()
                    oldest = body["ids"][-1] if body["ids"] and body["more"] else top
            time.sleep(max(0.0, started + POLL_SECONDS - time.monotonic()))


def cpu_shares(before: dict[str, float], after: dict[str, float], request_count: int) -> dict[str, float]:
    """Where the machine's CPU went between two CpuMeter samples: cores used by gunicorn, this
    database's PostgreSQL backends, this process (the simulated pages and the writer) and the rest
    of the machine, the machine's busy share, and gunicorn's CPU and run-queue wait per request
    (the part of a request's latency that is queueing for a core rather than work).
    """
    wall = after["wall"] - before["wall"]
    used = {key: after[key] - before[key] for key in before}
    cores = os.cpu_count() or 1
    other = used["machine_busy"] - used["web"] - used["postgres"] - used["bench"]
    return {"web_cores": used["web"] / wall, "postgres_cores": used["postgres"] / wall,
            "bench_cores": used["bench"] / wall, "other_cores": max(0.0, other) / wall,
            "busy_share": used["machine_busy"] / used["machine_total"] if used["machine_total"] else 0.0,
            "cores": cores,
            "web_cpu_ms_per_request": used["web"] / max(1, request_count) * 1000,
            "web_wait_ms_per_request": used["web_wait"] / max(1, request_count) * 1000,
            "postgres_wait_ms_per_request": used["postgres_wait"] / max(1, request_count) * 1000}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def server_times(log_path: Path, offset: int) -> tuple[dict[str, list[float]], int]:
    """Request times gunicorn logged since `offset`, in seconds, by endpoint."""
    times: dict[str, list[float]] = defaultdict(list)
    with open(log_path, "rb") as log:
        log.seek(offset)
        data = log.read()
    for line in data.decode(errors="replace").splitlines():
        if not line.startswith("BENCH "):
            continue
        _, path, micros, status, query = line.split(maxsplit=4)
        if status != "200":
            continue
        key = "/user/<name>" if path.startswith("/user/") else path
        if path == "/useritems":
            key += "?before" if "before=" in query else "?after"
        times[key].append(int(micros) / 1e6)
    return times, offset + len(data)


def run_phase(label: str, base_url: str, names: list[str], cookies: dict, clients: int, seconds: float,
              log_path: Path, engine: sa.Engine, user_ids: list[int], next_index: int, warmup: float,
              meter: CpuMeter) -> dict:
    offset = log_path.stat().st_size
    samples: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()
    writer = LiveWriter(engine, user_ids, next_index)
    writer.start()
    until = time.monotonic() + warmup + seconds
    measure_from = time.monotonic() + warmup
    pages = [Page(base_url, names[number % len(names)], cookies[names[number % len(names)]], until, samples, lock,
                  measure_from) for number in range(clients)]
    load_before = load_average()
    started = time.monotonic()
    for page in pages:
        page.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    cpu_before = meter.sample()
    for page in pages:
        page.join(warmup + seconds + 60)
    cpu_after = meter.sample()
    elapsed = time.monotonic() - started
    writer.stopping.set()
    writer.join(10)
    server, _ = server_times(log_path, offset)
    total = sum(len(values) for values in samples.values())
    errors = sum(page.errors for page in pages)
    print(f"\n{label}: {clients} clients for {warmup:.0f} s warm-up + {seconds:.0f} s measured; "
          f"{total:,} requests measured, {total / (elapsed - warmup):.1f} req/s, "
          f"{errors} errors; load before {load_before}, after {load_average()}", flush=True)
    cpu = cpu_shares(cpu_before, cpu_after, total)
    print(f"  CPU over the measured part ({cpu['cores']} cores, machine {cpu['busy_share']:.0%} busy): "
          f"gunicorn {cpu['web_cores']:.2f} cores, PostgreSQL {cpu['postgres_cores']:.2f}, "
          f"this bench (pages + writer) {cpu['bench_cores']:.2f}, everything else {cpu['other_cores']:.2f}; "
          f"per request: gunicorn CPU {cpu['web_cpu_ms_per_request']:.1f} ms, waiting for a core: "
          f"gunicorn {cpu['web_wait_ms_per_request']:.1f} ms, PostgreSQL {cpu['postgres_wait_ms_per_request']:.1f} ms",
          flush=True)
    result = {"throughput": total / (elapsed - warmup), "errors": errors, "next_index": writer.index, "cpu": cpu}
    for endpoint in ENDPOINTS:
        values = samples[endpoint]
        server_key = endpoint.split(" ")[0]
        server_values = server[server_key]
        figures = {"n": len(values), "p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
                   "p99": percentile(values, 0.99), "server_p99": percentile(server_values, 0.99)}
        result[endpoint] = figures
        print(f"  {endpoint:28s} n={figures['n']:5d}  p50 {figures['p50'] * 1000:6.1f} ms  "
              f"p95 {figures['p95'] * 1000:6.1f} ms  p99 {figures['p99'] * 1000:6.1f} ms  "
              f"(gunicorn p99 for {server_key}: {figures['server_p99'] * 1000:6.1f} ms)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = page_bench_parser(
        __doc__, warmup_help="seconds at the start of each phase (page loads) not counted for polls and scrolls")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--small-items", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=40, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=5, help="alternations small/large (medians are over these)")
    args = parser.parse_args(argv)

    workdir, redis = start_page_bench(
        "web", f"{args.clients} clients, {args.rounds} rounds of {args.seconds:.0f} s per dataset")
    databases, processes, stacks = [], [], {}
    try:
        for label, items in (("small", args.small_items), ("large", args.items)):
            database = FreshDatabase(args.database_url)
            databases.append(database)
            engine, names, user_ids = seed(database, items)
            log_path = workdir / f"web-{label}.log"
            web, base_url = start_web(app_env(database.url, redis.url, SUBSCRIPTION_NAME=SUBSCRIPTION), log_path,
                                      ACCESS_FORMAT)
            processes.append(web)
            cookies = {name: sign_in(base_url, name, PASSWORD)[0].cookies for name in names}
            stacks[label] = {"items": items, "engine": engine, "names": names, "user_ids": user_ids,
                             "meter": CpuMeter(engine, lambda pid=web.pid: {"web": [pid, *children(pid)],
                                                                              "bench": [os.getpid()]}),
                             "base_url": base_url, "cookies": cookies, "log": log_path, "next_index": items}
        results: dict[str, list[dict]] = {"small": [], "large": []}
        for round_number in range(1, args.rounds + 1):
            # small, large, large, small, ...: a drift in the machine's load falls on both alike.
            for label in ("small", "large") if round_number % 2 else ("large", "small"):
                stack = stacks[label]
                result = run_phase(f"round {round_number}, {stack['items']:,} items", stack["base_url"],
                                   stack["names"], stack["cookies"], args.clients, args.seconds, stack["log"],
                                   stack["engine"], stack["user_ids"], stack["next_index"], args.warmup,
                                   stack["meter"])
                stack["next_index"] = result["next_index"]
                results[label].append(result)

        print(f"\nmedians over {args.rounds} rounds (client-observed; gunicorn's own p99 in brackets):")
        for endpoint in ENDPOINTS:
            line = f"  {endpoint:28s}"
            p99 = {}
            for label in ("small", "large"):
                figures = results[label]
                p50 = statistics.median(result[endpoint]["p50"] for result in figures)
                p95 = statistics.median(result[endpoint]["p95"] for result in figures)
                p99[label] = statistics.median(result[endpoint]["p99"] for result in figures)
                server = statistics.median(result[endpoint]["server_p99"] for result in figures)
                line += (f" | {stacks[label]['items']:>9,}: p50 {p50 * 1000:5.1f} p95 {p95 * 1000:5.1f} "
                         f"p99 {p99[label] * 1000:5.1f} [{server * 1000:5.1f}] ms")
            line += f" | p99 ratio {p99['large'] / p99['small']:.2f}"
            print(line)
        for label in ("small", "large"):
            throughput = statistics.median(result["throughput"] for result in results[label])
            print(f"  throughput at {stacks[label]['items']:,} items: {throughput:.1f} req/s (median)")
        for label in ("small", "large"):
            cpu = {key: statistics.median(result["cpu"][key] for result in results[label])
                   for key in results[label][0]["cpu"]}
            print(f"  CPU at {stacks[label]['items']:,} items (medians): machine {cpu['busy_share']:.0%} busy; "
                  f"gunicorn {cpu['web_cores']:.2f} cores, PostgreSQL {cpu['postgres_cores']:.2f}, "
                  f"bench {cpu['bench_cores']:.2f}, other {cpu['other_cores']:.2f}; gunicorn "
                  f"{cpu['web_cpu_ms_per_request']:.1f} ms CPU and {cpu['web_wait_ms_per_request']:.1f} ms "
                  f"run-queue wait per request")
        print(f"load at the end: {load_average()}")
        for endpoint in ("/useritems?after (poll)", "/useritems?before (scroll)", "/notifications"):
            large = statistics.median(result[endpoint]["p99"] for result in results["large"])
            small = statistics.median(result[endpoint]["p99"] for result in results["small"])
            print(f"target {endpoint}: p99 {large * 1000:.1f} ms at {args.items:,} items (< 50 ms: "
                  f"{'met' if large < 0.05 else 'MISSED'}), ratio {large / small:.2f} (<= 1.5: "
                  f"{'met' if large / small <= 1.5 else 'MISSED'})")
    finally:
        for process in processes:
            stop(process)
        redis.stop()
        for stack in stacks.values():
            stack["engine"].dispose()
        for database in databases:
            database.drop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
