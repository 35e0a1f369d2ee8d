"""Server time of a 10 MB message's detail page: the first 256 KB rendered, the rest on request.

    .venv/bin/python bench/detail.py
    .venv/bin/python bench/detail.py --repeat 9 --megabytes 10

In one process, against a temporary SQLite file: stores a JSON message, a plain-text one and a
binary one of --megabytes each, then GETs /useritems/<id> through Flask's test client (so the
figure is the server's time: the query, the rendering and the template, no network and no
browser) and prints the median of --repeat requests for each, with the page's size. The
"load all" variant (?all=1) is timed too, for comparison. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SECRET_KEY", "bench-detail")

from app import create_app  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import User, UserItem  # noqa: E402
from config import Config  # noqa: E402


def messages(megabytes: int) -> dict[str, tuple[str | None, bytes | None]]:
    size = megabytes * 1024 * 1024
    record = {"id": 0, "name": "build step", "status": "SUCCESS", "tags": ["a", "b"], "ok": True}
    items, length = [], 2
    while length < size:
        record = {**record, "id": len(items)}
        encoded = json.dumps(record)
        items.append(record)
        length += len(encoded) + 2
    text_lines = "\n".join(f"line {number}: the quick brown fox jumps over the lazy dog" for number in
                           range(size // 56))
    return {
        "json": (json.dumps(items), None),
        "text": (text_lines, None),
        "binary": (None, bytes(range(256)) * (size // 256)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="requests per figure (the median is printed)")
    parser.add_argument("--megabytes", type=int, default=10, help="size of each message")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        config = type("BenchConfig", (Config,), {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{directory}/bench.db", "WTF_CSRF_ENABLED": False,
            "ADMIN_PASSWORD": None,
        })
        app = create_app(config)
        now = datetime.now(UTC)
        with app.app_context():
            db.create_all()
            user = User(username="bench", email="bench@example.com")
            user.set_password("bench-password-1")
            db.session.add(user)
            db.session.flush()
            ids = {}
            for kind, (text, raw) in messages(args.megabytes).items():
                size = len(raw) if raw is not None else len(text.encode("utf-8"))
                item = UserItem(user_id=user.id, subscription="bench-sub", message_id=f"bench-{kind}",
                                publish_time=now, received_at=now, data_text=text, data_bytes=raw,
                                is_json=kind == "json", attributes_json=json.dumps({"kind": kind}), size=size)
                db.session.add(item)
                db.session.flush()
                ids[kind] = (item.id, size)
            db.session.commit()

        client = app.test_client()
        signed_in = client.post("/index", data={"username": "bench", "password": "bench-password-1"})
        assert signed_in.status_code == 302, f"sign-in failed: {signed_in.status_code}"
        print(f"bench/detail.py: {args.repeat} requests per figure, {args.megabytes} MB messages, "
              f"SQLite, in-process test client")
        for kind, (item_id, size) in ids.items():
            for label, query in (("first 256 KB", ""), ("load all", "?all=1")):
                timings, page_bytes = [], 0
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    response = client.get(f"/useritems/{item_id}{query}")
                    timings.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.status_code
                    page_bytes = len(response.data)
                median_ms, low_ms, high_ms = (statistics.median(timings) * 1000, min(timings) * 1000,
                                              max(timings) * 1000)
                print(f"  {kind:6s} {size / 1e6:5.1f} MB, {label:12s}: median {median_ms:7.1f} ms "
                      f"(min {low_ms:7.1f}, max {high_ms:7.1f}), page {page_bytes / 1e6:5.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
