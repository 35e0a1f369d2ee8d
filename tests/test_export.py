"""Exports: exact JSON Lines and CSV, a 20,000-message replay, and flat memory over 200,000 rows."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import random
import re
import threading
import time
import uuid

import pytest
import requests
import sqlalchemy as sa

from app.extensions import db
from helpers.services import create_topic_and_subscription
from tests.bulk import insert_rows, item_row
from tests.conftest import ARTIFACTS, TEST_PASSWORD, TEST_PROJECT, create_user
from tests.test_admin import pull_all
from tests.test_security_gunicorn import Gunicorn

ODD_PAYLOADS = [
    ("plain text", {}),
    ('{"json": ["with", "nested", {"values": 1.5e300}]}', {"kind": "json"}),
    ("tabs\tnewlines\n\r\nback\\slashes \"quotes\" and \u2603 \U0001f600", {"k": "v\nwith newline", "": "empty key"}),
    (b"\x00\x01\x02\xff\xfe binary \xc3\x28", {"binary": "yes"}),
    (b"", {"only": "attributes"}),
    ("=cmd|' /C calc'!A0,\"csv\"", {"csv": "a,b;c"}),
]


def export(client, kind: str, **query) -> str:
    response = client.get(f"/explore/export.{kind}", query_string=query)
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    return response.get_data(as_text=True)


def expected_data_field(raw: bytes) -> tuple[str, str]:
    """The `data` and `data_encoding` an export must write for these bytes, worked out here rather
    than with the app's decoder: UTF-8 text as it is, anything else (or text with NUL) as base64."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return base64.b64encode(raw).decode("ascii"), "base64"
    return text, "utf-8"


def test_exports_hold_data_and_attributes_exactly(app, client, auth):
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    insert_rows(app, [item_row(alice, data, attributes, ordering_key="ok" if index % 2 else "",
                               message_id=f"m{index}") for index, (data, attributes) in enumerate(ODD_PAYLOADS)])
    insert_rows(app, [item_row(bob, "bob's", {}, message_id="bob")])
    auth.login("alice")

    records = [json.loads(line) for line in export(client, "jsonl").splitlines()]
    assert [r["message_id"] for r in records] == [f"m{i}" for i in range(len(ODD_PAYLOADS))]
    for record, (data, attributes) in zip(records, ODD_PAYLOADS, strict=True):
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        assert (record["data"], record["data_encoding"]) == expected_data_field(raw), record["message_id"]
        assert record["attributes"] == attributes
        assert record["publish_time"].endswith("Z")

    rows = list(csv.DictReader(io.StringIO(export(client, "csv"), newline="")))
    assert [row["message_id"] for row in rows] == [f"m{i}" for i in range(len(ODD_PAYLOADS))]
    for row, (data, attributes) in zip(rows, ODD_PAYLOADS, strict=True):
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        data_field, encoding = expected_data_field(raw)
        # CSV is for spreadsheets: a text cell that would start a formula carries a ' in front.
        if encoding == "utf-8" and data_field[:1] in ("=", "+", "-", "@", "\t", "\r"):
            data_field = "'" + data_field
        assert (row["data"], row["data_encoding"]) == (data_field, encoding), row["message_id"]
        assert json.loads(row["attributes"]) == attributes
    # The filter applies to the export.
    filtered = export(client, "jsonl", attr="binary=yes").splitlines()
    assert [json.loads(line)["message_id"] for line in filtered] == ["m3"]


def sample_messages(count: int, seed: int = 8) -> list[tuple[bytes, dict, str]]:
    generator = random.Random(seed)
    messages = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            data = json.dumps({"n": index, "status": generator.choice(["SUCCESS", "FAILURE"])}).encode()
        elif kind == 1:
            data = generator.randbytes(generator.randint(1, 300))
        elif kind == 2:
            data = f"text {index} \u00e9\u2603\t\n\\ \"".encode()
        else:
            data = bytes([0]) + str(index).encode()
        attributes = {"index": str(index), "group": str(index % 7), "odd": "' OR 1=1 --\n\u2603"}
        ordering_key = f"key-{index % 5}" if index % 3 == 0 else ""
        messages.append((data, attributes, ordering_key))
    return messages


def fingerprint(data: bytes, attributes: dict, ordering_key: str) -> tuple:
    return data, tuple(sorted(attributes.items())), ordering_key


def test_csv_cells_that_would_start_a_formula_get_a_quote_and_jsonl_stays_exact(app, client, auth):
    alice = create_user(app, "alice")
    starts = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"]
    insert_rows(app, [item_row(alice, text, {"k": text}, ordering_key=text, message_id=f"{text}-id")
                      for text in starts])
    auth.login("alice")
    rows = list(csv.DictReader(io.StringIO(export(client, "csv"), newline="")))
    assert [row["data"] for row in rows] == ["'" + text for text in starts]
    assert [row["ordering_key"] for row in rows] == ["'" + text for text in starts]
    assert [row["message_id"] for row in rows] == [f"'{text}-id" for text in starts]
    records = [json.loads(line) for line in export(client, "jsonl").splitlines()]
    assert [record["data"] for record in records] == starts
    assert [record["attributes"] for record in records] == [{"k": text} for text in starts]


def test_binary_data_that_would_start_a_formula_still_decodes_from_csv(app, client, auth):
    alice = create_user(app, "alice")
    raw = b"\xfb\xff\xfe binary"  # base64 "+//+..."
    insert_rows(app, [item_row(alice, raw, {})])
    auth.login("alice")
    [row] = csv.DictReader(io.StringIO(export(client, "csv"), newline=""))
    # A spreadsheet's reader drops the leading ' and decodes the rest: the bytes are all there.
    assert row["data"].startswith("'+") and row["data_encoding"] == "base64"
    assert base64.b64decode(row["data"][1:]) == raw


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_export_fetches_and_flushes_by_bytes_not_rows(app, client, auth, monkeypatch, kind):
    """With FLUSH_BYTES at 1 KB, 40 messages of 600 bytes arrive in about 20 chunks (not one chunk
    per 1,000 rows), and the database hands over about 1 KB of data per query."""
    from app.explore import export as export_module

    monkeypatch.setattr(export_module, "FLUSH_BYTES", 1024)
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    insert_rows(app, [item_row(alice, "x" * 600, {}, message_id=f"m{index:02}") for index in range(40)])
    insert_rows(app, [item_row(bob, "y" * 600, {}) for _ in range(5)])
    data_queries: list[str] = []

    def count_rows(_connection, clauseelement, *_args):
        if "data_text" in str(clauseelement):
            data_queries.append(str(clauseelement))

    auth.login("alice")
    with app.app_context():
        sa.event.listen(db.engine, "after_execute", count_rows)
    try:
        with client.get(f"/explore/export.{kind}") as response:
            assert response.status_code == 200
            chunks = list(response.response)
    finally:
        with app.app_context():
            sa.event.remove(db.engine, "after_execute", count_rows)
    body = b"".join(chunk if isinstance(chunk, bytes) else chunk.encode() for chunk in chunks)
    assert body.count(b"x" * 600) == 40 and b"y" * 600 not in body
    assert 15 <= len(chunks) <= 45, len(chunks)
    # The 40 rows came in some 20 queries of about 1 KB each, not in one of all 40.
    assert len(data_queries) >= 15, len(data_queries)


def test_jsonl_export_of_20000_messages_replays_byte_identically(app, client, auth, emulator, runner,
                                                                  require_postgres, tmp_path):
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host
    alice = create_user(app, "alice")
    messages = sample_messages(20_000)
    insert_rows(app, (item_row(alice, data, attributes, ordering_key=key) for data, attributes, key in messages))
    auth.login("alice")
    export_file = tmp_path / "export.jsonl"
    response = client.get("/explore/export.jsonl")
    with open(export_file, "wb") as out:
        for chunk in response.response:
            out.write(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8"))

    # A fresh topic and subscription, then `flask replay` as an operator would run it.
    suffix = uuid.uuid4().hex[:10]
    _, subscription = create_topic_and_subscription(TEST_PROJECT, f"replay-{suffix}", f"replay-{suffix}",
                                                    ack_deadline_seconds=60)
    started = time.monotonic()
    result = runner.invoke(args=["replay", str(export_file), "--topic", f"replay-{suffix}"])
    assert result.exit_code == 0, result.output
    assert "Published 20000 messages" in result.output
    received = pull_all(subscription, 20_000, timeout=120)
    elapsed = time.monotonic() - started
    got = sorted(fingerprint(m.data, dict(m.attributes), m.ordering_key) for m in received)
    want = sorted(fingerprint(*message) for message in messages)
    assert len(got) == 20_000
    assert got == want
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "export-replay.txt").write_text(
        f"20000 messages exported ({export_file.stat().st_size} bytes of JSON Lines), replayed with flask replay "
        f"and pulled back in {elapsed:.1f}s: {len(got)} received, byte-identical data, attributes and ordering keys\n")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_exporting_200000_rows_keeps_gunicorn_memory_growth_under_50_mb(app, require_postgres, tmp_path):
    alice = create_user(app, "alice")
    with app.app_context():
        # Server-side generation: 200,000 rows of about 300 bytes each in a second or two.
        db.session.execute(sa.text(
            "INSERT INTO user_item (user_id, subscription, message_id, publish_time, received_at, data_text, "
            "is_json, attributes_json, size) "
            "SELECT :user_id, 'monitor-sub', 'm' || g, now(), now(), "
            "'{\"n\": ' || g || ', \"pad\": \"' || repeat('x', 280) || '\"}', true, "
            "'{\"n\": \"' || g || '\"}', 300 FROM generate_series(1, :count) AS g"),
            {"user_id": alice, "count": 200_000})
        db.session.commit()
    server = Gunicorn(app, tmp_path / "gunicorn.log", workers=1).start()
    try:
        [pid] = server.worker_pids()
        session = requests.Session()
        token = re.search(r'<meta name="csrf-token" content="([^"]+)"',
                                        session.get(server.url + "/index", timeout=30).text).group(1)
        signed_in = session.post(server.url + "/index", timeout=30, allow_redirects=False,
                                 data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token})
        assert signed_in.status_code == 302
        # Warm up: the first export loads the modules and fills the connection pool.
        warm = session.get(server.url + "/explore/export.jsonl", params={"q": "\"n\": 1999"}, timeout=60)
        assert warm.status_code == 200 and warm.text
        baseline = rss_kib(pid)
        peak = baseline
        streaming = threading.Event()
        streaming.set()

        def sample():
            nonlocal peak
            while streaming.is_set():
                peak = max(peak, rss_kib(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        lines = size = 0
        started = time.monotonic()
        with session.get(server.url + "/explore/export.jsonl", stream=True, timeout=120) as response:
            assert response.status_code == 200
            for chunk in response.iter_content(1 << 16):
                lines += chunk.count(b"\n")
                size += len(chunk)
        elapsed = time.monotonic() - started
        streaming.clear()
        sampler.join(5)
        peak = max(peak, rss_kib(pid), rss_kib(pid, "VmHWM"))
        growth_mb = (peak - baseline) / 1024
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "export-memory.txt").write_text(
            f"200000 rows, {size / 1e6:.1f} MB of JSON Lines in {elapsed:.1f}s through gunicorn "
            f"(pid {pid}); VmRSS before {baseline / 1024:.1f} MB, peak {peak / 1024:.1f} MB, "
            f"growth {growth_mb:.1f} MB\n")
        assert lines == 200_000
        assert growth_mb < 50, f"the export grew the worker by {growth_mb:.1f} MB"
    finally:
        server.stop()
    assert os.path.exists(tmp_path / "gunicorn.log")
