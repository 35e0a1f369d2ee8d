"""Time the COPY text formatting of app/pubsub/writer.py against the one it replaced (issue 19).

    .venv/bin/python bench/copy_format.py [--repeat 7]

Before: `str.translate` with a one-to-two character map, taken when a regex finds a
character to escape (the reference kept in tests/test_copy_format.py, imported from there).
After: writer._text, a chain of `str.replace` (backslash first), each behind an `in` test.
Three cases, each timed `--repeat` times in this process (medians printed, with the load average):

  - one 630-character value with escapes (a log entry's JSON: quotes, newlines, a path);
  - one 1 MB payload of escaped JSON with non-ASCII text;
  - 20,000 whole rows (writer.copy_line) whose payload is escaped JSON of about 1 KB.

Both versions' output is compared first: they must be equal. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.pubsub import writer  # noqa: E402
from tests.test_copy_format import reference_copy_line, reference_text  # noqa: E402


def log_entry(index: int, message_length: int) -> str:
    trace = "\n".join(f'  File "/srv/app/handlers/h{depth}.py", line {10 + depth}, in step_{depth}'
                      for depth in range(3))
    return json.dumps({
        "insertId": f"entry-{index:08d}", "severity": "ERROR", "logName": "projects/p/logs/stderr",
        "textPayload": f'Traceback (most recent call last):\n{trace}\nValueError: bad "value" at C:\\temp\\x'
                       + " déjà vu ✓" * (message_length // 12),
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": "api"}},
    })


def timed(function, argument, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - started)
    return times


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    value = log_entry(0, 250)
    value = value[:630] if len(value) >= 630 else value + "x" * (630 - len(value))
    megabyte = ""
    while len(megabyte.encode()) < 1_000_000:
        megabyte += log_entry(len(megabyte), 2000)
    now = datetime.now(UTC)
    rows = [{"user_id": 1, "subscription": "projects/p/subscriptions/s", "message_id": str(index),
             "publish_time": now, "received_at": now, "data_text": log_entry(index, 250), "data_bytes": None,
             "is_json": True, "attributes_json": '{"logName": "projects/p/logs/stderr"}', "ordering_key": None,
             "delivery_attempt": None, "size": 1000} for index in range(20_000)]

    assert reference_text(value) == writer._text(value) and reference_text(megabyte) == writer._text(megabyte)
    assert all(reference_copy_line(row) == writer.copy_line(row) for row in rows[:200])

    cases = [
        (f"one {len(value)}-character value with escapes", reference_text, writer._text, value, 1e6, "µs"),
        (f"one {len(megabyte.encode()) / 1e6:.1f} MB payload", reference_text, writer._text, megabyte, 1e3, "ms"),
        (f"{len(rows):,} rows of escaped JSON (~{len(rows[0]['data_text'])} chars)",
         lambda batch: [reference_copy_line(row) for row in batch],
         lambda batch: [writer.copy_line(row) for row in batch], rows, 1e3, "ms"),
    ]
    print(f"COPY text formatting, medians of {args.repeat}; load {load_average()}")
    for label, before, after, argument, scale, unit in cases:
        # Interleaved, so a change in the machine's load falls on both alike.
        old_times, new_times = [], []
        for _ in range(args.repeat):
            old_times += timed(before, argument, 1)
            new_times += timed(after, argument, 1)
        old_median, new_median = statistics.median(old_times), statistics.median(new_times)
        print(f"  {label:52s} before {old_median * scale:9.1f} {unit}   after {new_median * scale:9.1f} {unit}   "
              f"x{old_median / new_median:.1f}; load {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
