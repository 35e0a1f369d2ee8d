import subprocess
import sys

import pytest

from config import normalise_database_url
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg2://u:p@h:5432/db"),
        ("postgresql://u:p@h/db", "postgresql+psycopg2://u:p@h/db"),
        ("postgresql+psycopg2://u:p@h/db", "postgresql+psycopg2://u:p@h/db"),
        ("sqlite:///app.db", "sqlite:///app.db"),
    ],
)
def test_database_url_is_normalised_to_psycopg2(given, expected):
    assert normalise_database_url(given) == expected


def test_sqlite_runs_in_wal_mode(app):
    import sqlalchemy as sa

    from app.extensions import db

    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            pytest.skip("SQLite only")
        with db.engine.connect() as connection:
            assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"


def test_app_refuses_to_start_without_secret_key_outside_debug():
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    result = subprocess.run(
        [sys.executable, "-c", "import gcpubsub"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
