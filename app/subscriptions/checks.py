"""Whether a subscription exists and is reachable, asked of Pub/Sub before it is saved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.pubsub_v1 import Subscription

from app.pubsub.client import CALL_ERRORS, SetupError, make_subscriber_client, subscription_path, within

CHECK_TIMEOUT_SECONDS = 10


class SubscriptionUnavailable(ValueError):
    """The subscription cannot be used; the message is shown on the form."""


def check_subscription(config: Mapping[str, Any], name: str) -> str:
    """The subscription's topic path, or SubscriptionUnavailable with the reason."""
    return fetch_subscription(config, name).topic


def fetch_subscription(config: Mapping[str, Any], name: str) -> Subscription:
    """The subscription as Pub/Sub describes it (topic, filter...), or SubscriptionUnavailable with the reason."""
    path = subscription_path(config["GCP_PROJECT_ID"], name)
    try:
        client = make_subscriber_client(config)
    except SetupError as error:
        raise SubscriptionUnavailable(f"Cannot reach Pub/Sub: {error}") from None
    try:
        subscription = client.get_subscription(request={"subscription": path}, **within(CHECK_TIMEOUT_SECONDS))
    except api_exceptions.NotFound:
        raise SubscriptionUnavailable(f"Subscription {path} does not exist.") from None
    except api_exceptions.PermissionDenied:
        raise SubscriptionUnavailable(
            f"Permission denied on {path}: the service account needs roles/pubsub.subscriber."
        ) from None
    except api_exceptions.InvalidArgument as error:
        raise SubscriptionUnavailable(f"{path} is not a valid subscription name: {error.message}") from None
    except CALL_ERRORS as error:
        raise SubscriptionUnavailable(
            f"Pub/Sub did not answer about {path}: {error.__class__.__name__}. Try again shortly."
        ) from None
    finally:
        client.close()
    return subscription
