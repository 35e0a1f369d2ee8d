"""What the benches share: a fresh PostgreSQL database, the Procfile's processes, memory, CPU.

Every process a bench starts through this module (redis-server, the emulator's Java,
gunicorn, rq workers: `RedisServer`, `PubSubEmulator`, `start_procfile_process`,
`spawn`) and every database it creates (`FreshDatabase`) is stopped or dropped when
the bench ends, also when it fails or is interrupted: importing this module registers
an atexit hook, and turns SIGTERM and SIGHUP into SystemExit so that `finally` blocks
and that hook run (SIGINT already raises KeyboardInterrupt). Each process runs in its
own session and is stopped as a whole process group. Only SIGKILL escapes this.

Not a test helper and not run in CI.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import normalise_database_url  # noqa: E402
from helpers import services  # noqa: E402
from helpers.services import (  # noqa: E402, F401
    create_topic_and_subscription,
    free_port,
    stop_process,
    wait_for_port,
    wait_until,
)

# --- clean-up: whatever a bench started goes when it ends, fails or is interrupted -------------------

_cleanups: list[Callable[[], None]] = []  # newest last; each is safe to call twice
_signalled = False


def on_exit(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` when the bench exits, however it exits (unless it is SIGKILLed)."""
    _cleanups.append(cleanup)


def clean_up() -> None:
    """Stop every process and drop every database registered so far, newest first."""
    while _cleanups:
        cleanup = _cleanups.pop()
        try:
            cleanup()
        except Exception as error:  # noqa: BLE001 - one failed clean-up must not keep the others from running
            print(f"clean-up {cleanup!r} failed: {error.__class__.__name__}: {error}", file=sys.stderr)


def _exit_on_signal(signum: int, _frame) -> None:
    global _signalled
    if _signalled:
        return  # already on the way out: let the clean-up finish
    _signalled = True
    print(f"\n{signal.Signals(signum).name}: stopping what this bench started", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


atexit.register(clean_up)
for _signal in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_signal, _exit_on_signal)


def spawn(args: list[str], **options) -> subprocess.Popen:
    """Popen in a new session (a process group of its own), stopped with its group when the bench exits."""
    process = subprocess.Popen(args, start_new_session=True, **options)
    on_exit(lambda: stop_process(process, timeout=15))
    return process


class RedisServer(services.RedisServer):
    """helpers.services.RedisServer, stopped when the bench exits."""

    def start(self) -> RedisServer:
        on_exit(self.stop)  # before starting: a start that fails half-way leaves a process too
        return super().start()


class PubSubEmulator(services.PubSubEmulator):
    """helpers.services.PubSubEmulator (a Java process), stopped when the bench exits."""

    def start(self, timeout: float = 60) -> PubSubEmulator:
        on_exit(self.stop)
        return super().start(timeout)


@contextlib.contextmanager
def emulator_and_redis(workdir_prefix: str):
    """A fresh work folder, the emulator (its log in that folder, PUBSUB_EMULATOR_HOST set for this
    process) and Redis, as (workdir, emulator, redis); Redis and then the emulator are stopped at the end."""
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix))
    emulator = PubSubEmulator(log_path=str(workdir / "emulator.log")).start()
    redis = RedisServer().start()
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    try:
        yield workdir, emulator, redis
    finally:
        redis.stop()
        emulator.stop()


DEFAULT_SERVER = "postgresql://pubsub:pubsub@localhost:5432/postgres"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


class FreshDatabase:
    """A new PostgreSQL database with the app's schema (through the migrations, as `flask deploy` does)."""

    def __init__(self, server_url: str | None = None):
        server = sa.make_url(normalise_database_url(server_url or DEFAULT_SERVER))
        self.name = f"bench_{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        on_exit(self.drop)
        self.url = server.set(database=self.name).render_as_string(hide_password=False)
        env = dict(os.environ, DATABASE_URL=self.url, SECRET_KEY="bench", FLASK_APP="gcpubsub.py")
        flask = str(Path(sys.executable).with_name("flask"))
        subprocess.run([flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)

    def drop(self) -> None:
        drop_database(self.admin, self.name)
        self.admin.dispose()


def drop_database(admin: sa.Engine, name: str, attempts: int = 30) -> None:
    """Drop a scratch database, however its sessions stand.

    A plain DROP ends an autovacuum worker busy on the fresh rows itself, which FORCE may not do for a
    non-superuser (it would need to signal the worker); FORCE ends sessions of the bench's own that are
    still open. A session of another role that neither may end finishes soon: so try again for a while.
    """
    for attempt in range(attempts):
        for statement in (f'DROP DATABASE IF EXISTS "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'):
            try:
                with admin.connect() as connection:
                    connection.execute(sa.text(statement))
                return
            except sa.exc.DBAPIError:
                if attempt == attempts - 1 and "FORCE" in statement:
                    raise
        time.sleep(1)


def procfile_command(process_type: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process_type:
            return command.strip()
    raise LookupError(f"no {process_type} in the Procfile")


def start_procfile_process(process_type: str, env: dict[str, str], log_path: Path,
                           extra_args: list[str] | None = None) -> subprocess.Popen:
    """Run a Procfile entry as honcho/Heroku would (through the shell), `exec`ed so its pid is the process's."""
    command = procfile_command(process_type)
    if extra_args:
        command += " " + " ".join(shlex.quote(argument) for argument in extra_args)
    env = dict(env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with open(log_path, "ab") as log:
        return spawn(["sh", "-c", f"exec {command}"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def app_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return dict(os.environ, DATABASE_URL=database_url, REDIS_URL=redis_url, SECRET_KEY="bench-secret",
                GCP_PROJECT_ID="bench-project", LOG_TO_STDOUT="1", PYTHONUNBUFFERED="1",
                SIGN_IN_LIMIT_PER_ADDRESS="10000/minute", **extra)


def start_web(env: dict[str, str], log_path: Path,
              access_log_format: str | None = None) -> tuple[subprocess.Popen, str]:
    """gunicorn as the Procfile runs it (gunicorn.conf.py: 2 workers x 4 threads unless the env says otherwise)."""
    port = free_port()
    extra = ["--access-logformat", access_log_format] if access_log_format else None
    process = start_procfile_process("web", dict(env, PORT=str(port)), log_path, extra)
    wait_for_port(port, 60, process)
    return process, f"http://127.0.0.1:{port}"


def page_bench_parser(description: str, warmup_help: str) -> argparse.ArgumentParser:
    """The options of the benches whose simulated pages poll gunicorn (bench/web.py, bench/retention.py):
    --clients, --warmup and --database-url. The bench adds its own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=10, help=warmup_help)
    parser.add_argument("--database-url", help="PostgreSQL server URL; the bench creates its fresh database(s) on it")
    return parser


def start_page_bench(name: str, headline: str) -> tuple[Path, RedisServer]:
    """A fresh folder for bench/<name>.py's logs, announced with the headline and the load average, and Redis."""
    workdir = Path(tempfile.mkdtemp(prefix=f"pubsub-bench-{name}-"))
    print(f"bench/{name}.py: {headline}; logs in {workdir}; load {load_average()}", flush=True)
    return workdir, RedisServer().start()


def sign_in(base_url: str, username: str, password: str) -> tuple[requests.Session, str]:
    """A signed-in session and its CSRF token."""
    session = requests.Session()
    token = CSRF_META.search(session.get(base_url + "/index", timeout=30).text).group(1)
    response = session.post(base_url + "/index", data={"username": username, "password": password,
                                                       "csrf_token": token}, allow_redirects=False, timeout=30)
    if response.status_code != 302:
        raise RuntimeError(f"sign-in as {username} failed: {response.status_code}")
    page = session.get(base_url + response.headers["Location"], timeout=60).text
    return session, CSRF_META.search(page).group(1)


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def started_ticks(pid: int) -> int:
    """When a process started, in clock ticks since boot (0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def rss_kb(pid: int) -> int:
    """Resident memory of one process in kB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def jit_seconds(pid: int) -> float:
    """CPU seconds a Java process's JIT compiler threads ("C1 CompilerThread0", "C2 ...") have used so far
    (0 for any other process): the emulator compiles its code as it meets it, for minutes.

    A lower bound: the JVM ends compiler threads it no longer needs, and their time leaves /proc with them.
    """
    total = 0
    try:
        paths = list(Path(f"/proc/{pid}/task").glob("*/stat"))
    except OSError:  # the process ended
        return 0.0
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        if name.startswith(("C1 Compiler", "C2 Compiler")):
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / tick, sum(fields) / tick


def run_queue_wait_seconds(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(path.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


class CpuMeter:
    """CPU seconds used so far by named groups of processes, by the engine's database's PostgreSQL
    backends ("postgres") and by the whole machine, with each group's run-queue wait ("<name>_wait":
    time its threads were ready to run but had no core) and its Java JIT compiling ("<name>_jit", within
    "<name>"). Sample before and after, and subtract.

    `groups` is called at each sample, so processes started in between (work horses) are found.
    Backends that closed in between are not counted; a pool keeps them open. Without a PostgreSQL
    engine (SQLite), "postgres" is 0.
    """

    def __init__(self, engine: sa.Engine | None, groups: Callable[[], dict[str, list[int]]]):
        self.engine, self.groups = engine, groups

    def sample(self) -> dict[str, float]:
        backends = []
        if self.engine is not None and self.engine.dialect.name == "postgresql":
            with self.engine.connect() as connection:
                backends = connection.execute(sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
                    {"name": self.engine.url.database}).scalars().all()
        figures: dict[str, float] = {}
        for name, pids in {**self.groups(), "postgres": backends}.items():
            figures[name] = sum(cpu_seconds(pid) for pid in pids)
            figures[f"{name}_wait"] = sum(run_queue_wait_seconds(pid) for pid in pids)
            figures[f"{name}_jit"] = sum(jit_seconds(pid) for pid in pids)
        busy, total = machine_busy_seconds()
        return {**figures, "machine_busy": busy, "machine_total": total, "wall": time.monotonic()}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    stop_process(process, timeout=timeout)
