"""Alert delivery latency: from the commit of a matching message to the webhook receiver.

    .venv/bin/python bench/alerts_latency.py --count 200 --rate 20

On a fresh PostgreSQL database, its own emulator and Redis, with the Procfile's worker command:
one rule (`attributes.status = "FAILURE"`) posts to a receiver thread in this process; a task
polls the subscription while messages are published at --rate per second. Two set-ups:

  - 1 worker: it is busy polling, so its courier thread delivers (app.worker.AlertCourier);
  - 2 workers: the second is idle and takes the delivery jobs from gcpubsub-alerts.

The latency is the receiver's clock at arrival minus Alert.created_at, written in the
transaction that stores the message (its commit follows within milliseconds). The rate limit
is lifted (ALERT_MAX_PER_MINUTE) so that every firing is a single delivery. Not run in CI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ["ALERT_ALLOW_PRIVATE_TARGETS"] = "1"  # the receiver is on loopback; before config.py is imported

import sqlalchemy as sa  # noqa: E402
from stack import (  # noqa: E402
    FreshDatabase,
    PubSubEmulator,
    RedisServer,
    app_env,
    create_topic_and_subscription,
    emulator_and_redis,
    start_procfile_process,
    stop,
)

from helpers.services import wait_until  # noqa: E402

PROJECT = "bench-project"  # as stack.app_env sets GCP_PROJECT_ID


class Receiver:
    """Records when each delivery id first arrives."""

    def __init__(self):
        self.arrivals: dict[int, float] = {}
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrivals.setdefault(int(self.headers["X-PubSub-Monitor-Delivery"]), time.time())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def run(workers: int, count: int, rate: float, database_url: str, redis: RedisServer, emulator: PubSubEmulator,
        workdir: Path) -> list[float]:
    from google.cloud import pubsub_v1

    from app import create_app, polling
    from app.alerts import create_rule
    from app.extensions import db
    from app.models import Alert, Notification, Subscription, Task, User
    from config import Config

    suffix = f"w{workers}-{int(time.time())}"
    topic, subscription = create_topic_and_subscription(PROJECT, f"latency-{suffix}", f"latency-{suffix}",
                                                        ack_deadline_seconds=30)
    publisher = pubsub_v1.PublisherClient()
    receiver = Receiver()
    settings = {"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis.url, "GCP_PROJECT_ID": PROJECT,
                "PUBSUB_EMULATOR_HOST": emulator.host, "SECRET_KEY": "bench", "TESTING": True}
    app = create_app(type("BenchConfig", (Config,), settings))
    env = app_env(database_url, redis.url, PUBSUB_EMULATOR_HOST=emulator.host,
                  ALERT_ALLOW_PRIVATE_TARGETS="1", ALERT_MAX_PER_MINUTE="1000000")
    processes = [start_procfile_process("worker", env, workdir / f"worker-{suffix}-{number}.log")
                 for number in range(workers)]
    try:
        with app.app_context():
            user = User(username=f"latency-{suffix}", email=f"latency-{suffix}@example.com")
            db.session.add(user)
            db.session.flush()
            db.session.add(Subscription(user_id=user.id, name=subscription))
            rule = create_rule(user, "bench", 'attributes.status = "FAILURE"', receiver.url)
            db.session.commit()
            rule_id, user_id = rule.id, user.id
            task_id = polling.launch(user, subscription).id

            def polling_started():
                note = db.session.scalar(sa.select(Notification).where(Notification.user_id == user_id))
                db.session.rollback()
                return note is not None

            wait_until(polling_started, 120, 0.1, "the polling job to start")
            interval = 1.0 / rate
            started = time.monotonic()
            for number in range(count):
                publisher.publish(topic, b'{"status": "FAILURE"}', status="FAILURE", n=str(number)).result(60)
                time.sleep(max(0.0, started + (number + 1) * interval - time.monotonic()))
            wait_until(lambda: len(receiver.arrivals) >= count, 120, 0.2, f"{count} deliveries")
            rows = db.session.execute(
                sa.select(Alert.id, Alert.created_at, Alert.delivered_at).where(Alert.rule_id == rule_id)).all()
            created = {alert_id: moment for alert_id, moment, _ in rows}
            in_database = [(delivered - moment).total_seconds() for _, moment, delivered in rows if delivered]
            print(f"  (Alert.delivered_at - created_at: p50 {statistics.median(in_database) * 1000:.0f} ms)")
            db.session.execute(sa.update(Task).where(Task.id == task_id).values(complete=True))
            db.session.commit()
        return [receiver.arrivals[alert_id] - moment.replace(tzinfo=moment.tzinfo or UTC).timestamp()
                for alert_id, moment in created.items() if alert_id in receiver.arrivals]
    finally:
        for process in processes:
            stop(process)
        receiver.server.shutdown()
        with app.app_context():
            db.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="matching messages per set-up (default 200)")
    parser.add_argument("--rate", type=float, default=20, help="messages published per second (default 20)")
    parser.add_argument("--database-url", help="PostgreSQL server URL; a fresh database is created on it")
    parser.add_argument("--workers", default="1,2", help="set-ups: worker counts (default 1,2)")
    args = parser.parse_args(argv)
    with emulator_and_redis("pubsub-alerts-latency-") as (workdir, emulator, redis):
        database = FreshDatabase(args.database_url)
        try:
            print(f"{args.count} matching messages at {args.rate:g}/s per set-up; logs in {workdir}", flush=True)
            for workers in (int(value) for value in args.workers.split(",")):
                latencies = run(workers, args.count, args.rate, database.url, redis, emulator, workdir)
                how = "busy polling: its courier delivers" if workers == 1 else "an idle one takes the jobs"
                print(f"{workers} worker(s) ({how}): {len(latencies)} deliveries, commit to receiver "
                      f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
                      f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms",
                      flush=True)
        finally:
            database.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
