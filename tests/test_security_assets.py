"""Assets: everything is served by the app itself, and no served library has a published advisory."""

import re

from tests.conftest import create_user, store_item

ASSET_URL = re.compile(r"""<(?:script|link|img)\b[^>]*?\s(?:src|href)=["']([^"']+)["']""", re.I)
BANNER_VERSION = re.compile(r"(jQuery|Bootstrap) v(\d+)\.(\d+)\.(\d+)")
# The first releases free of every published advisory: jQuery 3.5.0 fixed the last
# htmlPrefilter XSS (CVE-2020-11022/11023); Bootstrap 4 up to 4.6.2 has the carousel XSS
# (CVE-2024-6531), which 5.x does not. The design asks for jQuery 3.7 or later.
MINIMUM_VERSIONS = {"jQuery": (3, 7, 0), "Bootstrap": (5, 0, 0)}


def asset_urls(html: str) -> list[str]:
    return ASSET_URL.findall(html)


def test_pages_load_every_asset_from_the_app_itself(app, client, auth):
    alice = create_user(app, "alice")
    item_id = store_item(app, alice, {"hello": "world"})
    pages = {"/index": client.get("/index").get_data(as_text=True)}
    auth.login()
    for path in ["/user/alice", f"/useritems/{item_id}"]:
        pages[path] = client.get(path).get_data(as_text=True)
    for path, html in pages.items():
        urls = asset_urls(html)
        assert urls, path
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), f"{path} loads {url} from elsewhere"
            assert client.get(url).status_code == 200, f"{path} refers to {url}, which is not served"


def test_served_libraries_are_versions_without_published_advisories(app, client, auth):
    create_user(app, "alice")
    auth.login()
    html = client.get("/user/alice").get_data(as_text=True)
    found = {}
    for url in asset_urls(html):
        if url.endswith((".js", ".css")):
            banner = client.get(url).get_data(as_text=True)[:400]
            match = BANNER_VERSION.search(banner)
            if match:
                found.setdefault(match[1], set()).add(tuple(int(part) for part in match.group(2, 3, 4)))
    assert set(found) == set(MINIMUM_VERSIONS), found
    for library, versions in found.items():
        for version in versions:
            assert version >= MINIMUM_VERSIONS[library], f"{library} {version} has published advisories"


def test_bootstrap_4_and_its_old_jquery_bundled_in_the_wheel_are_not_served(client):
    for path in ["/bootstrap/static/bootstrap4/jquery.min.js", "/bootstrap/static/../bootstrap4/jquery.min.js",
                 "/bootstrap/static/bootstrap4/js/bootstrap.min.js"]:
        assert client.get(path).status_code == 404, path
