.PHONY: run test lint publish shell flask admin-password screenshots

PYTHON := .venv/bin/python
# Worker processes `make run` starts: one per subscription polled at the same time.
export WORKERS ?= 2
# Arguments for `make publish` and `make flask`, e.g. make publish ARGS="--count 3".
ARGS ?=

# Install everything and run the app locally: SQLite, the bundled Redis, the Pub/Sub emulator.
# A plain command, which make runs without a shell: on Ctrl-C no shell dies of SIGINT, so make
# prints no error line once the stack has stopped.
run:
	@bash helpers/run.sh

# Install everything and run the whole test suite, on SQLite and on PostgreSQL.
test:
	bash helpers/test.sh

lint:
	.venv/bin/ruff check .

# From a second terminal while `make run` runs (they read the stack's settings from .run/env).
publish: .venv
	@$(PYTHON) helpers/publish.py $(ARGS)

shell: .venv
	@$(PYTHON) -m helpers.devstack flask shell

flask: .venv
	@$(PYTHON) -m helpers.devstack flask $(ARGS)

# Set a new random password for the admin and print it.
admin-password: .venv
	@$(PYTHON) -m helpers.devstack admin-password

# Refresh the README's screenshots from a running `make run`.
screenshots: .venv
	@$(PYTHON) helpers/screenshots.py

.venv:
	@echo "No .venv yet: run 'make run' (or 'make test') first; it installs everything." >&2; exit 1
