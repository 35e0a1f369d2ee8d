.PHONY: run test lint

# Install everything and run the app locally: SQLite, the bundled Redis, the Pub/Sub emulator.
run:
	bash helpers/run.sh

# Install everything and run the whole test suite, on SQLite and on PostgreSQL.
test:
	bash helpers/test.sh

lint:
	.venv/bin/ruff check .
