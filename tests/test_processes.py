"""The production processes from the Procfile, and the README's local run command, as real processes."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from google.cloud import pubsub_v1

from helpers.services import free_port, stop_process
from tests.conftest import ROOT, drop_schema, service_env, wait_until
from tests.web_client import WebUser, wait_for_http


def procfile_commands(name: str = "Procfile") -> dict[str, str]:
    commands = {}
    for line in (ROOT / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            process, command = line.split(":", 1)
            commands[process.strip()] = command.strip()
    return commands


def heroku_database_url(url: str) -> str:
    """The test database's URL in the form Heroku gives: postgres://user:password@host:port/name."""
    parsed = sa.make_url(url)
    return f"postgres://{parsed.username}:{parsed.password}@{parsed.host}:{parsed.port or 5432}/{parsed.database}"


def start_shell(command: str, env: dict, log_path: Path) -> subprocess.Popen:
    """Run a Procfile command through the shell, as Heroku does, in its own process group."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(["/bin/sh", "-c", command], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def publish_sequence(topic_path: str, count: int, prefix: str) -> dict[str, bytes]:
    publisher = pubsub_v1.PublisherClient()
    sent = {}
    futures = []
    for number in range(count):
        data = f'{{"status": "SUCCESS", "buildId": "{prefix}-{number}"}}'.encode()
        futures.append(publisher.publish(topic_path, data, seq=str(number), buildId=f"{prefix}-{number}"))
        sent[str(number)] = data
    for future in futures:
        future.result(timeout=30)
    return sent


def test_procfile_processes_serve_the_whole_journey_like_heroku(
    app, require_postgres, emulator, redis_server, pubsub_names, tmp_path
):
    """release, web and worker exactly as the Procfile says, with Heroku's environment."""
    drop_schema(app)
    commands = procfile_commands()
    port = free_port()
    env = service_env(app)
    env.pop("RQ_QUEUE")  # the Procfile names the queue itself
    env.update({
        "DATABASE_URL": heroku_database_url(app.config["SQLALCHEMY_DATABASE_URI"]),
        "PORT": str(port), "WEB_CONCURRENCY": "2", "LOG_TO_STDOUT": "1",
        "SUBSCRIPTION_NAME": pubsub_names["subscription"], "PUBSUB_TOPIC": pubsub_names["topic"],
        "ADMIN_PASSWORD": "heroku-admin-pw",
    })
    release = subprocess.run(["/bin/sh", "-c", commands["release"]], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert release.returncode == 0, release.stdout + release.stderr

    web = start_shell(commands["web"], env, tmp_path / "web.log")
    worker = start_shell(commands["worker"], env, tmp_path / "worker.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/index")
        user = WebUser(base)
        assert user.sign_in("admin", "heroku-admin-pw").status_code == 302
        started = user.post("/polling_pubsub", data={"action": "start"})
        assert started.status_code == 202, started.text
        task_id = started.json()["task_id"]

        publish_sequence(pubsub_names["topic_path"], 20, "procfile")
        wait_until(lambda: len(user.item_ids_after()) >= 20, 60, message="20 items over /useritems")
        assert len(user.item_ids_after()) == 20

        stopped = user.post("/polling_pubsub", data={"action": "stop"})
        assert stopped.status_code == 202 and stopped.json()["task_id"] == task_id
        assert user.get_json("/polling_pubsub")["status"] == "idle"
        wait_until(
            lambda: any(n["data"].get("progress") == "Finished" for n in user.get_json("/notifications")),
            30, message="a Finished notification",
        )
        web_log = (tmp_path / "web.log").read_text()
        assert "Booting worker" in web_log  # really gunicorn, honouring WEB_CONCURRENCY
    finally:
        stop_process(web)
        stop_process(worker, timeout=30)


def _descendants(root_pid: int) -> set[int]:
    """Every live process whose ancestry leads to root_pid (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = set()
    for pid in parents:
        ancestor = pid
        while ancestor in parents and ancestor not in (0, 1):
            if parents[ancestor] == root_pid or ancestor in found:
                found.add(pid)
                break
            ancestor = parents[ancestor]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_readme_run_command_serves_sample_messages_and_stops_cleanly_on_ctrl_c(tmp_path):
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("the run command uses its own SQLite database; it runs once, in the SQLite pass")
    """`make run` on a fresh database: the printed URL and credentials work, samples arrive, Ctrl-C cleans up."""
    readme = (ROOT / "README.md").read_text()
    run_command = re.search(r"^(make run)\b", readme, re.MULTILINE)
    assert run_command, "the README's quick start names `make run`"
    env = {key: value for key, value in os.environ.items()
           if key not in {"PUBSUB_EMULATOR_HOST", "REDIS_URL", "DATABASE_URL", "SUBSCRIPTION_NAME"}}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}", "DEVSTACK_DIR": str(tmp_path / "state"),
                "PORT": str(free_port())})
    process = subprocess.Popen(shlex.split(run_command.group(1)), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    started: set[int] = set()
    try:
        def banner():
            text = "".join(lines)
            url = re.search(r"running at (http://\S+?)/?\s", text)
            credentials = re.search(r"Sign in as (\S+) with password (\S+)", text)
            return (url.group(1), credentials.group(1), credentials.group(2)) if url and credentials else None

        base, username, password = wait_until(banner, 240, interval=0.5, message="the printed URL and credentials")
        wait_for_http(base + "/index", 60)
        started = _descendants(process.pid)
        user = WebUser(base)
        assert user.sign_in(username, password).status_code == 302
        assert user.post("/polling_pubsub", data={"action": "start"}).status_code in (200, 202)
        wait_until(lambda: len(user.item_ids_after()) >= 5, 90, message="the sample messages")
        started |= _descendants(process.pid)
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert started, "the run command started no processes"
    try:
        wait_until(lambda: not any(_alive(pid) for pid in started), 10, message="every process to exit")
    except TimeoutError:
        left = [pid for pid in started if _alive(pid)]
        raise AssertionError(f"processes left running after Ctrl-C: {left}\n" + "".join(lines[-40:])) from None

