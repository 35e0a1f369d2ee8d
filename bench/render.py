"""What rendering a list row costs: Pygments against app/jsonhtml.py, and a whole page of rows.

    .venv/bin/python bench/render.py
    .venv/bin/python bench/render.py --repeat 9 --rows 50

In one process, with no database or server: times json.dumps(indent=2) + pygments.highlight
against highlight_value for a Cloud Build message (about 600 bytes, as bench/web.py stores) and
for its two-key attribute map, then renders a page of --rows rows through render_item_row
with an empty row cache (as an infinite-scroll page of history nobody has opened yet) and with
a full one. Each figure is the median of --repeat runs; the ratios are from the same runs.
Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SECRET_KEY", "bench-render")

from pygments import highlight  # noqa: E402
from web import item_lines  # noqa: E402

from app import create_app  # noqa: E402
from app.items import render_item_row, rendered_rows  # noqa: E402
from app.jsonhtml import highlight_value  # noqa: E402
from app.models import UserItem  # noqa: E402


def per_call_ms(function, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=9, help="runs per figure (the median is printed)")
    parser.add_argument("--calls", type=int, default=2000, help="highlight calls per run")
    parser.add_argument("--rows", type=int, default=50, help="rows per page (ITEMS_PER_PAGE is 50)")
    args = parser.parse_args(argv)

    app = create_app()
    lines = [line.split("\t") for line in item_lines([1], args.rows)]
    now = datetime.now(UTC)
    items = [(UserItem(id=index + 1, user_id=1, subscription=fields[1], message_id=fields[2], publish_time=now,
                       received_at=now, data_text=fields[5], is_json=True, attributes_json=fields[8],
                       size=int(fields[11])), fields[5], None) for index, fields in enumerate(lines)]
    message, attributes = json.loads(lines[0][5]), json.loads(lines[0][8])
    print(f"bench/render.py: {args.repeat} runs; message {len(lines[0][5])} bytes, attributes {attributes}")

    with app.test_request_context("/useritems"):
        lexer, formatter = app.json_lexer, app.html_formatter
        for label, value, sort_keys in (("message", message, False), ("attributes", attributes, True)):
            def pygments_path(value=value, sort_keys=sort_keys):
                return highlight(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=sort_keys), lexer,
                                 formatter)

            def one_pass(value=value, sort_keys=sort_keys):
                return highlight_value(value, sort_keys=sort_keys)

            assert one_pass() == pygments_path()
            slow, fast = [], []
            for _ in range(args.repeat):  # interleaved, so a change in the machine's load falls on both
                slow.append(per_call_ms(pygments_path, args.calls))
                fast.append(per_call_ms(one_pass, args.calls))
            print(f"  {label:10s}: json.dumps(indent=2) + pygments.highlight {statistics.median(slow) * 1000:6.1f} us, "
                  f"highlight_value {statistics.median(fast) * 1000:6.1f} us, "
                  f"ratio {statistics.median(slow) / statistics.median(fast):.2f}x")

        cache = rendered_rows()
        cold, warm = [], []
        for _ in range(args.repeat):
            cache.rows.clear()
            cache.bytes = 0
            started = time.perf_counter()
            page = [render_item_row(*row) for row in items]
            cold.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            again = [render_item_row(*row) for row in items]
            warm.append((time.perf_counter() - started) * 1000)
            assert page == again
        print(f"  page of {args.rows} rows: unseen {statistics.median(cold):.1f} ms "
              f"({statistics.median(cold) / args.rows * 1000:.0f} us a row), "
              f"from the row cache {statistics.median(warm):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
