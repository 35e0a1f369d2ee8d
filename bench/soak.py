"""Soak: poll an idle subscription for 30 minutes while browsers watch, then a burst; memory at start and end.

    .venv/bin/python bench/soak.py --mode batch
    .venv/bin/python bench/soak.py --mode streaming --minutes 30 --burst 20000

It starts its own emulator and Redis and a fresh PostgreSQL database, then runs the
Procfile's `web` (gunicorn) and `worker` (rq PollingWorker) processes. A user starts
polling through POST /polling_pubsub; five simulated pages poll /notifications and
/useritems every 5 s throughout. After the idle period it publishes a burst and waits
until every message is stored (and checks that none is stored twice).

It prints the resident memory (VmRSS) of the worker, its work horse (the process that
runs the polling job) and gunicorn's processes after the first minute, every few
minutes, at the end of the idle period and after the burst. The acceptance target:
the worker's memory at the end is within 20% of its value after the first minute.
Not run in CI.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from stack import (
    FreshDatabase,
    PubSubEmulator,
    RedisServer,
    app_env,
    children,
    load_average,
    rss_kb,
    sign_in,
    start_procfile_process,
    start_web,
    started_ticks,
    stop,
    wait_until,
)

PROJECT = "bench-project"
PASSWORD = "soak-password-1"


def memory(worker_pid: int, web_pid: int) -> dict[str, int]:
    # `--with-scheduler` forks rq's scheduler first; the work horse is the worker's newest child.
    worker_children = sorted(children(worker_pid), key=started_ticks)
    web_workers = children(web_pid)
    return {
        "worker": rss_kb(worker_pid),
        "horse": rss_kb(worker_children[-1]) if worker_children else 0,
        "scheduler": sum(rss_kb(pid) for pid in worker_children[:-1]),
        "web_master": rss_kb(web_pid),
        "web_workers": sum(rss_kb(pid) for pid in web_workers),
    }


def show(label: str, sample: dict[str, int], started: float) -> None:
    minutes = (time.monotonic() - started) / 60
    print(f"[{minutes:5.1f} min] {label:22s} worker {sample['worker'] / 1024:6.1f} MB  "
          f"horse {sample['horse'] / 1024:6.1f} MB  scheduler {sample['scheduler'] / 1024:5.1f} MB  "
          f"web master {sample['web_master'] / 1024:5.1f} MB  "
          f"web workers {sample['web_workers'] / 1024:6.1f} MB  load {load_average()}", flush=True)


class WatchingPages(threading.Thread):
    """Simulated open pages: /notifications?since= and /useritems?after= every 5 s, as static/main.js does."""

    def __init__(self, base_url: str, username: str, pages: int):
        super().__init__(daemon=True)
        self.sessions = [sign_in(base_url, username, PASSWORD)[0] for _ in range(pages)]
        self.base_url = base_url
        self.stopping = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0

    def run(self) -> None:
        cursors = [{"since": 0.0, "after": 0} for _ in self.sessions]
        while not self.stopping.wait(5):
            for session, cursor in zip(self.sessions, cursors, strict=True):
                try:
                    started = time.perf_counter()
                    notes = session.get(self.base_url + "/notifications", params={"since": cursor["since"]},
                                        timeout=30).json()
                    if notes:
                        cursor["since"] = notes[-1]["timestamp"]
                    while True:
                        reply = session.get(self.base_url + "/useritems", params={"after": cursor["after"]},
                                            timeout=30).json()
                        if reply["ids"]:
                            cursor["after"] = reply["ids"][-1]
                        if not reply["more"]:
                            break
                    self.latencies.append(time.perf_counter() - started)
                except (OSError, ValueError):
                    self.errors += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["batch", "streaming"], default="batch")
    parser.add_argument("--minutes", type=float, default=30, help="idle polling time (default 30)")
    parser.add_argument("--burst", type=int, default=20_000, help="messages published after the idle time")
    parser.add_argument("--pages", type=int, default=5, help="simulated open pages")
    parser.add_argument("--database-url", help="PostgreSQL server URL; a fresh database is created on it")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="pubsub-soak-"))
    emulator = PubSubEmulator(log_path=str(workdir / "emulator.log")).start()
    redis = RedisServer().start()
    database = FreshDatabase(args.database_url)
    processes = []
    try:
        import os

        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        from google.cloud import pubsub_v1

        suffix = uuid.uuid4().hex[:8]
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        topic_path = publisher.topic_path(PROJECT, f"soak-{suffix}")
        subscription = f"soak-{suffix}"
        publisher.create_topic(name=topic_path)
        subscriber.create_subscription(name=subscriber.subscription_path(PROJECT, subscription), topic=topic_path,
                                       ack_deadline_seconds=60)
        subscriber.close()

        env = app_env(database.url, redis.url, PUBSUB_EMULATOR_HOST=emulator.host, PUBSUB_PULL_MODE=args.mode,
                      SUBSCRIPTION_NAME=subscription, PUBSUB_TOPIC=f"soak-{suffix}")
        engine = sa.create_engine(database.url)
        from werkzeug.security import generate_password_hash

        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO \"user\" (username, email, password_hash, is_admin) "
                                       "VALUES ('soak', 'soak@example.com', :hash, false)"),
                               {"hash": generate_password_hash(PASSWORD)})
        worker = start_procfile_process("worker", env, workdir / "worker.log")
        processes.append(worker)
        web, base_url = start_web(env, workdir / "web.log")
        processes.append(web)
        print(f"soak: {args.mode} mode, {args.minutes:g} min idle then {args.burst:,} messages; "
              f"{args.pages} pages watching; logs in {workdir}", flush=True)

        session, token = sign_in(base_url, "soak", PASSWORD)
        reply = session.post(base_url + "/polling_pubsub", data={"action": "start", "subscription": subscription},
                             headers={"X-CSRFToken": token}, timeout=30)
        assert reply.status_code == 202, reply.text
        wait_until(lambda: children(worker.pid), 60, message="the work horse")
        pages = WatchingPages(base_url, "soak", args.pages)
        pages.start()
        started = time.monotonic()

        time.sleep(60)
        first = memory(worker.pid, web.pid)
        show("after the first minute", first, started)
        idle_end = started + args.minutes * 60
        while (remaining := idle_end - time.monotonic()) > 0:
            time.sleep(min(remaining, 300))
            show("idle", memory(worker.pid, web.pid), started)
        before_burst = memory(worker.pid, web.pid)
        show("end of idle", before_burst, started)

        from helpers.publish import cloud_build_message

        burst_publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(
            max_messages=1000, max_bytes=5_000_000, max_latency=0.05))
        burst_started = time.monotonic()
        futures = [burst_publisher.publish(topic_path, sample.data, **sample.attributes)
                   for sample in (cloud_build_message(PROJECT, index, 1000) for index in range(args.burst))]
        for future in futures:
            future.result(timeout=300)

        def stored() -> int:
            with engine.connect() as connection:
                return connection.execute(sa.text("SELECT count(*) FROM user_item")).scalar()

        wait_until(lambda: stored() >= args.burst, 600, 1, "the burst to be stored")
        burst_seconds = time.monotonic() - burst_started
        time.sleep(15)  # let the pages catch up through /useritems
        after_burst = memory(worker.pid, web.pid)
        show("after the burst", after_burst, started)
        with engine.connect() as connection:
            rows, distinct = connection.execute(
                sa.text("SELECT count(*), count(DISTINCT message_id) FROM user_item")).one()
        pages.stopping.set()
        pages.join(30)

        print(f"burst: {args.burst:,} published and stored in {burst_seconds:.1f} s; rows {rows:,}, "
              f"distinct message ids {distinct:,}, duplicates {rows - distinct}, lost {args.burst - distinct}")
        if pages.latencies:
            ordered = sorted(pages.latencies)
            print(f"page polls: {len(ordered):,}, median {statistics.median(ordered) * 1000:.1f} ms, "
                  f"max {ordered[-1] * 1000:.1f} ms, errors {pages.errors}")
        for label, end in (("end of idle", before_burst), ("after the burst", after_burst)):
            for key in ("worker", "horse", "scheduler", "web_master", "web_workers"):
                ratio = end[key] / first[key] if first[key] else float("nan")
                print(f"{key:11s} first minute {first[key] / 1024:6.1f} MB -> {label} {end[key] / 1024:6.1f} MB "
                      f"({ratio:.2f}x)")
        horse_ratio = before_burst["horse"] / first["horse"]
        print(f"target: work horse within 20% after the idle soak: {horse_ratio:.2f}x -> "
              f"{'met' if abs(horse_ratio - 1) <= 0.2 else 'MISSED'}; after the burst "
              f"{after_burst['horse'] / first['horse']:.2f}x")
    finally:
        for process in reversed(processes):
            stop(process)
        redis.stop()
        emulator.stop()
        database.drop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
