"""Subscribing to Pub/Sub: the client, message conversion, the batching writer and the two sources.

Nothing here knows about views or templates; `app.tasks` wires RQ to `run_polling_task`.
"""

from app.pubsub.client import (
    CredentialsError,
    SetupError,
    make_subscriber_client,
    pull_mode,
    subscription_path,
)
from app.pubsub.messages import row_from_pulled, row_from_streamed
from app.pubsub.poller import Poller, run_polling_task
from app.pubsub.sources import PullSource, SourceError, StreamingSource
from app.pubsub.writer import BatchWriter

__all__ = [
    "BatchWriter",
    "CredentialsError",
    "Poller",
    "PullSource",
    "SetupError",
    "SourceError",
    "StreamingSource",
    "make_subscriber_client",
    "pull_mode",
    "row_from_pulled",
    "row_from_streamed",
    "run_polling_task",
    "subscription_path",
]
