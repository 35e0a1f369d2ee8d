#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite on SQLite and again on PostgreSQL.
# Usage: bash helpers/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source helpers/common.sh

install_python_packages
ensure_chromium
pg_url=$(ensure_postgres)

echo "==> ruff"
.venv/bin/ruff check .

mkdir -p test-artifacts
echo "==> pytest on SQLite"
TEST_DATABASE_URL= .venv/bin/python -m pytest --durations=15 "$@"
echo "==> pytest on PostgreSQL ($pg_url)"
TEST_DATABASE_URL="$pg_url" .venv/bin/python -m pytest --durations=15 "$@"
echo "==> all tests passed on SQLite and PostgreSQL"
