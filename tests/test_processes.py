"""The production processes from the Procfile, and the README's local run command, as real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
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
    env.pop("RQ_QUEUE")  # the Procfile names the queues itself
    env.pop("RQ_ALERTS_QUEUE")
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


JAVA_STACK_FRAME = re.compile(r"^\s+at [\w$.<>]+\(.*\)\s*$|Exception in thread", re.MULTILINE)
BANNER_URL = re.compile(r"running at (http://\S+/)")


class MakeRun:
    """`make run` in its own process group, as a terminal runs it, with its console captured."""

    def __init__(self, env: dict[str, str]):
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.process.stdout.readline, "")),
                         daemon=True).start()
        self.processes: set[int] = set()

    @property
    def console(self) -> str:
        return "".join(self.lines)

    def wait_for_banner(self) -> tuple[str, float]:
        """The URL the banner prints, and how long it took to appear."""
        def banner():
            match = BANNER_URL.search(self.console)
            if match and "Ctrl-C" in self.console[match.end():]:
                return match.group(1)
            assert self.process.poll() is None, f"make run ended before its banner:\n{self.console}"
            return None

        url = wait_until(banner, 240, interval=0.2, message="the banner\n" + self.console)
        return url, time.monotonic() - self.started_at

    def note_processes(self) -> None:
        self.processes |= _descendants(self.process.pid)

    def interrupt(self) -> float:
        """Ctrl-C: SIGINT to the whole process group. Returns the seconds until every process ended."""
        self.note_processes()
        interrupted = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        while any(_alive(pid) for pid in self.processes) and time.monotonic() - interrupted < 30:
            time.sleep(0.1)
        return time.monotonic() - interrupted

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in self.processes:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _stored_data(database: Path) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT subscription, data_text FROM user_item").fetchall()
    # Stored by the full path (projects/P/subscriptions/S); the checks name the short one.
    return [(subscription.rpartition("/")[2], data) for subscription, data in rows]


def _make(target: str, env: dict[str, str], args: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", target, f"ARGS={args}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(600)
def test_make_run_twice_keeps_its_port_and_its_word_and_stops_cleanly_on_ctrl_c(tmp_path):
    """The README's `make run`, run twice in a row as a new user would, with a second terminal beside it.

    Both runs come up on port 5000 and print the URL; only the first prints the admin's password;
    `make publish` reaches the running stack; two workers poll two subscriptions at once; Ctrl-C
    ends every process within 15 s, with no traceback, no Java stack trace and no `make: ***` line.
    """
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("the run command uses its own SQLite database; it runs once, in the SQLite pass")
    from helpers.devstack import WEB_PORT, listener_holds

    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make run$", readme, re.MULTILINE), "the README's quick start names `make run`"
    database = tmp_path / "fresh.db"
    env = {key: value for key, value in os.environ.items()
           if key not in {"PUBSUB_EMULATOR_HOST", "REDIS_URL", "DATABASE_URL", "SUBSCRIPTION_NAME", "PUBSUB_TOPIC",
                          "PORT", "WORKERS", "ADMIN_PASSWORD", "SECRET_KEY", "GOOGLE_APPLICATION_CREDENTIALS",
                          "RQ_QUEUE", "MAKEFLAGS", "MAKELEVEL"}}
    env.update({"DATABASE_URL": f"sqlite:///{database}", "DEVSTACK_DIR": str(tmp_path / "state")})
    # The second terminal: nothing set by hand but where this stack keeps its state.
    second_terminal = {key: value for key, value in env.items() if key != "DATABASE_URL"}
    port_5000_held = listener_holds(WEB_PORT)
    times = []

    first = MakeRun(env)
    try:
        url, seconds = first.wait_for_banner()
        times.append(seconds)
        first.note_processes()
        password = re.search(r"Sign in as admin with password (\S+)", first.console).group(1)
        user = WebUser(url)
        assert user.sign_in("admin", password).status_code == 302
        assert user.post("/polling_pubsub", data={"action": "start"}).status_code in (200, 202)
        wait_until(lambda: len(user.item_ids_after()) >= 5, 90, message="the sample messages")

        published = _make("publish", second_terminal, "--data second-terminal-marker --count 0")
        assert published.returncode == 0, published.stdout + published.stderr
        wait_until(lambda: ("monitor-sub", "second-terminal-marker") in _stored_data(database), 30,
                   message="the message `make publish` sent, stored by the worker")

        # A second subscription polls at the same time as the first, on the second worker.
        created = _make("publish", second_terminal,
                        "--create --topic other-topic --subscription other-sub --data other-marker --count 0")
        assert created.returncode == 0, created.stdout + created.stderr
        assert user.post("/polling_pubsub", data={"action": "start", "subscription": "other-sub"}).status_code == 202
        wait_until(lambda: all(user.get_json("/polling_pubsub", subscription=name)["status"] == "polling"
                               for name in ("monitor-sub", "other-sub"))
                   and ("other-sub", "other-marker") in _stored_data(database),
                   30, message="both subscriptions polling, the second one's message stored")

        users = _make("flask", second_terminal, "users list")
        assert users.returncode == 0 and users.stdout.startswith("admin\t"), users.stdout + users.stderr

        changed = user.post("/change_password", data={"current_password": password, "new_password": "changed-pw-1",
                                                      "confirm_password": "changed-pw-1"})
        assert changed.status_code == 200, changed.text
        first.note_processes()
        stop_seconds = first.interrupt()
    finally:
        first.kill()

    second = MakeRun(env)
    try:
        second_url, seconds = second.wait_for_banner()
        times.append(seconds)
        second.note_processes()
        assert WebUser(second_url).sign_in("admin", "changed-pw-1").status_code == 302
        second_stop_seconds = second.interrupt()
    finally:
        second.kill()

    print(f"\nmake run: {times[0]:.1f} s to the banner on a fresh database, {times[1]:.1f} s the second time; "
          f"Ctrl-C took {stop_seconds:.1f} s and {second_stop_seconds:.1f} s")
    for run, seconds in ((first, stop_seconds), (second, second_stop_seconds)):
        console = run.console
        assert seconds < 15, f"Ctrl-C took {seconds:.1f} s\n{console[-3000:]}"
        left = [pid for pid in run.processes if _alive(pid)]
        assert not left, f"processes left running after Ctrl-C: {left}\n{console[-3000:]}"
        assert "make: ***" not in console, console[-3000:]
        # The stack's own process ended with 0 ("Everything stopped."); make itself, like any program
        # that gets SIGINT, ends by it once its child is done, and says nothing when the child succeeded.
        assert "Everything stopped." in console, console[-3000:]
        assert run.process.returncode in (0, -signal.SIGINT), console[-3000:]
        assert "Traceback" not in console, console
        assert not JAVA_STACK_FRAME.search(console), console
        assert "Stopping: web and workers first, then Redis and the emulator." in console
    assert password not in second.console, "the second banner printed the old password"
    assert "make admin-password" in second.console
    if port_5000_held:
        assert f"Port {WEB_PORT} (the web app) is held by another program" in first.console
        pytest.skip(f"port {WEB_PORT} was held by another program on this machine, so the runs used {url}; "
                    "everything else passed")
    assert url == second_url == f"http://127.0.0.1:{WEB_PORT}/", (first.console, second.console)
