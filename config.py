"""Configuration: the one place that reads the environment."""

import os
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent
load_dotenv(BASE_DIR / ".env")

# The built-in key is only good for development and tests; create_app refuses
# to start with it anywhere else.
DEV_SECRET_KEY = "dev-only-not-secret"  # noqa: S105


def normalise_database_url(url: str) -> str:
    """Map Heroku's and plain PostgreSQL URLs onto the psycopg2 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def _flag(name: str, default: str = "") -> bool:
    return os.environ.get(name, default).strip().lower() in {"1", "true", "yes", "on"}


class Config:
    SECRET_KEY = os.environ.get("SECRET_KEY") or DEV_SECRET_KEY
    SQLALCHEMY_DATABASE_URI = normalise_database_url(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'app.db'}"
    )
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    # PostgreSQL: the longest a new connection may take (libpq waits for ever on a server that takes the
    # connection and says nothing), unless DATABASE_URL sets connect_timeout. Whole seconds, at least 2.
    DATABASE_CONNECT_TIMEOUT_SECONDS = max(2, round(float(os.environ.get("DATABASE_CONNECT_TIMEOUT_SECONDS") or 10)))
    REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    # The longest the app waits on Redis for a connection or one command's answer. Without it, a Redis
    # that accepts connections and then says nothing (an overloaded or partitioned server) holds a page
    # until gunicorn kills it at 30 s, and a job's heartbeat for ever. Longer than any command the app
    # blocks on (the courier's BLPOP waits 0.5 s).
    REDIS_TIMEOUT_SECONDS = float(os.environ.get("REDIS_TIMEOUT_SECONDS") or 5)
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
    NOTIFICATION_RETENTION_SECONDS = int(os.environ.get("NOTIFICATION_RETENTION_SECONDS") or 3600)
    # Memory each web process gives to rendered item rows (a Cloud Build message's row is about
    # 5 kB, so 32 MB holds some 6,000): many tabs watching one user render each row once.
    RENDERED_ROWS_CACHE_MB = int(os.environ.get("RENDERED_ROWS_CACHE_MB") or 32)
    # Most pullers or streams one polling task may run at once (POST /polling_pubsub streams=N).
    MAX_POLLING_STREAMS = int(os.environ.get("MAX_POLLING_STREAMS") or 8)
    # Most polling tasks one user may have waiting or running at once (admins included).
    MAX_TASKS_PER_USER = int(os.environ.get("MAX_TASKS_PER_USER") or 5)
    # Retention (app.retention): stored messages older than this many days are deleted by the
    # worker's maintenance step, every RETENTION_INTERVAL_SECONDS; 0 keeps them forever. An admin
    # may override the days per subscription on /admin/storage.
    # Decimals are allowed (0.5 keeps twelve hours): a small plan may not hold a day of a busy topic.
    MESSAGE_RETENTION_DAYS = float(os.environ.get("MESSAGE_RETENTION_DAYS") or 30)
    RETENTION_INTERVAL_SECONDS = int(os.environ.get("RETENTION_INTERVAL_SECONDS") or 3600)
    # The database plan's size in MB (docs/retention.md lists Heroku's); admins are warned at 80%
    # and 95% of it. 0: no limit known, no warning.
    DATABASE_SIZE_LIMIT_MB = float(os.environ.get("DATABASE_SIZE_LIMIT_MB") or 0)
    # Taps (subscriptions the app creates on a topic for one user) expire after this many days
    # without a pull (Pub/Sub's expiration policy; its minimum is 1 day). An idle tap then goes
    # away by itself even if the app never removes it.
    TAP_EXPIRATION_DAYS = int(os.environ.get("TAP_EXPIRATION_DAYS", "").strip() or 7)
    # How long removing a tap waits for its polling job to let go before deleting the subscription.
    TAP_STOP_WAIT_SECONDS = float(os.environ.get("TAP_STOP_WAIT_SECONDS") or 15)
    # Topics and subscriptions per page on /project (Pub/Sub pages its listings with tokens).
    BROWSE_PAGE_SIZE = int(os.environ.get("BROWSE_PAGE_SIZE") or 50)
    # The most stored messages a filter dry-run (/filter_check), or a search whose filter expression
    # the database cannot answer alone, reads per request, newest first.
    FILTER_SCAN_MAX_MESSAGES = int(os.environ.get("FILTER_SCAN_MAX_MESSAGES") or 5000)
    BOOTSTRAP_SERVE_LOCAL = True
    WTF_CSRF_TIME_LIMIT = None

    # Failed sign-ins allowed per client address and per (username, address) pair (Flask-Limiter
    # syntax), counted in Redis so that the limits hold across gunicorn workers. A username is
    # not locked: failures from other addresses must not lock its owner out.
    SIGN_IN_LIMIT_PER_ADDRESS = os.environ.get("SIGN_IN_LIMIT_PER_ADDRESS") or "10/minute"
    SIGN_IN_LIMIT_PER_USERNAME_AND_ADDRESS = os.environ.get("SIGN_IN_LIMIT_PER_USERNAME_AND_ADDRESS") or "5/minute"
    # Instead, after this many failures for one username within a minute (from any address),
    # every attempt for it waits, doubling from SIGN_IN_SLOWDOWN_SECONDS up to the maximum.
    SIGN_IN_SLOWDOWN_AFTER = int(os.environ.get("SIGN_IN_SLOWDOWN_AFTER") or 5)
    SIGN_IN_SLOWDOWN_SECONDS = float(os.environ.get("SIGN_IN_SLOWDOWN_SECONDS") or 0.25)
    SIGN_IN_SLOWDOWN_MAX_SECONDS = float(os.environ.get("SIGN_IN_SLOWDOWN_MAX_SECONDS") or 2.0)
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
    TRUSTED_PROXIES = int(os.environ.get("TRUSTED_PROXIES") or (1 if os.environ.get("DYNO") else 0))
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
    ALERT_MAX_PER_MINUTE = int(os.environ.get("ALERT_MAX_PER_MINUTE") or 60)
    ALERT_RATE_WINDOW_SECONDS = float(os.environ.get("ALERT_RATE_WINDOW_SECONDS") or 60)
    ALERT_DIGEST_SECONDS = float(os.environ.get("ALERT_DIGEST_SECONDS") or 60)
    # A failed delivery is retried after ALERT_BACKOFF_SECONDS, doubling up to an hour between
    # tries, until ALERT_RETRY_HOURS after the firing; then it is marked failed.
    ALERT_BACKOFF_SECONDS = float(os.environ.get("ALERT_BACKOFF_SECONDS") or 10)
    ALERT_RETRY_HOURS = float(os.environ.get("ALERT_RETRY_HOURS") or 24)
    ALERT_TIMEOUT_SECONDS = float(os.environ.get("ALERT_TIMEOUT_SECONDS") or 5)
    # A delivery claimed this long ago and not finished belongs to a worker that died: it is
    # delivered again (at least once; the receiver dedups on X-PubSub-Monitor-Delivery).
    ALERT_LEASE_SECONDS = float(os.environ.get("ALERT_LEASE_SECONDS") or 60)
    # Delivered and failed alerts older than this are deleted by the workers' maintenance step.
    ALERT_HISTORY_DAYS = float(os.environ.get("ALERT_HISTORY_DAYS") or 30)
    # The app's address as its users reach it, for the message links in alert bodies.
    PUBLIC_URL = (os.environ.get("PUBLIC_URL") or "http://localhost:5000").rstrip("/")
