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


@pytest.mark.parametrize(("raw", "whole", "expected"), [
    ("", False, 5.0), ("  ", True, 5), ("2.5", False, 2.5), (" 7 ", True, 7), ("0.1", False, 0.1),
])
def test_a_numeric_setting_reads_the_environment_or_its_default(monkeypatch, raw, whole, expected):
    from config import _number

    monkeypatch.setenv("SOME_SECONDS", raw)
    value = _number("SOME_SECONDS", 5, minimum=0.1, whole=whole)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("raw", "whole"), [
    ("-1", False), ("0", False), ("five", False), ("nan", False), ("inf", False), ("2.5", True), ("1e3", True),
    ("1" + "0" * 400, True),
])
def test_a_numeric_setting_out_of_range_or_not_a_number_is_refused_by_name(monkeypatch, raw, whole):
    from config import _number

    monkeypatch.setenv("SOME_SECONDS", raw)
    with pytest.raises(ValueError, match=rf"^SOME_SECONDS must be a {'whole ' if whole else ''}number, at least 0.1; "
                                         rf"it is '{raw}' \(unset, it is 5\)$"):
        _number("SOME_SECONDS", 5, minimum=0.1, whole=whole)


def test_the_app_does_not_start_with_a_negative_redis_timeout():
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "FLASK_DEBUG": "1", "REDIS_TIMEOUT_SECONDS": "-5"}
    result = subprocess.run(
        [sys.executable, "-c", "import gcpubsub"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "REDIS_TIMEOUT_SECONDS must be a number, at least 0.1; it is '-5'" in result.stderr
