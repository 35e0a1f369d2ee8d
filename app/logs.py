"""Logging setup for web and worker alike: the app's events to stdout or to a rotating file.

Secrets are redacted in every log record by app.security (installed by security.init_app).
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from flask import Flask


def configure_logging(app: Flask) -> None:
    """One handler on the app's logger ("app"), which every `app.*` module logger reaches."""
    if app.testing:
        return
    from flask.logging import default_handler

    app.logger.removeHandler(default_handler)
    # A worker creates the app more than once in one process (its own, then each job's): one handler.
    if any(getattr(handler, "_pubsub_monitor", False) for handler in app.logger.handlers):
        return
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if app.config["LOG_TO_STDOUT"]:
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        log_dir = Path(app.root_path).parent / "logs"
        log_dir.mkdir(exist_ok=True)
        handler = RotatingFileHandler(log_dir / "gcpubsub.log", maxBytes=1_000_000, backupCount=10)
    handler._pubsub_monitor = True
    handler.setFormatter(formatter)
    handler.setLevel(logging.INFO)
    app.logger.addHandler(handler)
    app.logger.setLevel(logging.INFO)
