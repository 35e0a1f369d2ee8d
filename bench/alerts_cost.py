"""What alert rules cost the ingest rate: the app's batch mode with no rule, then with 10 active rules.

    .venv/bin/python bench/alerts_cost.py --database postgresql --database-url postgresql://pubsub:pubsub@localhost/postgres

It reuses bench/ingest.py: its emulator and Redis set-up, its publisher of Cloud Build-style
messages and its (d) measurement (the real polling job in a real `rq worker`, batch mode,
timed from the "Polling" notification to the last row committed). One topic gets 2 x --rounds
fresh subscriptions; the runs alternate in ABBA order (no rules, rules, rules, no rules, ...)
so that a machine that slows down, or a run that warms up the next, favours neither side. The rules are made with
app.alerts.create_rule just before the task is launched, for the task's own user:

  - 8 on attributes that Cloud Build messages carry but never with these values
    (`attributes.status = "NO-SUCH-STATUS-n"`), the common case: rules that rarely fire;
  - 1 on the data (`data.status = "NO-SUCH-STATUS"`), which parses the JSON of every message;
  - 1 that fires on about 1 message in 7 (`attributes.status = "TIMEOUT"`), so alert rows,
    notifications and delivery jobs are part of the cost too (its webhook is never reached:
    the worker here serves only the polling queue).

It prints each run's rate and the ratio with/without (issue 18's target: >= 0.9). Not run in CI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
# The rules' webhook is on loopback; set before config.py is imported.
os.environ["ALERT_ALLOW_PRIVATE_TARGETS"] = "1"

import ingest  # noqa: E402
from stack import emulator_and_redis  # noqa: E402

RULES = [f'attributes.status = "NO-SUCH-STATUS-{number}"' for number in range(8)] + [
    'data.status = "NO-SUCH-STATUS"',
    'attributes.status = "TIMEOUT"',
]


def with_rules(conditions: list[str]):
    """Make app.polling.launch add these rules for the task's user first (ingest.app_mode calls it)."""
    from app import polling
    from app.alerts import create_rule
    from app.extensions import db

    original = polling.launch

    def launch(user, subscription, *args, **kwargs):
        for number, condition in enumerate(conditions):
            create_rule(user, f"bench rule {number}", condition, "http://127.0.0.1:9/hook")
        db.session.commit()
        return original(user, subscription, *args, **kwargs)

    polling.launch = launch
    return original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="messages per run (default 20,000)")
    parser.add_argument("--size", type=int, default=1000, help="approximate message size in bytes (default 1,000)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, without and with rules (default 2)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--database-url", help="PostgreSQL server URL; a fresh database is created on it")
    args = parser.parse_args(argv)

    with emulator_and_redis("pubsub-alerts-bench-") as (workdir, emulator, redis):
        database_url, drop_database = ingest.prepare_database(args.database, args.database_url, workdir)
        try:
            from google.cloud import pubsub_v1

            from app import polling
            from app.pubsub import make_subscriber_client

            publisher = pubsub_v1.PublisherClient()
            client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
            topic_path = publisher.topic_path(ingest.PROJECT, "alerts-bench-topic")
            publisher.create_topic(name=topic_path)
            # ABBA order: each side goes first in every other round, so a warm-up or a drift favours neither.
            runs = [(round_number, rules) for round_number in range(args.rounds)
                    for rules in ((0, len(RULES)) if round_number % 2 == 0 else (len(RULES), 0))]
            for round_number, rules in runs:
                client.create_subscription(name=client.subscription_path(ingest.PROJECT, f"ab-{round_number}-{rules}"),
                                           topic=topic_path, ack_deadline_seconds=60)
            print(f"database: {args.database}; {args.count:,} messages of about {args.size:,} bytes per run; "
                  f"logs in {workdir}", flush=True)
            messages = ingest.padded_corpus(args.count, ingest.PROJECT, args.size)
            ingest.publish(emulator.host, "alerts-bench-topic", messages)
            rates: dict[int, list[float]] = {0: [], len(RULES): []}
            for round_number, rules in runs:
                original = with_rules(RULES) if rules else None
                try:
                    # Each run has its own user (app_mode names it after its queue), so its rules are its own.
                    seconds = ingest.app_mode("batch", database_url, redis, emulator, f"ab-{round_number}-{rules}",
                                              args.count, workdir)["seconds"]
                finally:
                    if original is not None:
                        polling.launch = original
                rates[rules].append(args.count / seconds)
                print(f"round {round_number + 1}, {rules:2d} rules: {seconds:6.2f} s  "
                      f"{args.count / seconds:9,.0f} msg/s", flush=True)
            without, with_ = statistics.median(rates[0]), statistics.median(rates[len(RULES)])
            print(f"median without rules {without:,.0f} msg/s, with {len(RULES)} rules {with_:,.0f} msg/s: "
                  f"ratio {with_ / without:.2f} (target >= 0.9)")
            client.close()
        finally:
            drop_database()
    return 0


if __name__ == "__main__":
    sys.exit(main())
