"""The Pub/Sub subscriber client, built from the app's configuration."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import google.auth
import grpc
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry, if_exception_type
from google.auth import exceptions as auth_exceptions
from google.cloud import pubsub_v1
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

SCOPES = ["https://www.googleapis.com/auth/pubsub"]
# A Pub/Sub message may be 10 MB; gRPC's default receive limit is 4 MB.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # After an outage, try the emulator again within seconds (gRPC's default waits up to 2 minutes).
    ("grpc.max_reconnect_backoff_ms", 5000),
]
PULL_MODES = ("batch", "streaming")
# What a bounded call tries again within its time: the errors Pub/Sub's client retries its calls on.
TRANSIENT_ERRORS = (api_exceptions.Aborted, api_exceptions.ServiceUnavailable, api_exceptions.Unknown)
# Errors a Pub/Sub call can end in: the server's answer, or retries that ran out of time.
CALL_ERRORS = (api_exceptions.GoogleAPICallError, api_exceptions.RetryError)


class SetupError(RuntimeError):
    """Polling cannot start as configured; the message says why."""


class CredentialsError(SetupError):
    """The Google credentials are missing or unusable; the message says which and why."""


def subscription_path(project_id: str, subscription: str) -> str:
    """The full resource path: the name as given when it already is one."""
    if subscription.startswith("projects/"):
        return subscription
    return f"projects/{project_id}/subscriptions/{subscription}"


def within(seconds: float) -> dict[str, Any]:
    """Keyword arguments that bound one Pub/Sub call, its retries included, to about `seconds`.

    A call's `timeout` alone bounds each attempt, not the call: its default retry goes on trying an
    unreachable Pub/Sub for 60 s (publish, 10 minutes), past a web request's 30 s and a Stop's 2 s.
    Given with a retry, `timeout` is what is left of `seconds` for each attempt, but an attempt that
    starts with under a second left gets all of `seconds` again (google.api_core.timeout), so no
    retry starts in the last second. Running out of time raises RetryError, and an attempt that
    hangs, DeadlineExceeded (CALL_ERRORS holds both kinds of failure).
    """
    retry = Retry(predicate=if_exception_type(*TRANSIENT_ERRORS), initial=0.1, maximum=1.0, multiplier=1.3,
                  timeout=max(0.0, seconds - 1.0))
    return {"retry": retry, "timeout": seconds}


def on_emulator(config: Mapping[str, Any]) -> bool:
    """Whether the app talks to the Pub/Sub emulator (PUBSUB_EMULATOR_HOST set) rather than Google Cloud."""
    return bool(config.get("PUBSUB_EMULATOR_HOST"))


def pull_mode(config: Mapping[str, Any]) -> str:
    """`PUBSUB_PULL_MODE`, or batch on the emulator and streaming on Google Cloud."""
    mode = (config.get("PUBSUB_PULL_MODE") or "").strip().lower()
    if not mode:
        return "batch" if on_emulator(config) else "streaming"
    if mode not in PULL_MODES:
        raise SetupError(f"PUBSUB_PULL_MODE must be 'batch' or 'streaming', not {mode!r}")
    return mode


def credentials_from_info(info: Any, origin: str):
    """Credentials from a parsed key: a service-account key, or a user's application-default credentials."""
    kind = info.get("type") if isinstance(info, dict) else None
    try:
        if kind == "service_account":
            return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        if kind == "authorized_user":
            return user_credentials.Credentials.from_authorized_user_info(info, scopes=SCOPES)
    except (auth_exceptions.GoogleAuthError, ValueError) as error:
        raise CredentialsError(f"{origin} is not a usable key: {error}") from None
    raise CredentialsError(f"{origin} is not a usable key: type {kind!r} is not 'service_account'")


def load_credentials(value: str | None):
    """Credentials from a key file path or the key's JSON text, else application default credentials."""
    if value and value.strip():
        value = value.strip()
        if value.startswith("{"):
            origin, text = "GOOGLE_APPLICATION_CREDENTIALS", value
        else:
            origin = f"GOOGLE_APPLICATION_CREDENTIALS key file {value}"
            try:
                text = Path(value).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise CredentialsError(
                    f"GOOGLE_APPLICATION_CREDENTIALS names a key file that does not exist: {value}"
                ) from None
            except (OSError, UnicodeDecodeError) as error:
                raise CredentialsError(f"{origin} cannot be read: {error.__class__.__name__}") from None
        try:
            info = json.loads(text)
        except ValueError:
            raise CredentialsError(
                f"{origin} is not valid JSON; set GOOGLE_APPLICATION_CREDENTIALS to a service-account "
                "key file path or the key's JSON text"
            ) from None
        return credentials_from_info(info, origin)
    try:
        credentials, _project = google.auth.default(scopes=SCOPES)
    except auth_exceptions.DefaultCredentialsError:
        raise CredentialsError(
            "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key "
            "file or its JSON text (or PUBSUB_EMULATOR_HOST to use the emulator)"
        ) from None
    return credentials


def make_subscriber_client(config: Mapping[str, Any]) -> pubsub_v1.SubscriberClient:
    """A SubscriberClient for the emulator when PUBSUB_EMULATOR_HOST is set, else for Google Cloud."""
    emulator_host = config.get("PUBSUB_EMULATOR_HOST")
    if emulator_host:
        channel = grpc.insecure_channel(emulator_host, options=CHANNEL_OPTIONS)
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    credentials = load_credentials(config.get("GOOGLE_APPLICATION_CREDENTIALS"))
    return pubsub_v1.SubscriberClient(credentials=credentials)


def topic_path(project_id: str, topic: str) -> str:
    """The full topic path: the name as given when it already is one."""
    if topic.startswith("projects/"):
        return topic
    return f"projects/{project_id}/topics/{topic}"


def make_publisher_client(config: Mapping[str, Any]):
    """A (synchronous, unbatched) publisher for the emulator when PUBSUB_EMULATOR_HOST is set, else Google Cloud.

    The low-level client publishes a list of messages in one call and returns their ids, with no
    background batching threads in the web process; it takes ordering keys as they are.
    """
    from google.pubsub_v1 import PublisherClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    emulator_host = config.get("PUBSUB_EMULATOR_HOST")
    if emulator_host:
        channel = grpc.insecure_channel(emulator_host, options=CHANNEL_OPTIONS)
        return PublisherClient(transport=PublisherGrpcTransport(channel=channel))
    credentials = load_credentials(config.get("GOOGLE_APPLICATION_CREDENTIALS"))
    return PublisherClient(credentials=credentials)
