"""Helpers for tests that need a server that is there and says nothing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def silent_server() -> Iterator[int]:
    """The port of a server on 127.0.0.1 that takes connections and never answers (an overloaded or cut-off
    service): the kernel completes each connection, and nothing ever reads or writes on it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield silent.getsockname()[1]


def answer_within(call: Callable[[], Any], limit: float) -> tuple[Any, float]:
    """(what call returned, seconds it took); fails after `limit` seconds without waiting for it to return.

    It runs in a thread: a call that hangs inside a C library (libpq) is beyond pytest-timeout's reach."""
    results = []
    worker = threading.Thread(target=lambda: results.append(call()), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(limit)
    elapsed = time.monotonic() - started
    assert results, f"no answer after {elapsed:.0f} s"
    return results[0], elapsed
