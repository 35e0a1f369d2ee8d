"""Sign-in hardening: rate limits, cookie flags behind the proxy, strong session protection."""

from http.cookies import SimpleCookie

import pytest

from app.security import SIGN_IN_LIMIT_MESSAGE
from tests.conftest import TEST_PASSWORD, AuthActions, create_user, csrf_token_from

# As Heroku's router forwards a browser's HTTPS request. Over HTTPS Flask-WTF also wants a
# same-origin Referer, which browsers send under the app's Referrer-Policy.
HTTPS = {"X-Forwarded-Proto": "https", "Referer": "https://localhost/index"}


def sign_in(client, username, password, address="127.0.0.1", headers=None, **extra):
    token = csrf_token_from(client)
    return client.post(
        "/index",
        data={"username": username, "password": password, "csrf_token": token, **extra},
        headers=headers or {},
        environ_base={"REMOTE_ADDR": address},
    )


# --- rate limits ---------------------------------------------------------------------------------


def test_eleventh_failed_sign_in_from_one_address_gets_429(app, client):
    create_user(app, "alice")
    for attempt in range(10):
        assert sign_in(client, f"nobody-{attempt}", "wrong-password").status_code == 401
    refused = sign_in(client, "nobody-10", "wrong-password")
    assert refused.status_code == 429
    assert "Too many attempts; try again in" in refused.get_data(as_text=True)  # on the form (issue 16)
    assert int(refused.headers["Retry-After"]) > 0
    # Even the right password is refused from that address for now ...
    assert sign_in(client, "alice", TEST_PASSWORD).status_code == 429
    assert client.get("/user/alice").status_code == 302
    # ... but not from another one.
    assert sign_in(app.test_client(), "alice", TEST_PASSWORD, address="10.0.0.99").status_code == 302


def test_sixth_failed_sign_in_for_one_username_from_one_address_gets_429(app, client):
    create_user(app, "alice")
    create_user(app, "bob")
    for _attempt in range(5):
        assert sign_in(client, "alice", "wrong-password", address="10.0.1.1").status_code == 401
    assert sign_in(client, "alice", "wrong-password", address="10.0.1.1").status_code == 429
    # That pair is limited, even with the right password ...
    assert sign_in(app.test_client(), "Alice ", TEST_PASSWORD, address="10.0.1.1").status_code == 429
    # ... while other users sign in from that address as usual.
    assert sign_in(client, "bob", TEST_PASSWORD, address="10.0.1.1").status_code == 302


def test_failures_from_other_addresses_slow_a_username_down_but_never_lock_it_out(app, client, monkeypatch):
    """Issue 14: 5 failures from 5 addresses locked the admin out. Now they only slow attempts down."""
    from app import security

    waits: list[float] = []
    monkeypatch.setattr(security, "_sleep", waits.append)
    create_user(app, "alice")
    for attempt in range(5):
        assert sign_in(client, "alice", "wrong-password", address=f"10.0.1.{attempt}").status_code == 401
    assert waits == []
    for attempt in range(5, 9):
        assert sign_in(client, "alice", "wrong-password", address=f"10.0.1.{attempt}").status_code == 401
    # Each failure past the fifth doubles the wait, up to the maximum.
    assert waits == [0.25, 0.5, 1.0, 2.0]
    assert sign_in(app.test_client(), "alice", TEST_PASSWORD, address="10.0.2.1").status_code == 302
    assert waits[-1] == 2.0 and len(waits) == 5
    # Another username is not slowed.
    assert sign_in(app.test_client(), "bob", "wrong-password", address="10.0.2.2").status_code == 401
    assert len(waits) == 5


def test_successful_sign_ins_are_not_counted(app, client):
    create_user(app, "alice")
    for _ in range(12):
        assert sign_in(client, "alice", TEST_PASSWORD).status_code == 302
        AuthActions(client).logout()


def test_sign_in_form_stays_reachable_while_limited(app, client):
    for attempt in range(11):
        sign_in(client, f"nobody-{attempt}", "wrong-password")
    assert sign_in(client, "nobody", "wrong-password").status_code == 429
    assert client.get("/index").status_code == 200


def test_limit_answer_is_an_html_page_for_browsers_and_json_for_json_clients(app, client):
    for attempt in range(10):
        sign_in(client, f"nobody-{attempt}", "wrong-password")
    as_html = sign_in(client, "nobody", "wrong-password", headers={"Accept": "text/html,application/xhtml+xml"})
    assert as_html.status_code == 429 and as_html.mimetype == "text/html"
    assert 'id="login-form"' in as_html.get_data(as_text=True)
    as_json = sign_in(client, "nobody", "wrong-password", headers={"Accept": "application/json"})
    assert as_json.status_code == 429 and as_json.is_json
    assert as_json.get_json() == {"status": "error", "error": SIGN_IN_LIMIT_MESSAGE, "code": 429}


def test_failed_sign_ins_are_counted_in_redis(app, client):
    sign_in(client, "nobody", "wrong-password")
    namespace = app.config["RQ_QUEUE"].encode()
    assert any(namespace in key for key in app.redis.scan_iter(match=b"LIMITS*"))


# --- cookies -------------------------------------------------------------------------------------


def set_cookies(response) -> dict[str, dict]:
    cookies = {}
    for header in response.headers.getlist("Set-Cookie"):
        parsed = SimpleCookie()
        parsed.load(header)
        for name, morsel in parsed.items():
            cookies[name] = {
                "secure": bool(morsel["secure"]),
                "httponly": bool(morsel["httponly"]),
                "samesite": morsel["samesite"],
            }
    return cookies


def test_session_and_remember_cookies_are_secure_httponly_lax_over_https(app, client):
    create_user(app, "alice")
    client.get("/index", headers=HTTPS)
    response = sign_in(client, "alice", TEST_PASSWORD, headers=HTTPS, remember_me="y")
    assert response.status_code == 302
    assert response.headers["Location"] == "/user/alice"
    cookies = set_cookies(response)
    assert set(cookies) >= {"session", "remember_token"}
    for name in ("session", "remember_token"):
        assert cookies[name] == {"secure": True, "httponly": True, "samesite": "Lax"}, name


def test_cookies_are_httponly_lax_but_not_secure_over_plain_http(app, client):
    """Local development over http://localhost must keep working."""
    create_user(app, "alice")
    response = sign_in(client, "alice", TEST_PASSWORD, remember_me="y")
    cookies = set_cookies(response)
    for name in ("session", "remember_token"):
        assert cookies[name] == {"secure": False, "httponly": True, "samesite": "Lax"}, name
    assert client.get("/user/alice").status_code == 200


def test_sign_out_over_https_clears_cookies_with_secure_flag(app, client):
    create_user(app, "alice")
    sign_in(client, "alice", TEST_PASSWORD, headers=HTTPS, remember_me="y")
    response = AuthActions(client).logout(headers=HTTPS)
    assert response.status_code == 302
    cookies = set_cookies(response)
    assert cookies["remember_token"]["secure"] is True


def test_session_reused_from_another_browser_is_signed_out(app, client):
    """Strong session protection: a stolen cookie used with another User-Agent is worthless."""
    create_user(app, "alice")
    client.get("/index", headers={"User-Agent": "Browser A"})
    token = csrf_token_from(client)
    client.post("/index", data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token},
                headers={"User-Agent": "Browser A"})
    assert client.get("/user/alice", headers={"User-Agent": "Browser A"}).status_code == 200
    assert client.get("/user/alice", headers={"User-Agent": "Browser B"}).status_code == 302


# --- signed out ----------------------------------------------------------------------------------

XHR = {"X-Requested-With": "XMLHttpRequest", "Accept": "application/json, text/javascript, */*; q=0.01"}


def test_signed_out_json_clients_get_a_json_401(app, client):
    for path in ["/notifications?since=0", "/useritems?after=0", "/polling_pubsub"]:
        response = client.get(path, headers=XHR)
        assert response.status_code == 401, path
        assert response.is_json and response.get_json()["status"] == "error"


def test_signed_out_browsers_are_sent_to_sign_in_and_back(app, client):
    create_user(app, "alice")
    response = client.get("/user/alice")
    assert response.status_code == 302
    assert response.headers["Location"] == "/index?next=%2Fuser%2Falice"
    token = csrf_token_from(client)
    signed_in = client.post(response.headers["Location"],
                            data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token})
    assert signed_in.headers["Location"] == "/user/alice"


def test_a_stolen_session_polling_from_another_browser_gets_401(app, client):
    create_user(app, "alice")
    client.get("/index", headers={"User-Agent": "Browser A"})
    token = csrf_token_from(client)
    client.post("/index", data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token},
                headers={"User-Agent": "Browser A"})
    assert client.get("/notifications?since=0", headers={**XHR, "User-Agent": "Browser A"}).status_code == 200
    assert client.get("/notifications?since=0", headers={**XHR, "User-Agent": "Browser B"}).status_code == 401


def test_remember_me_cookie_lasts_at_most_thirty_days(app, client):
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    create_user(app, "alice")
    response = sign_in(client, "alice", TEST_PASSWORD, remember_me="y")
    header = next(value for value in response.headers.getlist("Set-Cookie") if value.startswith("remember_token="))
    expires = SimpleCookie(header)["remember_token"]["expires"]
    lifetime = parsedate_to_datetime(expires) - datetime.now(UTC)
    assert 29 <= lifetime.days <= 30


def test_oversized_request_bodies_are_refused(app, client, auth):
    create_user(app, "alice")
    auth.login()
    token = auth.csrf_token("/user/alice")
    huge = "x" * (2 * 1024 * 1024)
    response = client.post("/change_password", headers={"X-CSRFToken": token, "Accept": "application/json"},
                           data={"current_password": TEST_PASSWORD, "new_password": huge, "confirm_password": huge})
    assert response.status_code == 413
    assert response.get_json()["status"] == "error"
    AuthActions(client).logout()
    assert sign_in(client, "alice", TEST_PASSWORD).status_code == 302  # the password did not change


# --- guessing the current password from a signed-in session ------------------------------------


def change_password(client, token, current, new="a-brand-new-password"):
    return client.post("/change_password", headers={"X-CSRFToken": token, "X-Requested-With": "XMLHttpRequest"},
                       data={"current_password": current, "new_password": new, "confirm_password": new})


def test_sixth_wrong_current_password_in_a_minute_gets_429(app, client, auth):
    from app.security import WRONG_PASSWORD_LIMIT_MESSAGE

    create_user(app, "alice")
    auth.login()
    token = auth.csrf_token("/user/alice")
    for attempt in range(5):
        assert change_password(client, token, f"guess-{attempt}-password").status_code == 400
    refused = change_password(client, token, TEST_PASSWORD)
    assert refused.status_code == 429
    assert refused.get_json()["error"] == WRONG_PASSWORD_LIMIT_MESSAGE
    AuthActions(client).logout()
    assert sign_in(client, "alice", TEST_PASSWORD).status_code == 302  # unchanged


def test_form_mistakes_do_not_count_against_the_change_password_limit(app, client, auth):
    create_user(app, "alice")
    auth.login()
    token = auth.csrf_token("/user/alice")
    for _ in range(8):
        assert change_password(client, token, TEST_PASSWORD, new="short").status_code == 400
    assert change_password(client, token, TEST_PASSWORD).status_code == 200


def test_limiter_accepts_heroku_redis_self_signed_tls(app):
    """Heroku Redis is rediss:// with a self-signed certificate, like the app's own connection."""
    from limits.storage import storage_from_string

    from app.security import _limiter_storage_options

    url = "rediss://:secret@redis.example:6380/0"
    storage = storage_from_string(url, **_limiter_storage_options(url))
    connection_kwargs = storage.storage.connection_pool.connection_kwargs
    assert connection_kwargs["ssl_cert_reqs"] is None
    assert connection_kwargs["socket_timeout"] <= 5
    assert "ssl_cert_reqs" not in _limiter_storage_options("redis://127.0.0.1:6379/0")


# --- proxies and HTTPS ------------------------------------------------------------------------


@pytest.fixture
def direct_app(database_url, redis_server):
    """The app as gunicorn serves it with no proxy in front (TRUSTED_PROXIES=0, the default off Heroku)."""
    from tests.conftest import app_with

    with app_with(database_url, redis_server.url, TRUSTED_PROXIES=0) as app:
        yield app


def test_without_a_trusted_proxy_forwarded_headers_are_ignored(direct_app):
    """Issue 14: X-Forwarded-For was believed from anyone, which defeated the per-address limit."""
    create_user(direct_app, "alice")
    client = direct_app.test_client()
    for attempt in range(10):
        forged = {"X-Forwarded-For": f"10.7.0.{attempt}", "X-Forwarded-Proto": "https"}
        assert sign_in(client, f"nobody-{attempt}", "wrong-password", headers=forged).status_code == 401
    # All ten came from the one real address.
    assert sign_in(client, "nobody-10", "wrong-password", headers={"X-Forwarded-For": "10.7.1.1"}).status_code == 429
    # Nor does a forged X-Forwarded-Proto make the request HTTPS.
    response = client.get("/index", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in response.headers


def config_in_environment(**env) -> dict:
    """TRUSTED_PROXIES, HTTPS_REDIRECT and gunicorn's forwarded_allow_ips as a fresh process sees them."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    clean = {key: value for key, value in os.environ.items()
             if key not in {"DYNO", "TRUSTED_PROXIES", "HTTPS_REDIRECT"}}
    script = ("import json, runpy; from config import Config; "
              "conf = runpy.run_path('gunicorn.conf.py'); "
              "print(json.dumps([Config.TRUSTED_PROXIES, Config.HTTPS_REDIRECT, conf['forwarded_allow_ips']]))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**clean, **env},
                            capture_output=True, text=True, timeout=60, check=True)
    trusted, redirect, allowed = json.loads(result.stdout)
    return {"TRUSTED_PROXIES": trusted, "HTTPS_REDIRECT": redirect, "forwarded_allow_ips": allowed}


def test_proxies_are_trusted_on_heroku_only_unless_configured():
    assert config_in_environment() == {"TRUSTED_PROXIES": 0, "HTTPS_REDIRECT": False, "forwarded_allow_ips": ""}
    assert config_in_environment(DYNO="web.1") == {"TRUSTED_PROXIES": 1, "HTTPS_REDIRECT": True,
                                                   "forwarded_allow_ips": "*"}
    assert config_in_environment(TRUSTED_PROXIES="2")["TRUSTED_PROXIES"] == 2
    assert config_in_environment(DYNO="web.1", TRUSTED_PROXIES="0")["forwarded_allow_ips"] == ""


def test_production_redirects_plain_http_to_https_except_the_health_check(app, client):
    create_user(app, "alice")
    app.config["HTTPS_REDIRECT"] = True
    response = client.get("/user/alice?x=1")
    assert response.status_code == 301
    assert response.headers["Location"] == "https://localhost/user/alice?x=1"
    posted = client.post("/index", data={"username": "alice"})
    assert posted.status_code == 308 and posted.headers["Location"] == "https://localhost/index"
    assert client.get("/healthz").status_code != 301
    # Over HTTPS (as Heroku's router forwards it) the page is served.
    assert client.get("/index", headers=HTTPS).status_code == 200
