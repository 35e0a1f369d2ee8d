"""Export memory: one JSON Lines (and CSV) export of 300 messages of 1 MB through real gunicorn.

    .venv/bin/python bench/export_memory.py
    .venv/bin/python bench/export_memory.py --messages 300 --message-mb 1 --kinds jsonl csv

It seeds a fresh PostgreSQL database (schema through the migrations) with one user and
--messages messages of --message-mb MB each, starts gunicorn as the Procfile does with one
worker process (WEB_CONCURRENCY=1), signs in, warms up with an export that matches nothing,
then streams each export to the end while sampling the worker's resident memory every
20 ms. It prints the worker's VmRSS before, the peak during the export, and the growth
(target: at most 50 MB; issue 14 measured 156 MB to 1,035 MB before the export flushed by
bytes). Not run in CI.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from stack import FreshDatabase, RedisServer, app_env, children, rss_kb, sign_in, start_web, stop
from werkzeug.security import generate_password_hash

PASSWORD = "bench-password-1"


def seed(database_url: str, messages: int, message_bytes: int) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        user_id = connection.execute(
            sa.text('INSERT INTO "user" (username, email, password_hash, is_admin) '
                    "VALUES ('bench', 'bench@localhost', :hash, false) RETURNING id"),
            {"hash": generate_password_hash(PASSWORD)},
        ).scalar_one()
        # Server-side generation, one message per statement, so this script never holds them.
        for index in range(messages):
            connection.execute(sa.text(
                "INSERT INTO user_item (user_id, subscription, message_id, publish_time, received_at, data_text, "
                "is_json, attributes_json, size) VALUES (:user_id, 'monitor-sub', :message_id, now(), now(), "
                "repeat(chr(97 + :index % 26), :size), false, '{\"n\": \"1\"}', :size)"),
                {"user_id": user_id, "message_id": f"m{index}", "index": index, "size": message_bytes})
    engine.dispose()


def measure_export(session, base_url: str, pid: int, kind: str) -> dict:
    baseline = rss_kb(pid)
    peak = baseline
    streaming = threading.Event()
    streaming.set()

    def sample() -> None:
        nonlocal peak
        while streaming.is_set():
            peak = max(peak, rss_kb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    received = 0
    started = time.monotonic()
    with session.get(f"{base_url}/explore/export.{kind}", stream=True, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(1 << 16):
            received += len(chunk)
    elapsed = time.monotonic() - started
    streaming.clear()
    sampler.join(5)
    peak = max(peak, rss_kb(pid))
    return {"kind": kind, "baseline_mb": baseline / 1024, "peak_mb": peak / 1024,
            "growth_mb": (peak - baseline) / 1024, "received_mb": received / 1e6, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--message-mb", type=float, default=1.0)
    parser.add_argument("--kinds", nargs="+", default=["jsonl", "csv"], choices=["jsonl", "csv"])
    parser.add_argument("--database-server", default=None, help="a PostgreSQL server URL (default: local)")
    args = parser.parse_args()

    database = FreshDatabase(args.database_server)
    redis = RedisServer().start()
    web = None
    try:
        seed(database.url, args.messages, int(args.message_mb * 1024 * 1024))
        log_path = Path(tempfile.mkdtemp(prefix="bench-export-")) / "web.log"
        web, base_url = start_web(app_env(database.url, redis.url, WEB_CONCURRENCY="1"), log_path)
        [worker] = children(web.pid)
        session, _token = sign_in(base_url, "bench", PASSWORD)
        # Warm up: imports, templates and the connection pool, without a row.
        session.get(f"{base_url}/explore/export.jsonl", params={"sub": "none"}, timeout=60).raise_for_status()
        print(f"{args.messages} messages of {args.message_mb:g} MB, gunicorn worker pid {worker}")
        for kind in args.kinds:
            result = measure_export(session, base_url, worker, kind)
            print(f"{result['kind']:>5}: {result['received_mb']:.0f} MB in {result['seconds']:.1f} s; worker VmRSS "
                  f"{result['baseline_mb']:.0f} MB before, {result['peak_mb']:.0f} MB peak, "
                  f"growth {result['growth_mb']:.1f} MB (target <= 50 MB)")
    finally:
        if web is not None:
            stop(web)
        redis.stop()
        database.drop()


if __name__ == "__main__":
    main()
