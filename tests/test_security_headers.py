"""Security headers on every response, and pages that live with the CSP (no inline script)."""

import re

from tests.conftest import create_user, csrf_token_from, store_item
from tests.test_security_csrf import concrete_path

ANY_VALUE = None  # the header must be there; its value changes from response to response
# Every response carries exactly these, whatever the page.
SECURITY_HEADERS = {
    "Content-Security-Policy": ANY_VALUE,  # compared directive by directive with EXPECTED_CSP
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
EXPECTED_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],  # Bootstrap's CSS draws checkboxes and selects with data: SVGs
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Over HTTPS only (see test_hsts_only_over_https).
HSTS = {"Strict-Transport-Security": "max-age=31536000; includeSubDomains"}
# Headers that describe the body rather than set a policy; any other header must be expected.
CONTENT_HEADERS = {
    "Content-Type", "Content-Length", "Content-Disposition", "Location", "Vary", "ETag",
    "Last-Modified", "Accept-Ranges", "Date", "Set-Cookie", "Retry-After",
}
# What each kind of page adds to SECURITY_HEADERS. A new header goes here, one deliberate line.
PAGE_TYPE_HEADERS = {
    "page": {},
    "message": {"Cache-Control": "no-store"},  # pages that show a message's data: never cached (issue 14)
    "export": {"Cache-Control": "no-store"},
    "static": {"Cache-Control": "no-cache"},  # Flask's send_file: revalidate with the ETag
    "rate limited": {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": ANY_VALUE},
}
ENDPOINT_PAGE_TYPES = {
    "static": "static",
    "bootstrap.static": "static",
    "vendor_jquery.static": "static",
    "main.user": "message",
    "main.useritems": "message",
    "main.useritem": "message",
    "main.useritem_data": "message",
    "explore.explore": "message",
    "explore.explore_items": "message",
    "explore.filter_check": "message",
    "explore.export_jsonl": "export",
    "explore.export_csv": "export",
}
HTTPS = {"X-Forwarded-Proto": "https"}
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
INLINE_STYLE = re.compile(r"<style\b|<[^>]+\sstyle\s*=", re.I)
JAVASCRIPT_URL = re.compile(r"""(?:href|src|action)\s*=\s*["']?\s*javascript:""", re.I)


def csp_directives(response) -> dict[str, list[str]]:
    policy = response.headers.get("Content-Security-Policy", "")
    directives = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def policy_headers(headers) -> dict[str, str]:
    """Every header of a response except those that only describe its body.

    Takes a Flask test response's headers or a browser's (whose names are lower case).
    """
    content_headers = {name.lower() for name in CONTENT_HEADERS}
    return {name: value for name, value in headers.items() if name.lower() not in content_headers}


def assert_security_headers(response, where: str, page_type: str = "page", https: bool = False) -> None:
    """The response's headers and CSP directives, each compared as a whole with the expectation."""
    expected = {**SECURITY_HEADERS, **PAGE_TYPE_HEADERS[page_type], **(HSTS if https else {})}
    sent = policy_headers(response.headers)
    unexpected, missing = set(sent) - set(expected), set(expected) - set(sent)
    assert not unexpected and not missing, f"{where}: unexpected {unexpected or '-'}, missing {missing or '-'}"
    for name, value in expected.items():
        if value is not ANY_VALUE:
            assert sent[name] == value, f"{where}: {name}"
    assert csp_directives(response) == EXPECTED_CSP, f"{where}: Content-Security-Policy"
    assert len(response.headers.getlist("Content-Security-Policy")) == 1, f"{where}: one policy, not several"


def assert_no_inline_code(html: str, where: str) -> None:
    for pattern in (INLINE_SCRIPT, EVENT_HANDLER, INLINE_STYLE, JAVASCRIPT_URL):
        match = pattern.search(html)
        assert match is None, f"{where}: inline code the CSP would block: {match.group(0) if match else ''}"


def signed_in_with_data(app, client, auth):
    alice = create_user(app, "alice")
    item_id = store_item(app, alice, {"hello": "world"}, attributes={"kind": "test"})
    with app.app_context():
        from app.alerts import create_rule
        from app.extensions import db
        from app.models import User

        # Rule 1, so that /alerts/1 and /alerts/1.json are pages alice may see.
        create_rule(db.session.get(User, alice), "tests", "", "http://127.0.0.1:9/hook")
        db.session.commit()
    auth.login()
    return item_id


def every_get_response(app, client, item_id):
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        path = concrete_path(app, rule, item_id=item_id)
        if rule.endpoint == "bootstrap.static":
            path = "/bootstrap/static/css/bootstrap.min.css"
        elif rule.endpoint == "vendor_jquery.static":
            path = "/static/vendor/jquery/jquery.min.js"
        elif rule.endpoint == "auth.logout":
            continue  # it would end the session the other pages need; checked on its own
        response = client.get(path)
        response.close()  # a streamed export ends here, inside its request context
        yield path, ENDPOINT_PAGE_TYPES.get(rule.endpoint, "page"), response


def test_every_page_and_endpoint_sends_the_security_headers(app, client, auth):
    item_id = signed_in_with_data(app, client, auth)
    seen = []
    for path, page_type, response in every_get_response(app, client, item_id):
        # A signed-in non-admin is refused the admin pages, with the headers all the same.
        expected = (403,) if path.startswith("/admin/") else (200, 302)
        assert response.status_code in expected, f"{path} answered {response.status_code}"
        assert_security_headers(response, path, page_type)
        seen.append(path)
    assert {"/index", "/user/alice", f"/useritems/{item_id}", "/useritems", "/notifications"} <= set(seen)
    assert_security_headers(auth.logout(), "/logout")


def test_every_html_page_has_no_inline_script_or_style(app, client, auth):
    item_id = signed_in_with_data(app, client, auth)
    pages = [(path, response) for path, _page_type, response in every_get_response(app, client, item_id)
             if response.mimetype == "text/html"]
    pages.append(("/useritems rows", None))
    assert {"/user/alice", f"/useritems/{item_id}"} <= {path for path, _ in pages}
    for path, response in pages:
        if response is None:
            html = "".join(client.get("/useritems?after=0").get_json()["items"])
        else:
            html = response.get_data(as_text=True)
        assert_no_inline_code(html, path)
    client.get("/logout")
    assert_no_inline_code(client.get("/index").get_data(as_text=True), "/index signed out")


def test_error_pages_send_the_security_headers(app, client, auth):
    create_user(app, "alice")
    create_user(app, "bob")
    responses = {
        "csrf 400": client.post("/index", data={"username": "alice", "password": "x"}),
        "unknown 404": client.get("/no-such-page"),
        "method 405": client.put("/pygments.css"),
        "login redirect": client.get("/user/alice"),
    }
    auth.login("bob")
    responses["forbidden 403"] = client.get("/user/alice")
    responses["json 404"] = client.get("/useritems/999999", headers={"Accept": "application/json"})
    for where, response in responses.items():
        assert response.status_code >= 300, where
        assert_security_headers(response, where)
        if response.mimetype == "text/html":
            assert_no_inline_code(response.get_data(as_text=True), where)


def test_rate_limited_answer_sends_the_security_headers(app, client):
    for attempt in range(11):
        token = csrf_token_from(client)
        response = client.post("/index", data={"username": f"n{attempt}", "password": "x" * 9, "csrf_token": token})
    assert response.status_code == 429
    assert_security_headers(response, "429", "rate limited")


def test_hsts_only_over_https(app, client):
    over_https = client.get("/index", headers=HTTPS)
    assert_security_headers(over_https, "/index over HTTPS", https=True)
    assert int(over_https.headers["Strict-Transport-Security"].split("=")[1].split(";")[0]) >= 15552000
    assert "Strict-Transport-Security" not in client.get("/index").headers
    assert "Strict-Transport-Security" not in client.get("/index", headers={"X-Forwarded-Proto": "http"}).headers


def test_message_pages_and_downloads_are_never_cached(app, client, auth):
    """Pages and downloads that hold message data send Cache-Control: no-store (issue 14, finding 12)."""
    item_id = signed_in_with_data(app, client, auth)
    for path in ("/user/alice", "/useritems?after=0", "/useritems?before=99", f"/useritems/{item_id}",
                 f"/useritems/{item_id}/data", "/explore", "/explore/items?after=0",
                 "/explore/export.jsonl", "/explore/export.csv"):
        with client.get(path) as response:
            assert response.status_code == 200, path
            assert response.headers.get("Cache-Control") == "no-store", path
