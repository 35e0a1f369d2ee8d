"""Secrets: the app refuses the built-in SECRET_KEY, and logs never carry passwords or keys."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from app.security import REDACTED, REDACTION_MAX_CHARS, redact_secrets
from config import DEV_SECRET_KEY
from helpers.services import free_port
from tests.conftest import ROOT, create_user, make_config

FAKE_PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDfakefakefake0\n"
    "q8Zl3n5rR2vJ0a7TbW6kXyPzQm9cE4uH1sLdNfG0oIiVt2YwAeBxCrDsKjMnUpOq\n"
    "-----END PRIVATE KEY-----\n"
)


def fake_service_account(private_key: str = FAKE_PRIVATE_KEY) -> dict:
    return {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": private_key,
        "client_email": "monitor@test-project.iam.gserviceaccount.com",
        "client_id": "123456789012345678901",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


# --- SECRET_KEY ----------------------------------------------------------------------------------


def bare_env(tmp_path: Path, **extra) -> dict[str, str]:
    """No SECRET_KEY and no FLASK_DEBUG; set empty so a developer's .env cannot fill them in."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SECRET_KEY": "", "FLASK_DEBUG": "",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "REDIS_URL": "redis://127.0.0.1:1/0", **extra}


@pytest.mark.parametrize("secret_key", ["", DEV_SECRET_KEY])
def test_gunicorn_exits_with_a_clear_message_without_a_secret_key(tmp_path, secret_key):
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = subprocess.run(
        [gunicorn, "-w", "1", "-b", f"127.0.0.1:{free_port()}", "gcpubsub:app"],
        cwd=ROOT, env=bare_env(tmp_path, SECRET_KEY=secret_key), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set. Set SECRET_KEY to a long random value" in result.stdout + result.stderr


def test_flask_command_exits_with_a_clear_message_without_a_secret_key(tmp_path):
    flask = str(Path(sys.executable).with_name("flask"))
    result = subprocess.run([flask, "--app", "gcpubsub", "routes"], cwd=ROOT, env=bare_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stdout + result.stderr


def test_debug_mode_starts_without_a_secret_key(tmp_path):
    """The control: the refusal is about the key, not something else in the environment."""
    result = subprocess.run([sys.executable, "-c", "import gcpubsub"], cwd=ROOT,
                            env=bare_env(tmp_path, FLASK_DEBUG="1"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- log redaction -------------------------------------------------------------------------------


@pytest.fixture
def app_with_credentials(database_url, redis_server):
    from app import create_app

    credentials = fake_service_account()
    app = create_app(make_config(database_url, redis_server.url,
                                 GOOGLE_APPLICATION_CREDENTIALS=json.dumps(credentials),
                                 SECRET_KEY="a-real-looking-secret-key-5b1e9d"))
    yield app
    app.redis.close()


@pytest.fixture(autouse=True)
def loggers_enabled():
    """Alembic's fileConfig, run in-process by the migration tests, disables every existing logger."""
    disabled = [logger for logger in logging.root.manager.loggerDict.values()
                if isinstance(logger, logging.Logger) and logger.disabled]
    for logger in disabled:
        logger.disabled = False
    yield
    for logger in disabled:
        logger.disabled = True


def logged_text(caplog) -> str:
    return caplog.text + "".join(record.getMessage() for record in caplog.records)


def test_logs_never_show_the_configured_private_key_in_any_form(app_with_credentials, caplog):
    credentials = json.dumps(fake_service_account())
    key_body = FAKE_PRIVATE_KEY.splitlines()[1]
    with caplog.at_level(logging.INFO):
        app_with_credentials.logger.info("credentials: %s", credentials)
        app_with_credentials.logger.info("as dict: %r", fake_service_account())
        logging.getLogger("google.auth").warning("bad key %s", FAKE_PRIVATE_KEY)
        logging.getLogger("rq.worker").error("key line %s", key_body)
    text = logged_text(caplog)
    assert key_body not in text
    assert "BEGIN PRIVATE KEY" not in text
    assert REDACTED in text
    assert "monitor@test-project.iam.gserviceaccount.com" in text  # the rest of the line survives


def test_logs_never_show_passwords_or_url_credentials(app, caplog):
    with caplog.at_level(logging.INFO):
        app.logger.info("form %s", {"username": "alice", "password": "hunter2-secret"})
        app.logger.info("form %r", [("current_password", "old-pass-123"), ("new_password", "new-pass-456")])
        app.logger.info("query password=pw-in-query&user=alice")
        app.logger.info('json {"password": "pw-in-json", "confirm_password": "pw-confirm"}')
        app.logger.info("connecting to postgresql://pubsub:db-pass-789@db.example:5432/app")
        app.logger.warning("redis rediss://:redis-pass-000@redis.example:6379")
    text = logged_text(caplog)
    for secret in ["hunter2-secret", "old-pass-123", "new-pass-456", "pw-in-query", "pw-in-json", "pw-confirm",
                   "db-pass-789", "redis-pass-000"]:
        assert secret not in text, secret
    assert "alice" in text and "db.example:5432" in text


def test_secrets_in_exception_tracebacks_are_redacted(app_with_credentials, caplog):
    with caplog.at_level(logging.INFO):
        try:
            raise ValueError(f"could not parse {FAKE_PRIVATE_KEY} with password=open-sesame-42")
        except ValueError:
            app_with_credentials.logger.exception("Task failed")
    text = logged_text(caplog)
    assert "Task failed" in text and "ValueError" in text
    assert "open-sesame-42" not in text and "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQD" not in text


def test_the_apps_own_secret_key_is_redacted_wherever_it_appears(app_with_credentials, caplog):
    with caplog.at_level(logging.INFO):
        logging.getLogger("werkzeug").info("config dump: SECRET=%s", "a-real-looking-secret-key-5b1e9d")
    assert "a-real-looking-secret-key-5b1e9d" not in logged_text(caplog)


def test_ordinary_log_lines_are_left_alone():
    for line in ["Password changed.", "Failed sign-in for user alice from 10.0.0.1",
                 "User alice started polling monitor-sub (task abc)", "Stored 1000 messages in 0.2 s"]:
        assert redact_secrets(line) == line


# Each line with what the regular expressions before issue 14 made of it; the linear-time
# patterns must give the same.
REDACTED_AS_BEFORE = [
    ("query password=pw-in-query&user=alice", "query password=[REDACTED]&user=alice"),
    ('json {"password": "pw-in-json", "confirm_password": "pw-confirm"}',
     'json {"password": "[REDACTED]", "confirm_password": "[REDACTED]"}'),
    ("form [('current_password', 'old-pass-123'), ('new_password', 'new-pass-456')]",
     "form [('current_password', '[REDACTED]'), ('new_password', '[REDACTED]')]"),
    ("connecting to postgresql://pubsub:db-pass-789@db.example:5432/app",
     "connecting to postgresql://pubsub:[REDACTED]@db.example:5432/app"),
    ("redis rediss://:redis-pass-000@redis.example:6379", "redis rediss://:[REDACTED]@redis.example:6379"),
    ("Authorization: Bearer abc.def.ghi and more", "Authorization: Bearer [REDACTED] and more"),
    ("authorization = basic dXNlcjpwYXNz", "authorization = basic [REDACTED]"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY----- tail", "[REDACTED PRIVATE KEY] tail"),
    ("-----BEGIN PRIVATE KEY-----\\nMIIabc\\n cut off", "[REDACTED PRIVATE KEY]"),
    ('access_token=abc123 token_uri=https://oauth2.googleapis.com/token id_token: "x y"',
     'access_token=[REDACTED] token_uri=https://oauth2.googleapis.com/token id_token: "[REDACTED]"'),
    ("API_KEY='k e y' apikey=not-secret client_secret: s3cr3t;next",
     "API_KEY='[REDACTED]' apikey=not-secret client_secret: [REDACTED];next"),
    ('note="password=abc" user=password=x', 'note="password=[REDACTED]" user=password=[REDACTED]'),
    ('127.0.0.1 - - [01/Dec/2026] "GET /useritems?after=5&password=zzz HTTP/1.1" 200 12 '
     '"https://x.example/?token=abc" "Mozilla password"',
     '127.0.0.1 - - [01/Dec/2026] "GET /useritems?after=5&password=[REDACTED] HTTP/1.1" 200 12 '
     '"https://x.example/?token=[REDACTED]" "Mozilla password"'),
    ("secret:[1,2] passwd = (abc) mytoken:{x}", "secret:[REDACTED],2] passwd = [REDACTED]) mytoken:[REDACTED]}"),
    ("('password', \"dq\\\"x\")", "('password', \"[REDACTED]\")"),
]


@pytest.mark.parametrize(("line", "redacted"), REDACTED_AS_BEFORE)
def test_redaction_still_blanks_what_it_blanked_before(line, redacted):
    assert redact_secrets(line) == redacted


def test_a_password_whose_closing_quote_is_cut_off_is_still_redacted():
    assert redact_secrets('login password="hunter2-secret') == 'login password="[REDACTED]'


def test_a_long_log_message_loses_its_middle_before_redaction():
    """Redaction works on bounded input: the start and end of a huge message are kept, with the cut said."""
    text = "start password=first-secret " + "password" * 100_000 + " end token=last-secret"
    redacted = redact_secrets(text)
    assert len(redacted) < REDACTION_MAX_CHARS + 100
    assert redacted.startswith("start password=[REDACTED] ")
    assert redacted.endswith(" end token=[REDACTED]")
    assert "characters not logged" in redacted


def test_a_known_secret_across_the_cut_is_still_redacted(app_with_credentials):
    secret = "a-real-looking-secret-key-5b1e9d"
    middle = REDACTION_MAX_CHARS // 2 - len(secret) // 2
    redacted = redact_secrets("x" * middle + secret + "y" * REDACTION_MAX_CHARS)
    assert secret[:8] not in redacted and secret[-8:] not in redacted


def test_failed_sign_in_logs_no_unknown_username(app, client, caplog):
    """People type their password into the username box; an unknown username is never logged."""
    create_user(app, "alice")
    from tests.conftest import csrf_token_from

    with caplog.at_level(logging.INFO):
        token = csrf_token_from(client)
        response = client.post("/index", data={"username": "my-Password-typed-here", "password": "x" * 10,
                                               "csrf_token": token})
        assert response.status_code == 401
        token = csrf_token_from(client)
        client.post("/index", data={"username": "alice", "password": "wrong-password-1", "csrf_token": token})
    text = logged_text(caplog)
    assert "Failed sign-in for an unknown username" in text
    assert "Failed sign-in for user alice" in text
    assert "my-Password-typed-here" not in text and "wrong-password-1" not in text


def test_an_unexpected_error_shows_no_secret_on_the_page_or_in_the_log(app_with_credentials, caplog):
    app = app_with_credentials
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/explode")
    def explode():
        raise RuntimeError(f"could not use {json.dumps(fake_service_account())} with password=open-sesame-42")

    with caplog.at_level(logging.INFO):
        for accept in ("text/html", "application/json"):
            response = app.test_client().get("/explode", headers={"Accept": accept})
            assert response.status_code == 500
            body = response.get_data(as_text=True)
            assert "open-sesame-42" not in body and "PRIVATE KEY" not in body and "RuntimeError" not in body
    text = logged_text(caplog)
    assert "Exception on /explode" in text and "RuntimeError" in text
    assert "open-sesame-42" not in text
    assert not any(line in text for line in FAKE_PRIVATE_KEY.splitlines()[1:-1])
