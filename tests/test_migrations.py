import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import COMPRESSED_COLUMNS, lz4_available
from tests.conftest import ROOT, column_compression, drop_schema, service_env


def _tables(app):
    with app.app_context():
        return set(sa.inspect(db.engine).get_table_names())


def test_upgrade_downgrade_upgrade_on_empty_database(app, runner):
    drop_schema(app)
    for args in (["db", "upgrade"], ["db", "downgrade", "base"], ["db", "upgrade"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        tables = _tables(app)
        if args[1] == "upgrade":
            assert {"user", "task", "notification", "user_item"} <= tables
        else:
            assert tables <= {"alembic_version"}


def test_migrated_schema_matches_models(app, runner):
    drop_schema(app)
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    env = service_env(app, FLASK_APP="gcpubsub.py")
    result = subprocess.run([str(Path(sys.executable).with_name("flask")), "db", "check"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout


def _compression_of_payload_columns(app) -> dict[str, str]:
    columns = column_compression(app)
    return {name: columns[name] for name in COMPRESSED_COLUMNS}


def test_postgresql_migration_compresses_payloads_with_lz4_and_downgrade_restores_the_default(
        app, runner, require_postgres):
    with app.app_context(), db.engine.connect() as connection:
        if not lz4_available(connection):
            pytest.skip("this PostgreSQL has no lz4: the migration leaves pglz")
    drop_schema(app)
    assert runner.invoke(args=["db", "upgrade", "a1e47b0c0018"]).exit_code == 0
    assert _compression_of_payload_columns(app) == dict.fromkeys(COMPRESSED_COLUMNS, "")
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert _compression_of_payload_columns(app) == dict.fromkeys(COMPRESSED_COLUMNS, "l")
    assert runner.invoke(args=["db", "downgrade", "a1e47b0c0018"]).exit_code == 0
    assert _compression_of_payload_columns(app) == dict.fromkeys(COMPRESSED_COLUMNS, "")

    # Offline (`flask db upgrade --sql`) the server's check goes into the script.
    result = runner.invoke(args=["db", "upgrade", "a1e47b0c0018:b6f3d2a9c415", "--sql"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "'lz4' = ANY(enumvals)" in result.output and "SET COMPRESSION lz4" in result.output
