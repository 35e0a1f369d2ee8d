"""The Content-Security-Policy in Debian's Chromium: the app lives with it, and it stops injected code."""

import pytest

from tests.conftest import TEST_PASSWORD, create_user, store_item, wait_until
from tests.test_security_headers import policy_headers

pytestmark = pytest.mark.browser

# Runs before any page script and is not itself subject to the CSP.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__cspViolations.push(event.effectiveDirective + ' ' + (event.blockedURI || 'inline'));
});
"""


@pytest.fixture
def context(browser, live_server):
    context = browser.new_context(base_url=live_server)
    context.add_init_script(RECORD_VIOLATIONS)
    console = []
    context.on("page", lambda page: page.on("console", lambda message: console.append(message.text)))
    context.console = console
    yield context
    context.close()


def csp_console_messages(context) -> list[str]:
    return [text for text in context.console if "Content Security Policy" in text or "Refused to" in text]


def violations(page) -> list[str]:
    return page.evaluate("window.__cspViolations")


def sign_in(context, remember_me=True):
    page = context.new_page()
    page.goto("/index")
    page.fill("#username", "alice")
    page.fill("#password", TEST_PASSWORD)
    if remember_me:
        page.check("#remember_me")  # Bootstrap draws the tick as a data: SVG
    assert violations(page) == []
    page.click("#submit")
    page.wait_for_url("**/user/alice")
    return page


def test_every_page_runs_in_chromium_without_a_csp_violation(app, context):
    alice = create_user(app, "alice")
    store_item(app, alice, "plain text message")
    item_id = store_item(app, alice, {"nested": {"list": [1, 2, 3]}, "text": "highlighted"},
                         attributes={"origin": "test"})
    page = sign_in(context)
    page.wait_for_selector(f"#item-{item_id}")
    # One live poll of /notifications and /useritems (every 5 s), answered and handled.
    with page.expect_response(lambda response: "/useritems?after=" in response.url, timeout=30_000):
        pass
    page.wait_for_load_state("networkidle")
    assert violations(page) == []
    for path in [f"/useritems/{item_id}", "/explore?q=highlighted", "/activity", "/subscriptions",
                 "/no-such-page", "/user/alice"]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert violations(page) == [], path
    assert csp_console_messages(context) == []


def test_chromium_blocks_script_injected_into_the_page(app, context):
    """Were escaping ever to fail, the policy still stops inline script and event handlers."""
    create_user(app, "alice")
    page = sign_in(context)
    page.evaluate("""() => {
        const script = document.createElement('script');
        script.textContent = 'window.__pwned = "inline script"';
        document.body.appendChild(script);
        document.body.insertAdjacentHTML('beforeend', '<img src="/static/missing.png" onerror="window.__pwned = 1">');
        const link = document.createElement('a');
        link.href = 'javascript:window.__pwned = 2';
        document.body.appendChild(link);
        link.click();
    }""")
    # The inline script is refused at once; the event handler once the image has failed to load.
    # Polled from here: wait_for_function would evaluate a string in the page, which the CSP forbids.
    wait_until(lambda: any(entry.startswith("script-src-attr") for entry in violations(page)), 30,
               message="the event handler's CSP violation")
    assert page.evaluate("window.__pwned") is None
    blocked = violations(page)
    assert any(entry.startswith("script-src") for entry in blocked), blocked
    assert len(blocked) >= 2, blocked


def test_chromium_refuses_to_show_the_app_in_a_frame(app, context, live_server):
    page = context.new_page()
    with page.expect_console_message(lambda message: "frame-ancestors" in message.text, timeout=30_000):
        page.set_content(f'<iframe id="framed" src="{live_server}/index"></iframe>')
    framed = page.frame_locator("#framed")
    assert framed.locator("#login-form").count() == 0


def test_browser_gets_exactly_the_headers_the_app_sends(app, client, context):
    """The live server adds nothing: the policy the browser enforces is the app's own."""
    create_user(app, "alice")
    page = context.new_page()
    browser_response = page.goto("/index")
    app_response = client.get("/index")
    # Any HTTP server names itself and the connection; every other header must be the app's.
    received = {name: value for name, value in policy_headers(browser_response.all_headers()).items()
                if name not in ("server", "connection")}
    sent = {name.lower(): value for name, value in policy_headers(app_response.headers).items()}
    assert received == sent
    assert "content-security-policy" in received and received["x-frame-options"] == "DENY"
