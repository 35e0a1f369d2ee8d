"""The whole journey in Chromium, with the real worker, the emulator and helpers/publish.py."""

import json
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, ROOT, create_user, service_env
from tests.test_browser import LIVE_UPDATE_MS, browser_context, sign_in  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


def publish(app, topic: str, count: int) -> list[dict]:
    """Publish Cloud Build-style samples with the project's own publisher; returns what it published."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "helpers" / "publish.py"), "--project", app.config["GCP_PROJECT_ID"],
         "--topic", topic, "--count", str(count), "--json"],
        cwd=ROOT, env=service_env(app), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_journey_start_polling_receive_messages_live_then_stop(
    app, browser_context, pubsub_names, worker_factory  # noqa: F811
):
    context, _ = browser_context
    app.config["SUBSCRIPTION_NAME"] = pubsub_names["subscription"]
    app.config["PUBSUB_TOPIC"] = pubsub_names["topic"]
    create_user(app, "alice")
    worker = worker_factory()
    page = sign_in(context)
    button = page.locator("#pollnav")
    expect(button).to_have_text("Start polling")

    button.click()
    expect(page.locator("#clnt-alert")).to_contain_text("Started polling")
    expect(button).to_have_text("Stop polling")
    # Queued until the worker takes the job; "Polling" once it listens, shown at the next poll.
    expect(page.locator("#current-task")).to_be_visible()
    expect(page.locator("#current-task")).to_have_attribute("data-status", "polling", timeout=20_000)
    expect(page.locator("#task-progress")).to_have_text("Polling")
    assert "alert-success" in page.get_attribute("#current-task", "class")

    published = publish(app, pubsub_names["topic"], 3)
    assert len(published) == 3
    rows = page.locator("#useritems tr.useritem")
    expect(rows).to_have_count(3, timeout=LIVE_UPDATE_MS)
    # The status box counts them as soon as they show, not at the job's next progress report.
    expect(page.locator("#task-count")).to_have_text("3 stored", timeout=2_000)
    shown = rows.all_inner_texts()
    for message in published:
        # The emulator numbers its messages 1, 2, 3: match the id cell exactly.
        message_id = page.locator(".message-id", has_text=re.compile(rf"^{re.escape(message['message_id'])}$"))
        row = page.locator("#useritems tr.useritem", has=message_id)
        expect(row).to_have_count(1)
        row.locator(".item-time").click()  # expanded in place
        expect(row.locator(".item-data .highlight .nt").first).to_be_visible()  # highlighted JSON keys
        for name, value in message["attributes"].items():
            attribute = row.locator(".item-attributes tr", has=page.locator("th", has_text=re.compile(rf"^{name}$")))
            expect(attribute.locator("td")).to_have_text(value)
    assert len(shown) == 3
    page.screenshot(path=str(ARTIFACTS / "journey.png"), full_page=True)

    button.click()
    expect(page.locator("#clnt-alert")).to_contain_text("Stopping polling")
    expect(button).to_have_text("Start polling")
    # Stopping, then finished: the job writes what it holds and ends; the box then goes.
    expect(page.locator("#current-task")).to_be_hidden(timeout=20_000)
    with app.app_context():
        from app.extensions import db
        from app.models import Task

        assert [task.state for task in db.session.scalars(sa.select(Task))] == ["finished"]

    page.reload()
    expect(page.locator("#pollnav")).to_have_text("Start polling")
    expect(rows).to_have_count(3)
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
