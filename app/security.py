"""Security hardening: sign-in rate limits, response headers, Secure cookies behind a proxy, log redaction.

The headers are a few lines of our own rather than Flask-Talisman: the app needs the
Secure flag decided per request (Heroku's router speaks HTTPS, the app sees HTTP plus
X-Forwarded-Proto), for the remember-me cookie as well as the session, and an HTTPS
redirect only in production (HTTPS_REDIRECT) and never for the health check; Talisman
sets the session cookie's flag once, in config, and leaves Flask-Login's cookie alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, g, has_request_context, make_response, redirect, request
from flask_limiter import RequestLimit
from flask_limiter.util import get_remote_address
from flask_login import current_user
from redis import RedisError

from app.extensions import limiter

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # Bootstrap's CSS draws checkboxes and selects with data: SVGs.
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: over HTTPS Flask-WTF's CSRF check wants a same-origin Referer.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"

SIGN_IN_LIMIT_MESSAGE = "Too many failed sign-in attempts. Wait a minute, then try again."
WRONG_PASSWORD_LIMIT_MESSAGE = "Too many wrong current passwords. Wait a minute, then try again."
REDACTED = "[REDACTED]"


class SecureCookieResponse(Response):
    """A response whose cookies are all Secure when the request came over HTTPS.

    Behind Heroku's router the app sees HTTP; ProxyFix turns X-Forwarded-Proto into
    the request's scheme, so request.is_secure tells whether the browser used HTTPS.
    Local development over plain HTTP keeps working because the flag is not forced.
    """

    def set_cookie(self, key: str, *args, **kwargs) -> None:
        # Flask's session, Flask-Login's remember cookie and delete_cookie all pass
        # secure= by keyword.
        if has_request_context() and request.is_secure:
            kwargs["secure"] = True
        super().set_cookie(key, *args, **kwargs)


def no_store(view):
    """Mark a view's responses Cache-Control: no-store: they show messages, which no cache
    (the browser's, a shared proxy's) may keep after the user signs out."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        response = make_response(view(*args, **kwargs))
        response.headers["Cache-Control"] = "no-store"
        return response

    return wrapped


def redirect_plain_http():
    """With HTTPS_REDIRECT (production), plain HTTP goes to the same URL over HTTPS; the health
    check stays reachable over HTTP for the platform's probes."""
    if not current_app.config["HTTPS_REDIRECT"] or request.is_secure or request.path == "/healthz":
        return None
    # 308 keeps a form's method and body; GET and HEAD can be cached as moved for good.
    return redirect(request.url.replace("http://", "https://", 1),
                    code=301 if request.method in ("GET", "HEAD") else 308)


def refuse_nul_characters():
    """400 for a NUL character in the path, a query argument, a form field or a JSON body: PostgreSQL's text
    cannot hold one, so it could only fail deeper down, and no name or filter needs it."""
    fields = [request.args]
    if request.method == "POST" and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields.append(request.form)
    # A JSON body can only carry NUL escaped; a stray escaped backslash before "u0000" is refused too.
    json_nul = request.is_json and b"\\u0000" in request.get_data(cache=True)
    if json_nul or "\x00" in request.path or any(
        "\x00" in key or "\x00" in value for values in fields for key, value in values.items(multi=True)
    ):
        abort(400, "The request holds a NUL character, which no parameter may contain.")


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY
    return response


# --- sign-in rate limits -------------------------------------------------------------------------


def _limit_namespace() -> str:
    # Every web process of a deployment shares the queue name, and each test app has its own.
    return current_app.config["RQ_QUEUE"]


def client_address_key() -> str:
    """The rate-limit key for the client's address (after ProxyFix)."""
    return f"{_limit_namespace()}:address:{get_remote_address()}"


def _username_digest(username: str | None) -> str:
    """The username tried, normalised and hashed: people type passwords into it."""
    username = (username or "").strip().lower()
    return hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def username_and_address_key() -> str:
    """The rate-limit key for the username tried from the client's address."""
    return f"{_limit_namespace()}:username-address:{_username_digest(request.form.get('username'))}:" \
           f"{get_remote_address()}"


def sign_in_limit_per_address() -> str:
    return current_app.config["SIGN_IN_LIMIT_PER_ADDRESS"]


def sign_in_limit_per_username_and_address() -> str:
    return current_app.config["SIGN_IN_LIMIT_PER_USERNAME_AND_ADDRESS"]


# Per-username slowdown: failures from every address count, but they only slow attempts for
# that username down (never lock it), so its owner can still sign in from their own address.
_SLOWDOWN_WINDOW_SECONDS = 60
_sleep = time.sleep


def _failures_key(username: str | None) -> str:
    return f"{_limit_namespace()}:sign-in-failures:{_username_digest(username)}"


def record_failed_sign_in(username: str | None) -> None:
    """Count a failed sign-in for the username (any address), for sign_in_delay."""
    key = _failures_key(username)
    try:
        if current_app.redis.incr(key) == 1:
            current_app.redis.expire(key, _SLOWDOWN_WINDOW_SECONDS)
    except RedisError:
        current_app.logger.warning("Redis unreachable: failed sign-ins are not counted for the slowdown")


def sign_in_delay(username: str | None) -> float:
    """Seconds an attempt for this username waits: none until SIGN_IN_SLOWDOWN_AFTER failures in the
    window, then SIGN_IN_SLOWDOWN_SECONDS, doubling with each failure, up to the maximum."""
    config = current_app.config
    try:
        failures = int(current_app.redis.get(_failures_key(username)) or 0)
    except RedisError:
        return 0.0
    excess = failures - config["SIGN_IN_SLOWDOWN_AFTER"]
    if excess < 0:
        return 0.0
    return min(config["SIGN_IN_SLOWDOWN_SECONDS"] * 2 ** min(excess, 16), config["SIGN_IN_SLOWDOWN_MAX_SECONDS"])


def slow_down_sign_in(username: str | None) -> None:
    delay = sign_in_delay(username)
    if delay > 0:
        _sleep(delay)


def is_failed_sign_in(response: Response) -> bool:
    """Only wrong credentials count, so signing in and out repeatedly never locks anyone out."""
    return response.status_code == 401


def signed_in_user_key() -> str:
    """The rate-limit key for the signed-in user."""
    return f"{_limit_namespace()}:user:{current_user.get_id()}"


def change_password_limit_per_user() -> str:
    return current_app.config["CHANGE_PASSWORD_LIMIT_PER_USER"]


def is_wrong_current_password(_response: Response) -> bool:
    """Set by the change-password view, so that a stolen session cannot guess the password quickly."""
    return bool(g.get("wrong_current_password"))


def log_rate_limit(request_limit: RequestLimit) -> None:
    current_app.logger.warning(
        "Rate limit %s reached on %s for client %s", request_limit.limit, request.endpoint, get_remote_address()
    )


def _limiter_storage_options(redis_url: str) -> dict:
    options: dict = {"socket_connect_timeout": 2, "socket_timeout": 2, "health_check_interval": 30}
    if redis_url.startswith("rediss://"):
        # Heroku Redis presents a self-signed certificate.
        options["ssl_cert_reqs"] = None
    return options


# --- log redaction -------------------------------------------------------------------------------

# Names whose values are secret: *password*, *secret*, *private_key*, *api_key*, *token
# (not token_uri, which is an address). The lookahead looks at one word from its start.
_SECRET_NAME = r"\b(?=\w*?(?:password|passwd|secret|private_key|api_key|token\b))\w++"
# A quoted value without its closing quote runs to the end of the text.
_VALUE = r"\"(?:[^\"\\]++|\\.)*+\"?|'(?:[^'\\]++|\\.)*+'?|[^\s,;&'\"})\]]++"
# A log message longer than this loses its middle before the patterns run (known secrets go first).
REDACTION_MAX_CHARS = 16 * 1024
# Every pattern runs in time linear in the text: possessive quantifiers (*+, ++) never give
# back what they took, and each scan starts only where the previous one could not have.
_SECRET_WORDS = ("password", "passwd", "secret", "private_key", "api_key", "token")
# (pattern, replacement or None for the value of group "value", words one of which the
# lowercased text must hold for the pattern to be tried at all: most lines hold none).
_REDACTIONS = [
    # PEM private keys, raw or with escaped newlines, even when cut off.
    (
        re.compile(r"-----BEGIN[A-Z ]*+(?<=PRIVATE KEY)-----.*?(?:-----END[A-Z ]*+(?<=PRIVATE KEY)-----|$)",
                   re.S),
        "[REDACTED PRIVATE KEY]", ("private key",),
    ),
    # key=value, key: value, "key": "value", 'key': 'value'
    (re.compile(rf"(?P<key>(?P<q>[\"']?){_SECRET_NAME}(?P=q)\s*+[:=]\s*+)(?P<value>{_VALUE})", re.I | re.S),
     None, _SECRET_WORDS),
    # ('password', 'value'), as in a MultiDict's repr
    (re.compile(rf"(?P<key>(?P<q>[\"']){_SECRET_NAME}(?P=q)\s*+,\s*+)(?P<value>{_VALUE})", re.I | re.S),
     None, _SECRET_WORDS),
    # scheme://user:password@host (a scheme starts where no scheme character precedes it)
    (re.compile(r"(?P<key>(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*+://[^\s:/@]*+:)(?P<value>[^\s@/]++)(?=@)", re.I),
     None, ("://",)),
    (re.compile(r"(?P<key>\bauthorization\W++(?:bearer|basic)\s++)(?P<value>\S++)", re.I), None,
     ("authorization",)),
]
_MIN_KNOWN_SECRET_LENGTH = 8
_known_secrets: set[str] = set()
_known_secrets_lock = threading.Lock()
_factory_installed = False


def _redact_value(match: re.Match) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in {'"', "'"} else ""
    closing = quote if len(value) > 1 and value.endswith(quote) else ""
    return f"{match.group('key')}{quote}{REDACTED}{closing}"


def redact_secrets(text: str) -> str:
    """Text with passwords, private keys, URL credentials and the app's known secrets blanked out.

    Text longer than REDACTION_MAX_CHARS loses its middle before the patterns run, so that
    one request cannot hold up logging; each pattern runs in linear time.
    """
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    if len(text) > REDACTION_MAX_CHARS:
        # The start and the end (of a traceback, the exception) are kept; known secrets are
        # already gone, so the cut cannot leave half of one behind.
        half = REDACTION_MAX_CHARS // 2
        text = f"{text[:half]} [... {len(text) - 2 * half} characters not logged ...] {text[-half:]}"
    for pattern, replacement, words in _REDACTIONS:
        lowered = text.lower()
        if any(word in lowered for word in words):
            text = pattern.sub(replacement or _redact_value, text)
    return text


def register_secret(value: str | None) -> None:
    """Redact this exact value (and its escaped forms) from every log record.

    For a PEM key, each line of its body is redacted too, so that a fragment is caught.
    """
    if not value or len(value) < _MIN_KNOWN_SECRET_LENGTH:
        return
    forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1]}
    if "PRIVATE KEY-----" in value:
        body = [line.strip() for line in value.replace("\\n", "\n").splitlines() if "-----" not in line]
        forms.update(line for line in body if len(line) >= 16)
        forms.add("".join(body))
    with _known_secrets_lock:
        _known_secrets.update(form for form in forms if len(form) >= _MIN_KNOWN_SECRET_LENGTH)


def _credential_secrets(credentials: str | None) -> list[str]:
    """The private key and key id in GOOGLE_APPLICATION_CREDENTIALS (the JSON text or a key file)."""
    if not credentials:
        return []
    text = credentials.strip()
    if not text.startswith("{"):
        try:
            text = Path(text).read_text()
        except (OSError, ValueError):
            return []
    try:
        info = json.loads(text)
    except ValueError:
        return []
    if not isinstance(info, dict):
        return []
    return [str(info[name]) for name in ("private_key", "private_key_id") if info.get(name)]


def register_app_secrets(app: Flask) -> None:
    register_secret(app.config.get("SECRET_KEY"))
    register_secret(app.config.get("ADMIN_PASSWORD"))
    for secret in _credential_secrets(app.config.get("GOOGLE_APPLICATION_CREDENTIALS")):
        register_secret(secret)
    for url_name in ("SQLALCHEMY_DATABASE_URI", "REDIS_URL"):
        try:
            register_secret(urlsplit(str(app.config.get(url_name) or "")).password)
        except ValueError:
            continue


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):
        return  # a malformed call; logging reports it when the record is formatted
    redacted = redact_secrets(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text, so the redacted traceback is the one that is written.
        record.exc_text = redact_secrets("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    if record.stack_info:
        record.stack_info = redact_secrets(record.stack_info)


def install_log_redaction() -> None:
    """Redact every log record as it is created, whichever logger and handler it goes to.

    A Filter on the app's handlers would miss gunicorn's, rq's and Google's loggers and
    Python's last-resort handler, so the redaction sits in the record factory instead.
    """
    global _factory_installed
    if _factory_installed:
        return
    previous_factory = logging.getLogRecordFactory()

    def redacting_factory(*args, **kwargs) -> logging.LogRecord:
        record = previous_factory(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(redacting_factory)
    _factory_installed = True


# --- wiring --------------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Attach the limiter, the headers, the cookie policy and log redaction to the app."""
    install_log_redaction()
    register_app_secrets(app)

    app.response_class = SecureCookieResponse
    # First of all the request hooks (CSRF's was attached before): plain HTTP gets only the redirect.
    app.before_request_funcs.setdefault(None, []).insert(0, redirect_plain_http)
    app.before_request(refuse_nul_characters)
    app.after_request(add_security_headers)

    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", _limiter_storage_options(app.config["RATELIMIT_STORAGE_URI"]))
    limiter.init_app(app)
