# Shared steps for helpers/run.sh and helpers/test.sh. Sourced, not run.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Pass --quiet to keep pipenv's progress off the console (errors still show).
install_python_packages() {
  echo "==> installing Python packages (pipenv, from Pipfile.lock; the first time takes a few minutes)"
  if ! python3 -m pipenv --version >/dev/null 2>&1; then
    python3 -m pip install --quiet --user pipenv || python3 -m pip install --quiet pipenv
  fi
  PIPENV_VENV_IN_PROJECT=1 PIPENV_YES=1 python3 -m pipenv sync --dev "$@"
}

ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then return; fi
  echo "==> installing Debian's chromium for the browser tests"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

# Prints the URL of a PostgreSQL server the tests may create databases on.
ensure_postgres() {
  if [ -n "${TEST_POSTGRES_URL:-}" ]; then echo "$TEST_POSTGRES_URL"; return; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
    echo "==> installing PostgreSQL" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  if ! pg_isready -q -h localhost 2>/dev/null; then
    echo "==> starting PostgreSQL" >&2
    as_root service postgresql start >&2
    for _ in $(seq 1 30); do pg_isready -q -h localhost && break; sleep 1; done
  fi
  as_root su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='pubsub'\"" | grep -q 1 ||
    as_root su postgres -c "psql -q -c \"CREATE ROLE pubsub LOGIN CREATEDB PASSWORD 'pubsub'\"" >&2
  echo "postgresql://pubsub:pubsub@localhost:5432/postgres"
}
