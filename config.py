"""Configuration: the one place that reads the environment."""

import math
import os
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent
load_dotenv(BASE_DIR / ".env")

# The built-in key is only good for development and tests; create_app refuses
# to start with it anywhere else.
DEV_SECRET_KEY = "dev-only-not-secret"  # noqa: S105
# Pub/Sub's own minimum for an expiration policy's time to live: TAP_EXPIRATION_DAYS is refused below
# it at start, and app.subscriptions.taps checks it again when a tap is made (tests set app.config).
MIN_TAP_EXPIRATION_DAYS = 1


def normalise_database_url(url: str) -> str:
    """Map Heroku's and plain PostgreSQL URLs onto the psycopg2 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def _flag(name: str, default: str = "") -> bool:
    return os.environ.get(name, default).strip().lower() in {"1", "true", "yes", "on"}


def _number(name: str, default: float, minimum: float, whole: bool = False) -> int | float:
    """The environment's `name` as a number (a whole one if `whole`), or `default` when unset or blank.

    A value that is not a number, or is below `minimum`, stops the app at start with an error that
    names the setting, not a bare "could not convert string to float" or an app that misbehaves later
    (a negative timeout fails every call; a page size of 0 lists nothing).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default) if whole else float(default)
    try:
        value = int(raw) if whole else float(raw)
        refused = not math.isfinite(value) or value < minimum
    except (ValueError, OverflowError):  # OverflowError: a whole number of hundreds of digits
        refused = True
    if refused:
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{name} must be {kind}, at least {minimum:g}; it is {raw!r} (unset, it is {default:g})")
    return value


class Config:
    SECRET_KEY = os.environ.get("SECRET_KEY") or DEV_SECRET_KEY
    SQLALCHEMY_DATABASE_URI = normalise_database_url(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'app.db'}"
    )
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    # PostgreSQL: the longest a new connection may take (libpq waits for ever on a server that takes the
    # connection and says nothing), unless DATABASE_URL sets connect_timeout. Whole seconds, at least 2.
    DATABASE_CONNECT_TIMEOUT_SECONDS = round(_number("DATABASE_CONNECT_TIMEOUT_SECONDS", 10, minimum=2))
    REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    # The longest the app waits on Redis for a connection or one command's answer. Without it, a Redis
    # that accepts connections and then says nothing (an overloaded or partitioned server) holds a page
    # until gunicorn kills it at 30 s, and a job's heartbeat for ever. Longer than any command the app
    # blocks on (the courier's BLPOP waits 0.5 s).
    REDIS_TIMEOUT_SECONDS = _number("REDIS_TIMEOUT_SECONDS", 5, minimum=0.1)
    RQ_QUEUE = os.environ.get("RQ_QUEUE") or "gcpubsub-tasks"

    GCP_PROJECT_ID = os.environ.get("GCP_PROJECT_ID") or "local-project"
    PUBSUB_TOPIC = os.environ.get("PUBSUB_TOPIC") or "monitor-topic"
    SUBSCRIPTION_NAME = os.environ.get("SUBSCRIPTION_NAME") or "monitor-sub"
    GOOGLE_APPLICATION_CREDENTIALS = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    PUBSUB_EMULATOR_HOST = os.environ.get("PUBSUB_EMULATOR_HOST")
    # "streaming" or "batch"; empty means batch on the emulator, streaming on Google Cloud.
    PUBSUB_PULL_MODE = os.environ.get("PUBSUB_PULL_MODE", "").strip().lower()

    LOG_TO_STDOUT = _flag("LOG_TO_STDOUT")
    ADMIN_USERNAME = os.environ.get("ADMIN_USERNAME") or "admin"
    ADMIN_EMAIL = os.environ.get("ADMIN_EMAIL") or "admin@localhost"
    ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD")

    PYGMENTS_STYLE = os.environ.get("PYGMENTS_STYLE") or "friendly"
    # The highlight style under the dark colour mode ([data-bs-theme=dark]).
    PYGMENTS_DARK_STYLE = os.environ.get("PYGMENTS_DARK_STYLE") or "github-dark"
    ITEMS_PER_PAGE = 50
    # A user's notifications older than this are pruned whenever they get a new one.
    NOTIFICATION_RETENTION_SECONDS = _number("NOTIFICATION_RETENTION_SECONDS", 3600, minimum=1, whole=True)
    # Memory each web process gives to rendered item rows (a Cloud Build message's row is about
    # 5 kB, so 32 MB holds some 6,000): many tabs watching one user render each row once.
    RENDERED_ROWS_CACHE_MB = _number("RENDERED_ROWS_CACHE_MB", 32, minimum=1, whole=True)
    # Most pullers or streams one polling task may run at once (POST /polling_pubsub streams=N).
    MAX_POLLING_STREAMS = _number("MAX_POLLING_STREAMS", 8, minimum=1, whole=True)
    # Most polling tasks one user may have waiting or running at once (admins included).
    MAX_TASKS_PER_USER = _number("MAX_TASKS_PER_USER", 5, minimum=1, whole=True)
    # Retention (app.retention): stored messages older than this many days are deleted by the
    # worker's maintenance step, every RETENTION_INTERVAL_SECONDS; 0 keeps them forever. An admin
    # may override the days per subscription on /admin/storage.
    # Decimals are allowed (0.5 keeps twelve hours): a small plan may not hold a day of a busy topic.
    MESSAGE_RETENTION_DAYS = _number("MESSAGE_RETENTION_DAYS", 30, minimum=0)
    RETENTION_INTERVAL_SECONDS = _number("RETENTION_INTERVAL_SECONDS", 3600, minimum=1, whole=True)
    # The database plan's size in MB (docs/retention.md lists Heroku's); admins are warned at 80%
    # and 95% of it. 0: no limit known, no warning.
    DATABASE_SIZE_LIMIT_MB = _number("DATABASE_SIZE_LIMIT_MB", 0, minimum=0)
    # Taps (subscriptions the app creates on a topic for one user) expire after this many days
    # without a pull (Pub/Sub's expiration policy; its minimum is 1 day). An idle tap then goes
    # away by itself even if the app never removes it.
    TAP_EXPIRATION_DAYS = _number("TAP_EXPIRATION_DAYS", 7, minimum=MIN_TAP_EXPIRATION_DAYS, whole=True)
    # How long removing a tap waits for its polling job to let go before deleting the subscription.
    TAP_STOP_WAIT_SECONDS = _number("TAP_STOP_WAIT_SECONDS", 15, minimum=0)
    # Topics and subscriptions per page on /project (Pub/Sub pages its listings with tokens).
    BROWSE_PAGE_SIZE = _number("BROWSE_PAGE_SIZE", 50, minimum=1, whole=True)
    # The most stored messages a filter dry-run (/filter_check), or a search whose filter expression
    # the database cannot answer alone, reads per request, newest first.
    FILTER_SCAN_MAX_MESSAGES = _number("FILTER_SCAN_MAX_MESSAGES", 5000, minimum=1, whole=True)
    BOOTSTRAP_SERVE_LOCAL = True
    WTF_CSRF_TIME_LIMIT = None

    # Failed sign-ins allowed per client address and per (username, address) pair (Flask-Limiter
    # syntax), counted in Redis so that the limits hold across gunicorn workers. A username is
    # not locked: failures from other addresses must not lock its owner out.
    SIGN_IN_LIMIT_PER_ADDRESS = os.environ.get("SIGN_IN_LIMIT_PER_ADDRESS") or "10/minute"
    SIGN_IN_LIMIT_PER_USERNAME_AND_ADDRESS = os.environ.get("SIGN_IN_LIMIT_PER_USERNAME_AND_ADDRESS") or "5/minute"
    # Instead, after this many failures for one username within a minute (from any address),
    # every attempt for it waits, doubling from SIGN_IN_SLOWDOWN_SECONDS up to the maximum.
    SIGN_IN_SLOWDOWN_AFTER = _number("SIGN_IN_SLOWDOWN_AFTER", 5, minimum=0, whole=True)
    SIGN_IN_SLOWDOWN_SECONDS = _number("SIGN_IN_SLOWDOWN_SECONDS", 0.25, minimum=0)
    SIGN_IN_SLOWDOWN_MAX_SECONDS = _number("SIGN_IN_SLOWDOWN_MAX_SECONDS", 2.0, minimum=0)
    # Wrong current passwords allowed per signed-in user when changing the password.
    CHANGE_PASSWORD_LIMIT_PER_USER = os.environ.get("CHANGE_PASSWORD_LIMIT_PER_USER") or "5/minute"
    # Storage defaults to REDIS_URL (app.security). A moving window means "in any 60 s",
    # with no burst at a minute's boundary.
    RATELIMIT_STRATEGY = "moving-window"
    RATELIMIT_HEADERS_ENABLED = True
    # When Redis is unreachable, count in each process's memory and log a warning,
    # rather than refuse every sign-in; Redis is rechecked with backoff.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True

    # How many proxies in front of the app set X-Forwarded-For and -Proto: Heroku's router
    # (DYNO is set on Heroku), else none, so that a client reaching gunicorn directly cannot
    # choose its address or scheme. Read by ProxyFix and by gunicorn.conf.py.
    TRUSTED_PROXIES = _number("TRUSTED_PROXIES", 1 if os.environ.get("DYNO") else 0, minimum=0, whole=True)
    # In production (Heroku), plain HTTP is redirected to HTTPS, except the health check.
    HTTPS_REDIRECT = _flag("HTTPS_REDIRECT", "1" if os.environ.get("DYNO") else "")

    # Cookies are also marked Secure per request over HTTPS (app.security).
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    # Flask-Login's default is a year; a stolen remember-me cookie should not live that long.
    REMEMBER_COOKIE_DURATION = timedelta(days=30)
    # No request the app expects comes near this (forms and small JSON); bigger bodies get 413.
    MAX_CONTENT_LENGTH = 1024 * 1024

    # Alerts (app.alerts). Deliveries are RQ jobs on their own queue, which the Procfile's worker
    # serves besides RQ_QUEUE.
    RQ_ALERTS_QUEUE = os.environ.get("RQ_ALERTS_QUEUE") or "gcpubsub-alerts"
    # Webhooks may target loopback, private and link-local addresses only with this set (the
    # local stack and the tests set it). Cloud metadata addresses are refused regardless.
    ALERT_ALLOW_PRIVATE_TARGETS = _flag("ALERT_ALLOW_PRIVATE_TARGETS")
    # Single deliveries per rule per ALERT_RATE_WINDOW_SECONDS; firings beyond it are counted
    # into one digest delivery, sent ALERT_DIGEST_SECONDS after its first firing.
    ALERT_MAX_PER_MINUTE = _number("ALERT_MAX_PER_MINUTE", 60, minimum=0, whole=True)
    ALERT_RATE_WINDOW_SECONDS = _number("ALERT_RATE_WINDOW_SECONDS", 60, minimum=1)
    ALERT_DIGEST_SECONDS = _number("ALERT_DIGEST_SECONDS", 60, minimum=0)
    # A failed delivery is retried after ALERT_BACKOFF_SECONDS, doubling up to an hour between
    # tries, until ALERT_RETRY_HOURS after the firing; then it is marked failed.
    ALERT_BACKOFF_SECONDS = _number("ALERT_BACKOFF_SECONDS", 10, minimum=0.1)
    ALERT_RETRY_HOURS = _number("ALERT_RETRY_HOURS", 24, minimum=0)
    ALERT_TIMEOUT_SECONDS = _number("ALERT_TIMEOUT_SECONDS", 5, minimum=0.1)
    # A delivery claimed this long ago and not finished belongs to a worker that died: it is
    # delivered again (at least once; the receiver dedups on X-PubSub-Monitor-Delivery).
    ALERT_LEASE_SECONDS = _number("ALERT_LEASE_SECONDS", 60, minimum=1)
    # Delivered and failed alerts older than this are deleted by the workers' maintenance step.
    ALERT_HISTORY_DAYS = _number("ALERT_HISTORY_DAYS", 30, minimum=0)
    # The app's address as its users reach it, for the message links in alert bodies.
    PUBLIC_URL = (os.environ.get("PUBLIC_URL") or "http://localhost:5000").rstrip("/")
