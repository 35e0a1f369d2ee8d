"""Log redaction time on hostile log lines: the current app/security.py against an older revision's, in one run.

    .venv/bin/python bench/redaction.py
    .venv/bin/python bench/redaction.py --before a4d1635 --repeats 21

Each input is about 8 KB, what one request's headers can put into gunicorn's access-log
line (issue 14 used `User-Agent: "password" * 1000` and a long Referer). The older
revision's redact_secrets is loaded from git (`git show REV:app/security.py`), so both
run in the same process on the same inputs. It prints the median milliseconds per call
for each (target for the current code: under 5 ms). Not run in CI.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import security  # noqa: E402

EIGHT_KB = 8 * 1024


def access_log_line(referer: str, user_agent: str) -> str:
    """A line in gunicorn's default access-log format."""
    return (f'10.0.0.7 - - [01/Dec/2026:20:00:00 +0000] "GET /index HTTP/1.1" 200 4321 '
            f'"{referer}" "{user_agent}"')


def hostile_inputs() -> dict[str, str]:
    return {
        'UA "password" * 1000, long Referer': access_log_line(
            "https://example.com/?" + "a." * 1000, "password" * 1000),
        "one 8 KB word holding password": "password" * (EIGHT_KB // 8),
        'password=" repeated (unterminated quotes)': 'password="' * (EIGHT_KB // 10),
        "password: repeated": "password:" * (EIGHT_KB // 9),
        "a. repeated, then ://": "a." * (EIGHT_KB // 2) + "://",
        "x://a: repeated, no @": "x://" + "a:" * (EIGHT_KB // 2),
        "-----BEGIN repeated": "-----BEGIN " * (EIGHT_KB // 11),
        "every pattern's words, then a. repeated": "authorization private key token :// password " + "a." * 4000,
        "every pattern's words, then a: repeated": "authorization private key token :// password " + "a:" * 4000,
        "ordinary request line": access_log_line("https://monitor.example/user/alice",
                                                 "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"),
    }


def load_revision(revision: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{revision}:app/security.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType(f"security_{revision}")
    exec(compile(source, f"{revision}:app/security.py", "exec"), module.__dict__)  # noqa: S102
    return module


def median_ms(redact, text: str, repeats: int, budget_seconds: float) -> tuple[float, int]:
    timings = []
    spent = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        redact(text)
        elapsed = time.perf_counter() - started
        timings.append(elapsed)
        spent += elapsed
        if spent > budget_seconds:
            break
    return statistics.median(timings) * 1000, len(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="a4d1635", help="the revision to compare with (default: a4d1635)")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--budget", type=float, default=10.0, help="most seconds spent per input and version")
    args = parser.parse_args()
    before = load_revision(args.before)
    print(f"median ms per redact_secrets call ({args.repeats} calls, or fewer within {args.budget:g} s)")
    print(f"{'input':<44} {'chars':>6} {args.before:>12} {'now':>10}")
    for name, text in hostile_inputs().items():
        old_ms, old_runs = median_ms(before.redact_secrets, text, args.repeats, args.budget)
        new_ms, _ = median_ms(security.redact_secrets, text, args.repeats, args.budget)
        print(f"{name:<44} {len(text):>6} {old_ms:>9.2f}{'*' if old_runs < args.repeats else ' ':<3}"
              f"{new_ms:>8.3f}")
    print("* fewer calls, to stay within the budget")


if __name__ == "__main__":
    main()
