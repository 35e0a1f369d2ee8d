#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite on SQLite and on PostgreSQL, side by side.
# Usage: bash helpers/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source helpers/common.sh

install_python_packages
ensure_chromium
pg_url=$(ensure_postgres)

echo "==> ruff"
.venv/bin/ruff check .

# The two passes run side by side: much of each is spent waiting on workers, the emulator and
# browsers, so together they take little longer than the longer one alone. Each has its own Redis,
# emulator and database (free ports, its own PostgreSQL database), and its own log, printed whole
# when it ends; a line a minute says how far each has got.
mkdir -p test-artifacts
sqlite_log=test-artifacts/pytest-sqlite.log
postgres_log=test-artifacts/pytest-postgresql.log
echo "==> pytest on SQLite and on PostgreSQL ($pg_url), side by side"
TEST_DATABASE_URL= PYTHONUNBUFFERED=1 .venv/bin/python -m pytest --durations=15 -o cache_dir=.pytest_cache/sqlite "$@" \
    > "$sqlite_log" 2>&1 &
sqlite_pid=$!
TEST_DATABASE_URL="$pg_url" PYTHONUNBUFFERED=1 .venv/bin/python -m pytest --durations=15 -o cache_dir=.pytest_cache/postgresql "$@" \
    > "$postgres_log" 2>&1 &
postgres_pid=$!
trap 'kill "$sqlite_pid" "$postgres_pid" 2>/dev/null || true' INT TERM

progress() {  # the last percentage pytest printed, or "finished"
    if kill -0 "$2" 2>/dev/null; then
        grep -o '\[ *[0-9]*%\]' "$1" | tail -n 1 | tr -d '[] ' || true
    else
        echo finished
    fi
}
started=$SECONDS
while kill -0 "$sqlite_pid" 2>/dev/null || kill -0 "$postgres_pid" 2>/dev/null; do
    for _ in $(seq 60); do
        kill -0 "$sqlite_pid" 2>/dev/null || kill -0 "$postgres_pid" 2>/dev/null || break
        sleep 1
    done
    echo "    $(( (SECONDS - started) / 60 )) min: SQLite $(progress "$sqlite_log" "$sqlite_pid")," \
         "PostgreSQL $(progress "$postgres_log" "$postgres_pid")"
done
sqlite_status=0; wait "$sqlite_pid" || sqlite_status=$?
postgres_status=0; wait "$postgres_pid" || postgres_status=$?
trap - INT TERM

echo "==> pytest on SQLite"
cat "$sqlite_log"
echo "==> pytest on PostgreSQL ($pg_url)"
cat "$postgres_log"
if [ "$sqlite_status" -ne 0 ] || [ "$postgres_status" -ne 0 ]; then
    echo "==> FAILED: SQLite pass exit status $sqlite_status, PostgreSQL pass exit status $postgres_status" >&2
    exit 1
fi
echo "==> all tests passed on SQLite and PostgreSQL"
