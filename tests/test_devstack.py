"""The local stack's pieces on their own: ports, the settings a second terminal reads, the publisher's refusals."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from google.cloud import pubsub_v1

from app.admin.publishing import EMPTY_MESSAGE, EmptyMessageError, publish_one
from helpers import devstack
from helpers.services import free_port
from tests.conftest import ROOT, TEST_PROJECT, create_user, csrf_token_from


def test_a_port_held_only_by_time_wait_sockets_is_free_and_a_listener_moves_the_stack_on(capsys):
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.listen()
        assert devstack.listener_holds(port)
        assert devstack.choose_port(port, "the web app") != port
        assert capsys.readouterr().out.count(f"Port {port} (the web app) is held by another program") == 1
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first, so its end of the connection waits in TIME_WAIT
        client.close()
    assert not devstack.listener_holds(port)
    assert devstack.choose_port(port, "the web app") == port
    assert capsys.readouterr().out == ""


def test_the_stack_settings_file_fills_in_only_what_the_environment_lacks(tmp_path):
    running = {"DEVSTACK_DIR": str(tmp_path), "DATABASE_URL": "sqlite:////tmp/x.db", "SECRET_KEY": "k" * 64,
               "PUBSUB_EMULATOR_HOST": "127.0.0.1:18085", "REDIS_URL": "redis://127.0.0.1:16379/0",
               "GOOGLE_APPLICATION_CREDENTIALS": '{"type":\n"service_account"}'}
    path = devstack.write_stack_env(running)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in path.read_text()  # a multi-line value stays out

    second_terminal = {"DEVSTACK_DIR": str(tmp_path), "REDIS_URL": "redis://elsewhere:6379/0"}
    assert devstack.load_stack_env(second_terminal) == path
    assert second_terminal["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:18085"
    assert second_terminal["DATABASE_URL"] == "sqlite:////tmp/x.db"
    assert second_terminal["REDIS_URL"] == "redis://elsewhere:6379/0"
    assert devstack.load_stack_env({"DEVSTACK_DIR": str(tmp_path / "none")}) is None


def test_local_env_keeps_the_session_key_and_drops_a_stale_admin_password(tmp_path):
    (tmp_path / "local.env").write_text("SECRET_KEY=abc123\nADMIN_PASSWORD=old-password\n")
    assert devstack.local_secret_key(tmp_path) == "abc123"
    text = (tmp_path / "local.env").read_text()
    assert "SECRET_KEY=abc123" in text and "old-password" not in text
    assert len(devstack.local_secret_key(tmp_path / "fresh")) == 64


def run_publish_script(tmp_path, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    """helpers/publish.py as a user runs it: no Pub/Sub settings but those of a (tmp) local stack."""
    env = {key: value for key, value in os.environ.items()
           if key not in {"PUBSUB_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GCP_PROJECT_ID",
                          "PUBSUB_TOPIC", "SUBSCRIPTION_NAME"}}
    env.update({"DEVSTACK_DIR": str(tmp_path), "NO_GCE_CHECK": "true", **env_extra})
    return subprocess.run([sys.executable, str(ROOT / "helpers" / "publish.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_publish_script_with_no_pubsub_says_so_in_one_line(tmp_path):
    result = run_publish_script(tmp_path, "--count", "1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "no Pub/Sub to talk to" in result.stderr and "make run" in result.stderr

    devstack.write_stack_env({"DEVSTACK_DIR": str(tmp_path), "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}"})
    stale = run_publish_script(tmp_path, "--count", "1")
    assert stale.returncode == 1 and "Traceback" not in stale.stderr
    assert "nothing answers at PUBSUB_EMULATOR_HOST" in stale.stderr


def test_publish_script_refuses_an_empty_message(tmp_path):
    result = run_publish_script(tmp_path, "--data", "", "--count", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == f"Cannot publish: {EMPTY_MESSAGE}"
    with pytest.raises(EmptyMessageError):
        publish_one(None, "projects/p/topics/t", b"", {})


def test_publish_script_reaches_the_stack_named_in_run_env(tmp_path, emulator, pubsub_names):
    devstack.write_stack_env({"DEVSTACK_DIR": str(tmp_path), "PUBSUB_EMULATOR_HOST": emulator.host,
                              "GCP_PROJECT_ID": TEST_PROJECT, "PUBSUB_TOPIC": pubsub_names["topic"]})
    result = run_publish_script(tmp_path, "--data", "", "--attribute", "only=attributes", "--count", "0")
    assert result.returncode == 0, result.stderr
    subscriber = pubsub_v1.SubscriberClient()
    try:
        response = subscriber.pull(subscription=pubsub_names["subscription_path"], max_messages=10, timeout=30)
    finally:
        subscriber.close()
    [received] = response.received_messages
    assert received.message.data == b"" and dict(received.message.attributes) == {"only": "attributes"}


def test_admin_publish_form_refuses_an_empty_message_clearly(app, client, auth, emulator, pubsub_names):
    app.config["PUBSUB_EMULATOR_HOST"] = emulator.host
    create_user(app, "root", is_admin=True)
    auth.login("root")
    token = csrf_token_from(client, "/admin/publish")
    page = client.post("/admin/publish", data={"topic": pubsub_names["topic"], "data": "", "attributes": "\n",
                                               "csrf_token": token})
    html = page.get_data(as_text=True)
    assert page.status_code == 400
    assert EMPTY_MESSAGE in html and "InvalidArgument" not in html
    attributes_only = client.post("/admin/publish", data={"topic": pubsub_names["topic"], "data": "",
                                                          "attributes": "status=QUEUED", "csrf_token": token})
    assert attributes_only.status_code == 200 and 'id="published-id"' in attributes_only.get_data(as_text=True)


def test_readme_documents_every_setting_and_shows_screenshots_the_script_makes():
    import re

    readme = (ROOT / "README.md").read_text()
    sources = "".join((ROOT / name).read_text() for name in ("config.py", "gunicorn.conf.py"))
    settings = set(re.findall(r'(?:environ\.get\(|_flag\()"([A-Z_]+)"', sources))
    assert {"SECRET_KEY", "DATABASE_URL", "WEB_CONCURRENCY"} <= settings
    missing = [name for name in sorted(settings) if f"`{name}`" not in readme]
    assert not missing, f"settings missing from the README's configuration table: {missing}"

    script = (ROOT / "helpers" / "screenshots.py").read_text()
    shown = re.findall(r"\]\(docs/screenshots/([\w-]+)\.png\)", readme)
    assert len(shown) >= 5
    for name in shown:
        assert (ROOT / "docs" / "screenshots" / f"{name}.png").is_file(), name
        assert f'shoot("{name}"' in script, f"{name}.png is not made by helpers/screenshots.py"
