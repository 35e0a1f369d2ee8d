"""Over the sign-in limit, a browser gets the sign-in form back with how long to wait (issue 16)."""

import re

from tests.conftest import csrf_token_from


def test_sign_in_limit_shows_the_form_with_the_seconds_to_wait(app, client):
    for attempt in range(10):
        token = csrf_token_from(client)
        assert client.post("/index", data={"username": f"nobody-{attempt}", "password": "wrong-password",
                                           "csrf_token": token}).status_code == 401
    token = csrf_token_from(client)
    refused = client.post("/index", data={"username": "nobody", "password": "wrong-password", "csrf_token": token},
                          headers={"Accept": "text/html,application/xhtml+xml"})
    assert refused.status_code == 429
    html = refused.get_data(as_text=True)
    wait = int(re.search(r'id="sign-in-limit">Too many attempts; try again in (\d+) s\.<', html).group(1))
    assert 0 < wait <= 60
    assert abs(wait - int(refused.headers["Retry-After"])) <= 1
    assert 'id="login-form"' in html and 'id="username"' in html and 'id="password"' in html
    assert 'name="csrf_token"' in html  # the form can be sent again once the wait is over
