"""No request parameter answers 500: every GET route, signed in, with hostile values for what it reads.

The parameters a route reads are found by asking it: one ordinary request per route records
every query-argument name the view looks up. Each is then sent, one at a time, with values
an attacker would try, and so is each part of the route's path.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from flask import Request
from werkzeug.datastructures import ImmutableMultiDict

from tests.conftest import create_user, store_item

HUGE = [str(2**63), str(2**63 - 1), str(2**64), str(10**30), str(-(2**63) - 1), "-1", "-99999999999"]
HOSTILE_VALUES = [
    *HUGE,
    "0", "1e400", "-1e400", "nan", "inf", "1.5", "",
    "a\x00b", "\x00",
    "x" * 10_000,
    "9999-12-31T23:59:59", "0001-01-01T00:00:00", "10000-01-01T00:00", "2024-02-30T25:61", "-2024-01-01",
    "2024-05-01T12:00+99:00", "\u202e\u2066bidi", "<script>alert(1)</script>", "' OR 1=1 --", "a=b", "=",
]
# Already percent-encoded: bytes that are not UTF-8, and a lone percent sign.
RAW_VALUES = ["%ff", "%c3%28", "%ed%a0%80", "%", "%zz", "a%00b"]
# Not a parameter: a path that exists only to be requested through the routes that take one.
SKIPPED_ENDPOINTS = {"static", "bootstrap.static", "vendor_jquery.static"}


class RecordingArgs(ImmutableMultiDict):
    """Query arguments that remember which names the view asked for."""

    read: set[str] = set()

    def get(self, key, default=None, type=None):  # noqa: A002 (MultiDict's signature)
        RecordingArgs.read.add(key)
        return super().get(key, default, type)

    def getlist(self, key, type=None):  # noqa: A002
        RecordingArgs.read.add(key)
        return super().getlist(key, type)

    def __getitem__(self, key):
        RecordingArgs.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        RecordingArgs.read.add(key)
        return super().__contains__(key)


class RecordingRequest(Request):
    parameter_storage_class = RecordingArgs


@pytest.fixture
def hostile_app(app):
    app.request_class = RecordingRequest
    alice = create_user(app, "alice")
    create_user(app, "root", is_admin=True)
    item_id = store_item(app, alice, {"status": "ok"}, {"status": "SUCCESS"})
    app.config["ITEM_ID"] = item_id
    with app.app_context():
        from app.alerts import create_rule
        from app.extensions import db
        from app.models import User

        rule = create_rule(db.session.get(User, alice), "failures", 'attributes.status = "FAILURE"',
                           "http://127.0.0.1:9/hook")
        db.session.commit()
        app.config["RULE_ID"] = rule.id
    return app


def get_routes(app) -> list:
    return [rule for rule in app.url_map.iter_rules()
            if "GET" in rule.methods and rule.endpoint not in SKIPPED_ENDPOINTS]


def ordinary_path(rule, item_id: int, rule_id: int = 1) -> str:
    values = {"username": "alice", "item_id": item_id, "user_id": 1, "rule_id": rule_id}
    return rule.build({name: values[name] for name in rule.arguments}, append_unknown=False)[1]


def parameters_read(client, path: str) -> set[str]:
    RecordingArgs.read = set()
    with client.get(path) as response:
        response.get_data()
    return set(RecordingArgs.read)


def assert_not_500(client, url: str) -> None:
    with client.get(url) as response:
        response.get_data()
        assert response.status_code < 500, f"{url[:200]} answered {response.status_code}"


@pytest.mark.parametrize("username", ["alice", "root"])
def test_no_get_route_answers_500_to_hostile_parameters(hostile_app, client, auth, username):
    auth.login(username)
    item_id = hostile_app.config["ITEM_ID"]
    checked: dict[str, set[str]] = {}
    for rule in get_routes(hostile_app):
        path = ordinary_path(rule, item_id, hostile_app.config["RULE_ID"])
        names = parameters_read(client, path) - {"next"} if rule.endpoint != "auth.index" else {"next"}
        checked[rule.endpoint] = names
        for name in sorted(names):
            for value in HOSTILE_VALUES:
                assert_not_500(client, f"{path}?{quote(name)}={quote(value, safe='')}")
            for raw in RAW_VALUES:
                assert_not_500(client, f"{path}?{quote(name)}={raw}")
            # Repeated, and next to every other parameter the route reads.
            assert_not_500(client, f"{path}?{quote(name)}={HUGE[0]}&{quote(name)}=a%00b")
        if names:
            assert_not_500(client, path + "?" + "&".join(f"{quote(name)}={HUGE[2]}" for name in names))
    # The recording saw the parameters the routes are known to read.
    assert {"after", "before", "user"} <= checked["main.useritems"]
    assert {"q", "attr", "from", "to", "sub", "before"} <= checked["explore.explore"]
    assert {"range", "sub", "attribute"} <= checked["explore.activity"]
    assert "since" in checked["main.notifications"]


@pytest.mark.parametrize("username", ["alice", "root"])
def test_no_route_answers_500_to_a_hostile_path(hostile_app, client, auth, username):
    auth.login(username)
    for value in [*HUGE, "0", "%00", "a%00b", "%ff", "x" * 10_000, "%e2%80%ae"]:
        for path in (f"/user/{value}", f"/useritems/{value}", f"/useritems/{value}/data", f"/static/{value}"):
            assert_not_500(client, path)
    assert_not_500(client, "/useritems/" + str(2**63 - 1))


def test_nul_in_a_form_field_or_json_body_is_refused_not_a_500(hostile_app, client, auth):
    """PostgreSQL's text cannot hold NUL: a sign-in or a polling request holding one gets a 400."""
    token = auth.csrf_token()
    signed_in = client.post("/index", data={"username": "ali\x00ce", "password": "x", "csrf_token": token})
    assert signed_in.status_code == 400
    auth.login()
    token = auth.csrf_token("/user/alice")
    started = client.post("/polling_pubsub", json={"action": "start", "subscription": "sub\x00name"},
                          headers={"X-CSRFToken": token})
    assert started.status_code == 400
    assert "NUL" in started.get_json()["error"]
