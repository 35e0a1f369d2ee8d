"""Take the README's screenshots from the running local stack (`make run`), with Debian's Chromium.

    make run                 # in one terminal
    make screenshots         # in another: writes docs/screenshots/*.png

It signs in as a `demo` admin (created, or given a new random password, on each run, so the
real admin's password is never needed), polls a subscription of its own on the sample topic
(`demo-builds`), publishes a few sample messages (some odd ones too) and photographs each page.
Run it again after a UI change.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.devstack import apply_local_defaults, load_stack_env  # noqa: E402

OUT_DIR = ROOT / "docs" / "screenshots"
# The same flags as the browser tests (tests/conftest.py).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 860}
DEMO_SUBSCRIPTION = "demo-builds"


def flask(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers.devstack", "flask", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)


def demo_user(username: str) -> str:
    """Create the demo admin, or give it a new password; return the password."""
    password = secrets.token_urlsafe(12)
    created = flask("users", "create", username, "--admin", "--password", password)
    if created.returncode != 0:
        if "exists already" not in created.stderr:
            raise SystemExit(f"could not create the user {username}: {created.stderr.strip()}")
        reset = flask("users", "set-password", username, "--password", password)
        if reset.returncode != 0:
            raise SystemExit(f"could not set the password of {username}: {reset.stderr.strip()}")
    return password


def publish(*args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "helpers" / "publish.py"), *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="the running app (default: the one `make run` wrote to .run/env)")
    parser.add_argument("--user", default="demo", help="the admin to sign in as (default: demo)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"where the PNGs go (default: {OUT_DIR})")
    args = parser.parse_args(argv)

    if load_stack_env() is None and not args.url:
        raise SystemExit("No running local stack: start `make run` first (it writes .run/env).")
    apply_local_defaults(os.environ)
    url = (args.url or os.environ.get("DEVSTACK_URL") or "http://127.0.0.1:5000").rstrip("/")
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        raise SystemExit("Debian's Chromium is needed: apt-get install -y chromium")
    password = demo_user(args.user)
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)

        def shoot(name: str, full_page: bool = False) -> None:
            page.wait_for_load_state("networkidle")
            path = args.out / f"{name}.png"
            page.screenshot(path=str(path), full_page=full_page)
            print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")

        page.goto(url + "/index")
        page.fill("input[name=username]", args.user)
        page.fill("input[name=password]", password)
        page.click("[type=submit]")
        page.wait_for_url(f"**/user/{args.user}")

        # Two workers by default: polling the default subscription too would leave demo-builds queued.
        button = page.locator("#pollnav")
        if button.get_attribute("data-polling") == "true":
            button.click()
            page.wait_for_selector("#pollnav:has-text('Start polling')")
        # The demo polls a subscription of its own on the sample topic, so it takes no message
        # from anyone polling the default one (Pub/Sub gives each message to one of them).
        publish("--create", "--subscription", DEMO_SUBSCRIPTION, "--count", "0")
        page.goto(url + "/subscriptions")
        # Subscriptions are listed by their full path, projects/P/subscriptions/S.
        row = page.locator(f"tr.subscription-row[data-name$='/subscriptions/{DEMO_SUBSCRIPTION}']")
        if row.count() == 0:
            page.fill("#add-subscription input[name=name]", DEMO_SUBSCRIPTION)
            page.click("#add-subscription [type=submit]")
            page.wait_for_load_state("networkidle")
        if row.locator(".start-button").count():
            row.locator(".start-button").click()
            page.wait_for_load_state("networkidle")
        # The odd payloads first, so that Cloud Build's JSON is on top.
        publish("--count", "0", "--binary", "--invalid-json")
        publish("--count", "12", "--seed", "7")
        page.goto(url + f"/user/{args.user}?subscription={DEMO_SUBSCRIPTION}")
        deadline = time.monotonic() + 60
        # The page's strict CSP forbids the evaluated script wait_for_function would use.
        while page.locator("#useritems tr.useritem").count() < 15:
            if time.monotonic() > deadline:
                raise SystemExit("the published messages did not reach the page within 60 s; is a worker running?")
            time.sleep(0.5)
        page.click("#useritems tr.useritem >> nth=1 >> button.item-toggle")  # one row expanded, the rest compact
        shoot("live")

        page.click("#useritems tr.useritem >> nth=0 >> a.message-id")
        page.wait_for_load_state("networkidle")
        shoot("message")

        page.goto(url + "/explore?attr=status%3DSUCCESS")
        shoot("search")
        page.goto(url + "/subscriptions")
        shoot("subscriptions")
        page.goto(url + "/activity?range=1h&tz=UTC&attribute=status")
        shoot("activity")
        page.goto(url + "/admin/publish")
        page.click("#publish-form [type=submit]")  # nothing filled in: the form's refusal
        page.wait_for_selector(".invalid-feedback")
        shoot("publish")
        # Leave nothing polling for the demo.
        page.goto(url + "/subscriptions")
        while page.locator(".stop-button").count():
            page.locator(".stop-button").first.click()
            page.wait_for_load_state("networkidle")
        browser.close()
    print(f"Made as {args.user!r}, which polls no longer.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
