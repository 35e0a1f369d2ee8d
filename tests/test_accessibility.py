"""axe-core (through axe-playwright-python) on every page, in the light and the dark colour mode.

The violations found on each page are printed in the test output (and saved to
test-artifacts/axe-<mode>.txt); any of critical or serious impact fails the test.
"""

from __future__ import annotations

import time

import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.conftest import ARTIFACTS, TEST_PASSWORD, create_user, store_item
from tests.test_browser import sign_in

pytestmark = pytest.mark.browser

BLOCKING_IMPACTS = {"critical", "serious"}


def follow_colour_scheme(page) -> None:
    """Use Bootstrap's dark mode when the browser prefers it, unless the page chose a mode itself."""
    page.evaluate("""() => {
        const root = document.documentElement;
        if (!root.hasAttribute('data-bs-theme')) {
            root.setAttribute('data-bs-theme', matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
        }
    }""")
    # Buttons fade to the new colours (Bootstrap's transitions): measure contrast once they are done.
    deadline = time.monotonic() + 5
    while page.evaluate("document.getAnimations().length") and time.monotonic() < deadline:
        page.wait_for_timeout(50)


def violations_on(page, axe: Axe) -> list[dict]:
    follow_colour_scheme(page)
    violations = axe.run(page).response["violations"]
    for violation in violations:
        for node in violation["nodes"]:
            node["in_highlighted_code"] = page.evaluate(
                "target => { const element = document.querySelector(target); "
                "return Boolean(element && element.closest('.highlight')); }", str(node["target"][0]))
    return violations


def describe(violations: list[dict]) -> str:
    if not violations:
        return "none"
    return "; ".join(f"{violation['impact']} {violation['id']} ×{len(violation['nodes'])} "
                     f"({', '.join(str(node['target'][0]) for node in violation['nodes'][:3])})"
                     for violation in violations)


@pytest.fixture
def pages_to_check(app):
    """A signed-in admin's pages, with stored messages of each kind to show."""
    root = create_user(app, "root", is_admin=True, subscriptions=("other-sub",))
    bob = create_user(app, "bob")
    store_item(app, root, {"status": "SUCCESS", "nested": {"list": [1, 2, 3]}}, {"status": "SUCCESS", "env": "prod"})
    store_item(app, root, b"\x00\x01\xfe\xffbinary", {"status": "FAILURE"})
    item_id = store_item(app, root, "plain text message", {"status": "SUCCESS"})
    return [
        ("Live", "/user/root"),
        ("Search", "/explore?q=message&attr=status%3DSUCCESS"),
        ("Search with a field error", "/explore?from=not-a-date"),
        ("Message detail", f"/useritems/{item_id}"),
        ("Subscriptions", "/subscriptions"),
        ("Activity", "/activity?range=1h&attribute=status"),
        ("Activity with a field error", "/activity?range=custom&from=bad"),
        ("Account", "/account"),
        ("Users (admin)", "/admin/users"),
        ("Storage (admin)", "/admin/storage"),
        ("Delete user (admin)", f"/admin/users/{bob}/delete"),
        ("Publish (admin)", "/admin/publish"),
        ("Not found", "/user/nobody"),
    ]


def outside_highlighted_code(violations: list[dict]) -> list[dict]:
    """The violations left when nodes inside Pygments' highlighted code are set aside."""
    kept = []
    for violation in violations:
        nodes = [node for node in violation["nodes"] if not node["in_highlighted_code"]]
        if nodes:
            kept.append({**violation, "nodes": nodes})
    return kept


@pytest.mark.parametrize("colour_scheme", ["light", "dark"])
def test_no_critical_or_serious_axe_violation_on_any_page(browser, live_server, pages_to_check, colour_scheme,
                                                           capsys):
    axe = Axe()
    context = browser.new_context(base_url=live_server, color_scheme=colour_scheme,
                                  viewport={"width": 1280, "height": 900})
    report: dict[str, list[dict]] = {}
    try:
        page = context.new_page()
        page.goto("/index")
        report["Sign-in"] = violations_on(page, axe)
        page.fill("#username", "root")
        page.fill("#password", "wrong-password")
        page.click("#submit")
        report["Sign-in, wrong password"] = violations_on(page, axe)
        page.close()
        page = sign_in(context, "root", TEST_PASSWORD)
        for name, path in pages_to_check:
            page.goto(path)
            report[name] = violations_on(page, axe)
        page.goto("/admin/users")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("tr.user-row[data-username=bob] .reset-password").click()
        page.wait_for_url("**/password")
        report["New password shown once (admin)"] = violations_on(page, axe)
    finally:
        context.close()
    lines = [f"axe-core violations, {colour_scheme} mode:"]
    lines += [f"  {name}: {describe(violations)}" for name, violations in report.items()]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"axe-{colour_scheme}.txt").write_text("\n".join(lines) + "\n")
    with capsys.disabled():  # in the test output even when it passes
        print("\n" + "\n".join(lines))
    blocking = {name: [v["id"] for v in violations if v["impact"] in BLOCKING_IMPACTS]
                for name, violations in report.items()}
    assert not any(blocking.values()), {name: ids for name, ids in blocking.items() if ids}
