"""Measure how fast messages get from the emulator into the database, and compare with the bare client.

    .venv/bin/python bench/ingest.py --database sqlite
    .venv/bin/python bench/ingest.py --database postgresql --corpus both --repeat 3

It starts its own emulator and Redis (stopped however the bench ends: bench/stack.py) and,
for each corpus asked for and each of --repeat rounds, publishes the corpus once to a fresh
topic with four fresh subscriptions, and drains one subscription each way:

  (a) bare StreamingPull, ack-only callback, in this process;
  (b) bare unary Pull, 1,000 per call, one acknowledge per batch, in this process;
  (c) the app's streaming mode: the real job in a real `rq worker`, storing to the database;
  (d) the app's batch mode, likewise.

Corpora (bench/corpus.py, seeded: the same bytes every run): `padded`, --count Cloud Build
notifications padded with "x" to --size (the default, as before); `real`, Cloud Build
notifications, Cloud Logging entries with stack traces, audit-log entries, non-ASCII text and
5% binary, sizes log-normal from 200 B to 64 KB; `both`, side by side, alternating in order.
With --warmup N, N rounds run first and are not counted: the emulator's JIT compiler works for
minutes, and a cold emulator slows the bare client's (b) most, so the first rounds flatter d/b.

(c) and (d) are timed from the job's "Polling" notification to the last row
committed, so worker start-up is not counted. It prints msg/s and MB/s (payload bytes), the
ratios c/a, d/b and d/c, the work horse's peak memory (VmHWM), and the CPU per message
over the drain of the work horse, this database's PostgreSQL backends and the emulator
(/proc/<pid>/stat; for the emulator, also at least what its JIT compiler threads took), with the
work horse's own split into pull, convert, write and ack (the job's time.thread_time counters,
which it logs as it ends: app.pubsub.sources.CpuCounters), and the CPU time its garbage
collections took, mostly within those steps. The job's loop also logs its wall time in writes and
waiting for a batch: the share of the drain in writes shows whether the write chain set the pace.
To show whether the cores were the limit, it also prints how busy the whole machine was over the
drain and, per process, the time its threads were ready to run but waited for a core
(/proc/<pid>/schedstat). With --repeat, medians; the real/padded MB/s ratio is taken per round. Not run in CI.

    .venv/bin/python bench/ingest.py --scale-out --database postgresql --repeat 3

Scale-out mode: in each pull mode, 1, 2 and 4 `rq worker` processes (the Procfile's
PollingWorker) run one Task started with streams=W, on a fresh topic and subscription
per run holding a backlog of --streaming-count / --batch-count messages. The rate
counts from the moment every stream is polling to the last row stored. It prints the
rate against one worker and against the bare client (same count, fresh subscription),
duplicates and lost messages (both must be 0), and the CPU each part used during the
drain (work horses, this database's PostgreSQL backends, the emulator, in cores), the
time their threads sat runnable waiting for a CPU (schedstat), and the machine's busy
share, to show what bounds the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from corpus import Message, describe, padded_corpus, real_corpus  # noqa: E402
from stack import (  # noqa: E402
    CpuMeter,
    PubSubEmulator,
    RedisServer,
    children,
    drop_database,
    load_average,
    on_exit,
    spawn,
    stop_process,
    wait_until,
)

from config import normalise_database_url  # noqa: E402

PROJECT = "bench-project"


def publish(host: str, topic: str, messages: list[Message]) -> float:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_bytes=5_000_000, max_latency=0.05)
    )
    topic_path = publisher.topic_path(PROJECT, topic)
    started = time.monotonic()
    futures = [publisher.publish(topic_path, message.data, **message.attributes) for message in messages]
    for future in futures:
        future.result(timeout=300)
    return time.monotonic() - started


def bare_streaming(client, path: str, count: int) -> float:
    """(a): StreamingPull with an ack-only callback."""
    received = 0
    done = threading.Event()
    lock = threading.Lock()

    def callback(message):
        nonlocal received
        message.ack()
        with lock:
            received += 1
            if received >= count:
                done.set()

    started = time.monotonic()
    future = client.subscribe(path, callback=callback)
    if not done.wait(600):
        raise RuntimeError(f"bare streaming drained only {received} of {count}")
    elapsed = time.monotonic() - started
    future.cancel()
    future.result(timeout=30)
    return elapsed


def bare_pull(client, path: str, count: int) -> float:
    """(b): unary Pull of up to 1,000, then one acknowledge per batch."""
    from google.pubsub_v1.types import PullRequest

    request = PullRequest(subscription=path, max_messages=1000)
    received = 0
    started = time.monotonic()
    while received < count:
        response = client.pull(request=request, timeout=30)
        ack_ids = [message.ack_id for message in type(response).pb(response).received_messages]
        if ack_ids:
            client.acknowledge(subscription=path, ack_ids=ack_ids)
            received += len(ack_ids)
    return time.monotonic() - started


def peak_memory_kb(pid: int) -> int:
    """VmHWM (peak resident set) of a process and its children, in kB: the largest of them."""
    peak = 0
    pids = [pid]
    try:
        pids += [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak


BREAKDOWN = re.compile(r"ingest CPU per message \(µs\) (\{.*?\}) over (\d+) messages in (\d+) writes.*?"
                       r"wall time per message \(µs\) (\{.*?\})")


def app_mode(mode: str, database_url: str, redis: RedisServer, emulator: PubSubEmulator, subscription: str,
             count: int, log_dir: Path) -> dict:
    """(c) or (d): the real job in a real rq worker. Returns its seconds, the work horse's peak kB, the CPU
    (µs per message) of the work horse, this database's PostgreSQL backends and the emulator over the
    drain, and the job's own split of its CPU (pull, convert, write, ack; whole job, from its log)."""
    from app import create_app, polling
    from app.extensions import db
    from app.models import Notification, Task, User
    from config import Config

    queue = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    host = emulator.host
    settings = {"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis.url, "RQ_QUEUE": queue,
                "GCP_PROJECT_ID": PROJECT, "PUBSUB_EMULATOR_HOST": host, "PUBSUB_PULL_MODE": mode,
                "SECRET_KEY": "bench", "TESTING": True}
    app = create_app(type("BenchConfig", (Config,), settings))
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=redis.url, GCP_PROJECT_ID=PROJECT,
               PUBSUB_EMULATOR_HOST=host, PUBSUB_PULL_MODE=mode, SECRET_KEY="bench", LOG_TO_STDOUT="1")
    rq = str(Path(sys.executable).with_name("rq"))
    log_path = log_dir / f"worker-{queue}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    worker = spawn([rq, "worker", "-u", redis.url, queue], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    engine = sa.create_engine(database_url)
    meter = CpuMeter(engine, lambda: {
        "emulator": [emulator.process.pid, *children(emulator.process.pid)],
        "horse": children(worker.pid),
    })
    try:
        with app.app_context():
            user = User(username=queue, email=f"{queue}@example.com")
            db.session.add(user)
            db.session.commit()
            task = polling.launch(user, polling.canonical(subscription), description=f"Bench {mode}")
            task_id = task.id
            polling_since = None
            deadline = time.monotonic() + 120
            while polling_since is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {mode} job never started; see {log.name}")
                note = db.session.scalar(sa.select(Notification).where(Notification.user_id == user.id))
                db.session.rollback()
                if note is not None:
                    polling_since = note.timestamp
                    start = meter.sample()
                time.sleep(0.02)
            deadline = time.monotonic() + 600
            peak = 0
            while True:
                stored = db.session.scalar(sa.select(Task.stored_count).where(Task.id == task_id))
                db.session.rollback()
                peak = max(peak, peak_memory_kb(worker.pid))
                if stored >= count:
                    finished = time.time()
                    end = meter.sample()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{mode}: stored only {stored} of {count}")
                time.sleep(0.02)
            peak = max(peak, peak_memory_kb(worker.pid))
            db.session.execute(sa.update(Task).where(Task.id == task_id).values(complete=True))
            db.session.commit()
        # The job logs its own CPU split as it ends.
        match = wait_until(lambda: BREAKDOWN.search(log_path.read_text(errors="replace")), 60,
                           message=f"the {mode} job's CPU line in {log_path}")
        split = json.loads(match.group(1))
        cpu = {name: (end[name] - start[name]) * 1e6 / count
               for name in ("horse", "postgres", "emulator", "emulator_jit", "horse_wait", "postgres_wait",
                            "emulator_wait")}
        # Whether the cores were the limit: the machine's busy share over the drain (all cores).
        cpu["machine_busy"] = (end["machine_busy"] - start["machine_busy"]) / max(
            1e-9, end["machine_total"] - start["machine_total"])
        split["rows_per_write"] = int(match.group(2)) / max(1, int(match.group(3)))
        # The job's loop, in wall time: in its writes, and waiting for a batch. The share of the drain
        # spent in writes says which side set the pace: near 100%, the write chain did.
        wall = json.loads(match.group(4))
        split["write_wall"], split["waiting_wall"] = wall["write"], wall["waiting"]
        split["writer_busy"] = wall["write"] * int(match.group(2)) / 1e6 / (finished - polling_since)
        return {"seconds": finished - polling_since, "peak_kb": peak, "cpu": cpu, "split": split,
                "split_messages": int(match.group(2))}
    finally:
        stop_process(worker, timeout=15)
        log.close()
        engine.dispose()
        with app.app_context():
            db.engine.dispose()


def prepare_database(kind: str, url: str | None, workdir: Path) -> tuple[str, callable]:
    from app import create_app
    from app.extensions import db
    from config import Config

    if kind == "sqlite":
        database_url = f"sqlite:///{workdir / 'bench.db'}"
        drop = lambda: None  # noqa: E731
    else:
        server = sa.make_url(normalise_database_url(url or "postgresql://pubsub:pubsub@localhost:5432/postgres"))
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        database_url = server.set(database=name).render_as_string(hide_password=False)

        def drop():
            drop_database(admin, name)
            admin.dispose()

        on_exit(drop)

    app = create_app(type("BenchConfig", (Config,), {"SQLALCHEMY_DATABASE_URI": database_url, "TESTING": True,
                                                      "SECRET_KEY": "bench"}))
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    return database_url, drop


# --- scale-out: one subscription shared by 1, 2 and 4 worker processes (Task.streams) ----------------


class LockSampler(threading.Thread):
    """Samples, every 20 ms, how many of this database's backends wait on the per-user advisory lock."""

    def __init__(self, engine: sa.Engine, database: str):
        super().__init__(daemon=True)
        self.engine, self.database = engine, database
        self.stopping = threading.Event()
        self.samples: list[int] = []

    def run(self) -> None:
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name "
                        "AND wait_event_type = 'Lock' AND wait_event = 'advisory'")
        with self.engine.connect() as connection:
            while not self.stopping.wait(0.02):
                self.samples.append(connection.execute(query, {"name": self.database}).scalar())
                connection.rollback()

    def finish(self) -> tuple[float, float]:
        """(mean waiters, share of samples with at least one waiter)."""
        self.stopping.set()
        self.join(5)
        if not self.samples:
            return 0.0, 0.0
        return (sum(self.samples) / len(self.samples),
                sum(1 for waiting in self.samples if waiting) / len(self.samples))


def fresh_subscription(client, publisher, name: str) -> tuple[str, str]:
    topic_path = publisher.topic_path(PROJECT, name)
    subscription_path = client.subscription_path(PROJECT, name)
    publisher.create_topic(name=topic_path)
    client.create_subscription(name=subscription_path, topic=topic_path, ack_deadline_seconds=60)
    return topic_path, subscription_path


def scale_out_run(mode: str, workers: int, count: int, size: int, database_url: str, redis: RedisServer,
                  emulator: PubSubEmulator, client, publisher, log_dir: Path) -> dict:
    """W rq workers (the Procfile's worker class) run one Task with streams=W on a fresh subscription."""
    from app import create_app, polling
    from app.extensions import db
    from app.models import Task, User
    from app.polling import alive_key
    from config import Config

    name = f"scale-{mode}-{workers}-{uuid.uuid4().hex[:6]}"
    # Messages are stored under the subscription's full path (app.polling.canonical).
    _, path = fresh_subscription(client, publisher, name)
    publish(emulator.host, name, padded_corpus(count, PROJECT, size))
    queue = f"bench-{name}"
    settings = {"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis.url, "RQ_QUEUE": queue,
                "GCP_PROJECT_ID": PROJECT, "PUBSUB_EMULATOR_HOST": emulator.host, "PUBSUB_PULL_MODE": mode,
                "SECRET_KEY": "bench", "TESTING": True}
    app = create_app(type("BenchConfig", (Config,), settings))
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=redis.url, GCP_PROJECT_ID=PROJECT,
               PUBSUB_EMULATOR_HOST=emulator.host, PUBSUB_PULL_MODE=mode, SECRET_KEY="bench", LOG_TO_STDOUT="1",
               RQ_QUEUE=queue)
    rq = str(Path(sys.executable).with_name("rq"))
    processes, logs = [], []
    try:
        for number in range(workers):
            log = open(log_dir / f"{name}-worker{number}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            processes.append(spawn(
                [rq, "worker", "-u", redis.url, "-w", "app.worker.PollingWorker", queue], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT))
        engine = sa.create_engine(database_url)
        database = engine.url.database
        worker_pids = [process.pid for process in processes]
        meter = CpuMeter(engine, lambda: {
            "emulator": [emulator.process.pid, *children(emulator.process.pid)],  # the launcher script and its java
            "horses": [horse for pid in worker_pids for horse in children(pid)],
        })

        def stored() -> int:
            with engine.connect() as connection:
                return connection.execute(sa.text("SELECT count(*) FROM user_item WHERE subscription = :s"),
                                          {"s": path}).scalar()

        with app.app_context():
            user = User(username=name, email=f"{name}@example.com")
            db.session.add(user)
            db.session.commit()
            task = polling.launch(user, polling.canonical(name), workers, description=f"Bench {name}")
            task_id, job_ids = task.id, task.job_ids()
            db.session.commit()
        # The rate counts from the moment every stream is polling (each has heartbeated once).
        deadline = time.monotonic() + 120
        while not all(app.redis.exists(alive_key(job_id)) for job_id in job_ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: not every stream started; see {log_dir}")
            time.sleep(0.02)
        start = meter.sample()
        stored_at_start = stored()
        locks = LockSampler(engine, database)
        locks.start()
        deadline = time.monotonic() + 600
        while (stored_now := stored()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: stored only {stored_now} of {count}")
            time.sleep(0.05)
        end = meter.sample()
        lock_waiters, lock_share = locks.finish()
        time.sleep(2)  # a duplicate would arrive now
        with engine.connect() as connection:
            rows, distinct = connection.execute(sa.text(
                "SELECT count(*), count(DISTINCT message_id) FROM user_item WHERE subscription = :s"),
                {"s": path}).one()
            task_count = connection.execute(sa.text("SELECT stored_count FROM task WHERE id = :id"),
                                            {"id": task_id}).scalar()
        with app.app_context():
            db.session.execute(sa.update(Task).where(Task.id == task_id).values(complete=True))
            db.session.commit()
        seconds = end["wall"] - start["wall"]
        cpu = {key: (end[key] - start[key]) / seconds
               for key in ("emulator", "postgres", "horses", "emulator_wait", "postgres_wait", "horses_wait")}
        busy = (end["machine_busy"] - start["machine_busy"]) / (end["machine_total"] - start["machine_total"])
        time.sleep(3)
        engine.dispose()
        return {"rate": (count - stored_at_start) / seconds, "seconds": seconds, "measured": count - stored_at_start,
                "duplicates": rows - distinct, "lost": count - distinct, "task_count": task_count, "cpu": cpu,
                "lock_waiters": lock_waiters, "lock_share": lock_share,
                "machine_busy": busy}
    finally:
        for process in processes:
            stop_process(process, timeout=15)
        for log in logs:
            log.close()
        with app.app_context():
            db.engine.dispose()


def bare_run(mode: str, count: int, size: int, emulator: PubSubEmulator, client, publisher) -> float:
    name = f"bare-{mode}-{uuid.uuid4().hex[:6]}"
    _, path = fresh_subscription(client, publisher, name)
    publish(emulator.host, name, padded_corpus(count, PROJECT, size))
    seconds = (bare_streaming if mode == "streaming" else bare_pull)(client, path, count)
    return count / seconds


def scale_out(args, emulator: PubSubEmulator, redis: RedisServer, database_url: str, workdir: Path) -> None:
    import statistics

    from google.cloud import pubsub_v1

    from app.pubsub import make_subscriber_client

    publisher = pubsub_v1.PublisherClient()
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    counts = {"streaming": args.streaming_count, "batch": args.batch_count}
    worker_counts = [int(value) for value in args.workers.split(",")]
    summary = []
    for mode in args.modes.split(","):
        count = counts[mode]
        bare = [bare_run(mode, count, args.size, emulator, client, publisher) for _ in range(args.repeat)]
        bare_rate = statistics.median(bare)
        print(f"\n{mode}: bare {'StreamingPull' if mode == 'streaming' else 'unary Pull'} drain of {count:,}: "
              f"{', '.join(f'{rate:,.0f}' for rate in bare)} msg/s (median {bare_rate:,.0f}); load "
              f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
        rates = {}
        for workers in worker_counts:
            results = []
            for _ in range(args.repeat):
                result = scale_out_run(mode, workers, count, args.size, database_url, redis, emulator, client,
                                       publisher, workdir)
                results.append(result)
                cpu = result["cpu"]
                print(f"  {workers} worker(s): {result['rate']:8,.0f} msg/s over {result['measured']:,} messages "
                      f"in {result['seconds']:.1f} s; duplicates {result['duplicates']}, lost {result['lost']}, "
                      f"task count {result['task_count']:,}; CPU (cores): horses {cpu['horses']:.2f}, "
                      f"postgres {cpu['postgres']:.2f}, emulator {cpu['emulator']:.2f}; waiting for a CPU "
                      f"(cores): horses {cpu['horses_wait']:.2f}, postgres {cpu['postgres_wait']:.2f}, emulator "
                      f"{cpu['emulator_wait']:.2f}; advisory-lock waiters {result['lock_waiters']:.2f} "
                      f"(some waiting {result['lock_share'] * 100:.0f}% of the time); machine busy "
                      f"{result['machine_busy'] * 100:.0f}% of 2 cores; load "
                      f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
            rates[workers] = statistics.median(result["rate"] for result in results)
            summary.append((mode, workers, rates[workers], rates[workers] / rates[worker_counts[0]],
                            rates[workers] / bare_rate,
                            sum(result["duplicates"] for result in results), sum(result["lost"] for result in results)))
    print("\nscale-out summary (medians):")
    for mode, workers, rate, vs_one, vs_bare, duplicates, lost in summary:
        print(f"  {mode:9s} {workers} worker(s): {rate:8,.0f} msg/s  x{vs_one:.2f} vs 1 worker  "
              f"x{vs_bare:.2f} vs bare client  duplicates {duplicates}  lost {lost}")
    client.close()


def drain_round(label: str, messages: list[Message], args, emulator: PubSubEmulator, redis: RedisServer,
                database_url: str, client, publisher, workdir: Path) -> dict:
    """(a) to (d) on one corpus: published once to a fresh topic with four fresh subscriptions."""
    name = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    topic_path = publisher.topic_path(PROJECT, name)
    publisher.create_topic(name=topic_path)
    paths = {}
    for key in "abcd":
        paths[key] = client.subscription_path(PROJECT, f"{name}-{key}")
        client.create_subscription(name=paths[key], topic=topic_path, ack_deadline_seconds=60)
    count = len(messages)
    megabytes = sum(len(message.data) for message in messages) / 1e6
    seconds = publish(emulator.host, name, messages)
    print(f"  [{label}] published in {seconds:.1f} s ({count / seconds:,.0f} msg/s); load {load_average()}",
          flush=True)
    result = {"megabytes": megabytes}

    def show(key: str, title: str, seconds: float, extra: str = "") -> None:
        result[key] = count / seconds
        result[f"{key}_mbps"] = megabytes / seconds
        print(f"  [{label}] ({key}) {title:34s}{seconds:6.2f} s {count / seconds:8,.0f} msg/s "
              f"{megabytes / seconds:6.1f} MB/s{extra}; load {load_average()}", flush=True)

    meter = CpuMeter(None, lambda: {"emulator": [emulator.process.pid, *children(emulator.process.pid)],
                                    "bench": [os.getpid()]})
    for key, title, drain in (("a", "bare StreamingPull, ack-only:", bare_streaming),
                              ("b", "bare unary Pull, 1,000 per call:", bare_pull)):
        start = meter.sample()
        seconds = drain(client, paths[key], count)
        end = meter.sample()
        cpu = {name: (end[name] - start[name]) * 1e6 / count for name in ("emulator", "emulator_jit", "bench")}
        result[f"{key}_cpu"] = cpu
        show(key, title, seconds, f"  CPU µs/message: emulator {cpu['emulator']:.0f} (JIT compiling "
                                  f"{cpu['emulator_jit']:.0f}), this client {cpu['bench']:.0f}")
    for key, mode in (("c", "streaming"), ("d", "batch")):
        run = app_mode(mode, database_url, redis, emulator, f"{name}-{key}", count, workdir)
        result[f"{key}_peak_kb"] = run["peak_kb"]
        result[f"{key}_cpu"] = {**run["cpu"], **run["split"]}
        cpu, split = run["cpu"], run["split"]
        show(key, f"app {mode} mode, stored:", run["seconds"], f"  peak worker memory {run['peak_kb'] / 1024:.0f} MB")
        print(f"        CPU µs/message: work horse {cpu['horse']:.0f} (of which pull {split['pull']:.0f}, convert "
              f"{split['convert']:.0f}, write {split['write']:.0f}, ack {split['ack']:.0f}; garbage collection "
              f"{split.get('gc', 0):.0f}, mostly within those), PostgreSQL "
              f"{cpu['postgres']:.0f}, emulator {cpu['emulator']:.0f} (JIT compiling {cpu['emulator_jit']:.0f}); "
              f"{split['rows_per_write']:.0f} rows a write",
              flush=True)
        print(f"        machine busy {cpu['machine_busy']:.0%} of {os.cpu_count()} cores; µs/message ready to run but "
              f"waiting for a core: work horse {cpu['horse_wait']:.0f}, PostgreSQL {cpu['postgres_wait']:.0f}, "
              f"emulator {cpu['emulator_wait']:.0f}", flush=True)
        print(f"        {loop_pace(split)}", flush=True)
    for key in ("ca", "db", "dc"):
        result[key] = result[key[0]] / result[key[1]]
    return result


STEPS = ("horse", "pull", "convert", "write", "ack", "gc", "postgres", "emulator", "emulator_jit")
STEP_LABELS = {"gc": "garbage collection (mostly within pull to ack)", "emulator_jit": "of which JIT compiling"}
WAITS = ("machine_busy", "horse_wait", "postgres_wait", "emulator_wait")
LOOP = ("write_wall", "writer_busy", "waiting_wall")


def loop_pace(values: dict) -> str:
    """The job's loop in wall time (app_mode): in writes, their share of the drain, and waiting for a batch."""
    return (f"the job's loop, wall µs/message: in writes {values['write_wall']:.0f} ({values['writer_busy']:.0%} of "
            f"the drain), waiting for a batch {values['waiting_wall']:.0f}")


def compare(args, emulator: PubSubEmulator, redis: RedisServer, database_url: str, workdir: Path) -> None:
    """(a) to (d) on each corpus asked for, --repeat rounds (the corpora alternate in order); medians."""
    from google.cloud import pubsub_v1

    from app.pubsub import make_subscriber_client

    publisher = pubsub_v1.PublisherClient()
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    names = ["padded", "real"] if args.corpus == "both" else [args.corpus]
    corpora = {"padded": lambda: padded_corpus(args.count, PROJECT, args.size),
               "real": lambda: real_corpus(args.count, PROJECT)}
    corpora = {name: corpora[name]() for name in names}
    print(f"database: {args.database}; emulator {emulator.host}; logs in {workdir}; {args.repeat} round(s)")
    for name, messages in corpora.items():
        print(f"  {name} corpus: {describe(messages)}", flush=True)
    for number in range(args.warmup):
        print(f"warm-up round {number + 1} of {args.warmup} (not counted); load {load_average()}", flush=True)
        for name in names:
            drain_round(name, corpora[name], args, emulator, redis, database_url, client, publisher, workdir)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for number in range(args.repeat):
        order = names if number % 2 == 0 else names[::-1]
        print(f"round {number + 1} of {args.repeat}: {', '.join(order)}; load {load_average()}", flush=True)
        for name in order:
            results[name].append(drain_round(name, corpora[name], args, emulator, redis, database_url, client,
                                             publisher, workdir))
    client.close()

    def median(name: str, key: str) -> float:
        return statistics.median(result[key] for result in results[name])

    print(f"\nmedians of {args.repeat} on {args.database} (after {args.warmup} warm-up round(s)); load at the end "
          f"{load_average()}:")
    for name in names:
        print(f"  {name:6s}: " + "  ".join(f"({key}) {median(name, key):,.0f} msg/s {median(name, key + '_mbps'):.1f} "
                                         f"MB/s" for key in "abcd"))
        print(f"          c/a {median(name, 'ca'):.2f} (target >= 0.9)  d/b {median(name, 'db'):.2f} (target >= 0.5)  "
              f"d/c {median(name, 'dc'):.2f} (target >= 5)  peak worker memory "
              f"{max(max(r['c_peak_kb'], r['d_peak_kb']) for r in results[name]) / 1024:.0f} MB (target < 300 MB)")
        for key, mode in (("a", "bare streaming"), ("b", "bare pull")):
            cpu = {part: statistics.median(result[f"{key}_cpu"][part] for result in results[name])
                   for part in ("emulator", "emulator_jit", "bench")}
            print(f"          {mode:14s} CPU µs/message: emulator {cpu['emulator']:.0f} (JIT compiling "
                  f"{cpu['emulator_jit']:.0f}), client {cpu['bench']:.0f}")
        for key, mode in (("c", "app streaming"), ("d", "app batch")):
            cpu = {step: statistics.median(result[f"{key}_cpu"][step] for result in results[name]) for step in STEPS}
            print(f"          {mode:14s} CPU µs/message: " + ", ".join(f"{STEP_LABELS.get(step, step)} {cpu[step]:.0f}"
                                                                         for step in STEPS))
            waits = {part: statistics.median(result[f"{key}_cpu"][part] for result in results[name])
                     for part in WAITS + LOOP}
            print(f"          {'':14s} machine busy {waits['machine_busy']:.0%}; waiting for a core µs/message: "
                  f"horse {waits['horse_wait']:.0f}, postgres {waits['postgres_wait']:.0f}, "
                  f"emulator {waits['emulator_wait']:.0f}")
            print(f"          {'':14s} {loop_pace(waits)}")
    if "real" in results and "padded" in results:
        # Per round, so that both figures of a ratio come from the same stretch of the machine's load.
        for key in "cd":
            ratios = [real[f"{key}_mbps"] / padded[f"{key}_mbps"]
                      for real, padded in zip(results["real"], results["padded"], strict=True)]
            print(f"  real / padded MB/s, ({key}): {statistics.median(ratios):.2f} (rounds: "
                  f"{', '.join(f'{ratio:.2f}' for ratio in ratios)}; target >= 0.8 for (d))")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="messages to publish (default 20,000)")
    parser.add_argument("--size", type=int, default=1000, help="approximate message size in bytes (default 1,000)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--database-url", help="PostgreSQL server URL; a fresh database is created on it")
    parser.add_argument("--scale-out", action="store_true",
                        help="instead: 1, 2 and 4 workers sharing one subscription (Task.streams), in each mode")
    parser.add_argument("--workers", default="1,2,4", help="scale-out: worker counts (default 1,2,4)")
    parser.add_argument("--modes", default="streaming,batch", help="scale-out: pull modes")
    parser.add_argument("--streaming-count", type=int, default=20_000, help="scale-out: messages per streaming run")
    parser.add_argument("--batch-count", type=int, default=60_000, help="scale-out: messages per batch run")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (scale-out: runs per setting); medians reported")
    parser.add_argument("--warmup", type=int, default=0,
                        help="rounds run first and not counted, so that the emulator's JIT compiler has done most of "
                             "its work (it compiles for minutes, and a cold emulator slows (b) most)")
    parser.add_argument("--corpus", choices=["padded", "real", "both"], default="padded",
                        help="padded: Cloud Build notifications padded with x to --size (the default); real: the "
                             "realistic corpus of bench/corpus.py; both: side by side")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="pubsub-bench-"))
    emulator = PubSubEmulator(log_path=str(workdir / "emulator.log")).start()
    redis = RedisServer().start()
    print(f"emulator pid {emulator.process.pid}, redis-server pid {redis.process.pid} (each its own process group; "
          f"stopped when this bench exits)", flush=True)
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    database_url, drop_database = prepare_database(args.database, args.database_url, workdir)
    try:
        if args.scale_out:
            print(f"scale-out on {args.database}; about {args.size:,}-byte messages; logs in {workdir}", flush=True)
            scale_out(args, emulator, redis, database_url, workdir)
            return 0
        compare(args, emulator, redis, database_url, workdir)
    finally:
        drop_database()
        redis.stop()
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
