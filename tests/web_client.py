"""A small HTTP client for tests that talk to a real server process (gunicorn, flask run)."""

from __future__ import annotations

import re
import time

import requests

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


class WebUser:
    """Signs in through the form, then sends the CSRF header on state changes, as the page does."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.csrf_token: str | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def _token_from(self, path: str) -> str:
        match = CSRF_META.search(self.session.get(self.url(path), timeout=10).text)
        assert match, f"no csrf-token on {path}"
        return match.group(1)

    def sign_in(self, username: str, password: str) -> requests.Response:
        token = self._token_from("/index")
        response = self.session.post(
            self.url("/index"), data={"username": username, "password": password, "csrf_token": token},
            allow_redirects=False, timeout=10,
        )
        if response.status_code == 302:
            self.csrf_token = self._token_from(response.headers["Location"])
        return response

    def post(self, path: str, **kwargs) -> requests.Response:
        headers = {"X-CSRFToken": self.csrf_token or "", **kwargs.pop("headers", {})}
        return self.session.post(self.url(path), headers=headers, timeout=15, **kwargs)

    def get_json(self, path: str, **params):
        response = self.session.get(self.url(path), params=params, timeout=15)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        return response.json()

    def item_ids_after(self, after: int = 0) -> list[int]:
        """Every item id newer than `after`, following the capped pages as the page does."""
        ids: list[int] = []
        while True:
            reply = self.get_json("/useritems", after=after)
            ids += reply["ids"]
            if not reply["more"]:
                return ids
            after = reply["ids"][-1]


def wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout}s")
