import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from tests.conftest import ROOT, drop_schema, service_env


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
