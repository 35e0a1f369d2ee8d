"""Taps and the project browser: creating and deleting the app's own subscriptions, listing topics
and subscriptions. Talks to Pub/Sub only; knows nothing of requests, templates or the database.

A tap is a subscription the app creates on a topic for one user, so that the user sees every
message of the topic without taking any from its other consumers. It carries an expiration policy
(TAP_EXPIRATION_DAYS) and the labels `created-by=pubsub-monitor` and `user=<name>`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.protobuf import duration_pb2

from app import filterlang
from app.pubsub.client import CALL_ERRORS, SetupError, make_publisher_client, make_subscriber_client, within
from config import MIN_TAP_EXPIRATION_DAYS

# The longest one call to Pub/Sub takes, retries included (app.pubsub.client.within).
CALL_TIMEOUT_SECONDS = 10
# Taps deleted at once when a user goes (each call takes up to CALL_TIMEOUT_SECONDS).
MAX_PARALLEL_DELETES = 64
TAP_LABELS = {"created-by": "pubsub-monitor"}
# Pub/Sub's rules for topic and subscription ids: 3-255 characters, a letter first, then letters,
# digits and - _ . ~ + %; not starting with "goog".
RESOURCE_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
TOPIC_PATH = re.compile(r"projects/(?P<project>[a-z0-9][a-z0-9\-.:]{1,99})/topics/(?P<id>[^/]+)")
MAX_NAME_LENGTH = 255
SUFFIX_LENGTH = 6  # hex digits: 16.7 million names per user and topic
LABEL_VALUE_LENGTH = 63
VIEWER_ROLE = "roles/pubsub.viewer"


class TapError(ValueError):
    """A tap cannot be created or deleted; the message says why in words a person can act on.

    `field` names the form field the message belongs to (topic or filter), None for the form as a whole.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class BrowseError(RuntimeError):
    """Listing the project failed; the message says why (and which role is missing, when it is that)."""


# --- names and labels ------------------------------------------------------------------------------


def canonical_topic(topic: str, project_id: str) -> str:
    """The topic's full path from a short id or a full path; TapError(field="topic") when invalid."""
    topic = (topic or "").strip()
    if not topic:
        raise TapError("Give a topic: its id (my-topic) or its full path (projects/P/topics/my-topic).", "topic")
    match = TOPIC_PATH.fullmatch(topic)
    if match:
        project, topic_id = match.group("project"), match.group("id")
    elif "/" in topic:
        raise TapError("A topic is an id (my-topic) or a full path (projects/P/topics/my-topic).", "topic")
    else:
        project, topic_id = project_id, topic
    if not RESOURCE_ID.fullmatch(topic_id) or topic_id.lower().startswith("goog"):
        raise TapError("A topic id has 3 to 255 characters: a letter first, then letters, digits and - _ . ~ + %, "
                       "and it does not start with 'goog'.", "topic")
    return f"projects/{project}/topics/{topic_id}"


def label_value(text: str) -> str:
    """A label value Pub/Sub accepts: lowercase letters, digits, _ and -, at most 63 characters."""
    value = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")[:LABEL_VALUE_LENGTH]
    return value or "unnamed"


def tap_id(username: str, topic_path: str, suffix: str | None = None) -> str:
    """A new tap's subscription id: `tap-<user>-<topic>-<random>`, within Pub/Sub's naming rules."""
    suffix = suffix or secrets.token_hex(SUFFIX_LENGTH // 2)
    user_part = re.sub(r"[^A-Za-z0-9\-_.~]+", "-", username).strip("-")[:40] or "user"
    topic_part = topic_path.rsplit("/", 1)[-1]
    room = MAX_NAME_LENGTH - len("tap-") - len(user_part) - len(suffix) - 2
    return f"tap-{user_part}-{topic_part[:room]}-{suffix}"


def tap_expiration_days(config: Mapping[str, Any]) -> int:
    """TAP_EXPIRATION_DAYS, or TapError when it is below Pub/Sub's minimum of one day."""
    days = config.get("TAP_EXPIRATION_DAYS")
    if not isinstance(days, int) or isinstance(days, bool) or days < MIN_TAP_EXPIRATION_DAYS:
        raise TapError(
            f"TAP_EXPIRATION_DAYS is {days!r}, but Pub/Sub's shortest expiration policy is "
            f"{MIN_TAP_EXPIRATION_DAYS} day: an administrator must set it to a whole number of days, 1 or more. "
            "No subscription was created."
        )
    return days


def parse_filter(expression: str | None) -> str:
    """The filter expression as Pub/Sub gets it ('' for none); TapError(field="filter") with the position."""
    expression = (expression or "").strip()
    if not expression:
        return ""
    try:
        filterlang.parse(expression)
    except filterlang.FilterSyntaxError as error:
        raise TapError(f"The filter is not valid: {error.message} at {error.position}.", "filter") from None
    return expression


# --- creating and deleting -------------------------------------------------------------------------


def subscriber_client(config: Mapping[str, Any]):
    try:
        return make_subscriber_client(config)
    except SetupError as error:
        raise TapError(f"Cannot reach Pub/Sub: {error}") from None


def create_tap(config: Mapping[str, Any], username: str, topic: str, expression: str | None = None) -> dict[str, str]:
    """Create a tap on the topic for the user; {"name", "topic", "filter"} of what was created.

    Every check (topic name, filter, TAP_EXPIRATION_DAYS) runs before anything is created.
    """
    days = tap_expiration_days(config)
    topic_path = canonical_topic(topic, config["GCP_PROJECT_ID"])
    expression = parse_filter(expression)
    project = config["GCP_PROJECT_ID"]
    name = f"projects/{project}/subscriptions/{tap_id(username, topic_path)}"
    request = {
        "name": name,
        "topic": topic_path,
        "filter": expression,
        # The poller extends deadlines while a write is slow; a minute leaves room for a slow commit.
        "ack_deadline_seconds": 60,
        "expiration_policy": {"ttl": duration_pb2.Duration(seconds=days * 86400)},
        "labels": {**TAP_LABELS, "user": label_value(username)},
    }
    client = subscriber_client(config)
    try:
        client.create_subscription(request=request, **within(CALL_TIMEOUT_SECONDS))
    except api_exceptions.GoogleAPICallError as error:
        raise TapError(describe_create_error(error, name, topic_path)) from None
    except api_exceptions.RetryError:
        raise TapError(f"Pub/Sub did not answer while creating a tap on {topic_path}. Try again shortly.") from None
    finally:
        client.close()
    return {"name": name, "topic": topic_path, "filter": expression}


def describe_create_error(error: api_exceptions.GoogleAPICallError, name: str, topic_path: str) -> str:
    """What went wrong creating a tap, and what to do about it."""
    if isinstance(error, api_exceptions.PermissionDenied):
        return (f"Permission denied creating a subscription on {topic_path}: the service account needs "
                "pubsub.subscriptions.create on the project and pubsub.topics.attachSubscription on the topic "
                "(roles/pubsub.editor has both, or grant a custom role with them).")
    if isinstance(error, api_exceptions.NotFound):
        return f"Topic {topic_path} does not exist, or the credentials cannot see it."
    if isinstance(error, api_exceptions.AlreadyExists):
        return f"A subscription named {name} already exists. Submit again: the new name gets another suffix."
    if isinstance(error, api_exceptions.InvalidArgument):
        return f"Pub/Sub refused the tap on {topic_path}: {error.message}"
    return f"Pub/Sub did not create the tap on {topic_path} ({error.__class__.__name__}). Try again shortly."


def delete_tap(config: Mapping[str, Any], name: str, client: Any = None) -> bool:
    """Delete a tap's subscription; False when it was already gone (expired, or deleted elsewhere).

    With `client`, the call goes through it (one channel for many deletes) and it stays open.
    """
    own_client = client is None
    if own_client:
        client = subscriber_client(config)
    try:
        client.delete_subscription(request={"subscription": name}, **within(CALL_TIMEOUT_SECONDS))
    except api_exceptions.NotFound:
        return False
    except api_exceptions.GoogleAPICallError as error:
        raise TapError(describe_delete_error(error, name)) from None
    except api_exceptions.RetryError:
        raise TapError(f"Pub/Sub did not answer while deleting {name}. Try again shortly.") from None
    finally:
        if own_client:
            client.close()
    return True


def remove_taps(config: Mapping[str, Any], user_id: int, names: list[str]) -> dict[str, TapError]:
    """Stop polling the user's taps, wait (TAP_STOP_WAIT_SECONDS in all) for their jobs to let go, then
    delete their subscriptions; the taps Pub/Sub did not delete, with why. Commits the stops."""
    from app import polling  # app.polling imports the app's models; this module is also used without them

    polling.stop_for_removal(user_id, names, config["TAP_STOP_WAIT_SECONDS"])
    if not names:
        return {}
    # Side by side, so that deleting many taps while Pub/Sub is slow takes one call's timeout, not one
    # each: with the wait above, a web request's deletion stays within its 30 s. One client (one gRPC
    # channel, safe across threads) carries them all.
    client = subscriber_client(config)
    try:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_DELETES, len(names))) as pool:
            futures = {name: pool.submit(delete_tap, config, name, client) for name in names}
    finally:
        client.close()
    failed = {}
    for name, future in futures.items():
        try:
            future.result()
        except TapError as error:
            failed[name] = error
    return failed


def describe_delete_error(error: api_exceptions.GoogleAPICallError, name: str) -> str:
    """What went wrong deleting a tap, and what to do about it."""
    if isinstance(error, api_exceptions.PermissionDenied):
        return (f"Permission denied deleting {name}: the service account needs pubsub.subscriptions.delete "
                "(roles/pubsub.editor has it, or grant a custom role with it). The tap stays in your list.")
    return (f"Pub/Sub did not delete {name} ({error.__class__.__name__}). The tap stays in your list; "
            "try removing it again shortly.")


# --- browsing the project --------------------------------------------------------------------------


@dataclass
class Page:
    """One page of a listing, and the token of the next page ('' on the last)."""

    entries: list[dict[str, Any]]
    next_token: str


def describe_browse_error(error: BaseException, what: str, project: str) -> str:
    """Why listing `what` (topics, subscriptions) in the project failed, naming the missing role."""
    if isinstance(error, api_exceptions.PermissionDenied):
        return (f"Permission denied listing the {what} of project {project}: the credentials need "
                f"pubsub.{what}.list, which {VIEWER_ROLE} grants.")
    if isinstance(error, api_exceptions.Unauthenticated | api_exceptions.Unauthorized):
        return f"Google Cloud rejected the credentials while listing the {what} of project {project}."
    if isinstance(error, api_exceptions.NotFound):
        return f"Project {project} does not exist, or the credentials cannot see it."
    if isinstance(error, api_exceptions.InvalidArgument):
        return f"Pub/Sub refused to list the {what} of project {project}: {error.message}"
    if isinstance(error, SetupError):
        return f"Cannot reach Pub/Sub: {error}"
    return f"Pub/Sub did not list the {what} of project {project} ({error.__class__.__name__}). Try again shortly."


def _list_page(config: Mapping[str, Any], what: str, make_client, lister, close, page_size: int,
               page_token: str) -> tuple[list, str]:
    """One page of the project's `what` (topics, subscriptions), and the next page's token; BrowseError.

    `make_client(config)` makes the client, `lister(client)` is its list method and `close(client)`
    closes it (publisher and subscriber clients close differently).
    """
    project = config["GCP_PROJECT_ID"]
    try:
        client = make_client(config)
        try:
            response = next(iter(lister(client)(
                request={"project": f"projects/{project}", "page_size": page_size, "page_token": page_token},
                **within(CALL_TIMEOUT_SECONDS),
            ).pages))
            return list(getattr(response, what)), response.next_page_token
        finally:
            close(client)
    except (SetupError, *CALL_ERRORS) as error:
        raise BrowseError(describe_browse_error(error, what, project)) from None


def list_topics(config: Mapping[str, Any], page_size: int, page_token: str = "") -> Page:
    """One page of the project's topics the credentials can list; BrowseError with the reason."""
    topics, next_token = _list_page(config, "topics", make_publisher_client, lambda client: client.list_topics,
                                    lambda client: client.transport.close(), page_size, page_token)
    return Page([{"name": topic.name, "labels": dict(topic.labels)} for topic in topics], next_token)


def list_subscriptions(config: Mapping[str, Any], page_size: int, page_token: str = "") -> Page:
    """One page of the project's subscriptions the credentials can list, with their settings."""
    subscriptions, next_token = _list_page(config, "subscriptions", make_subscriber_client,
                                           lambda client: client.list_subscriptions, lambda client: client.close(),
                                           page_size, page_token)
    return Page([subscription_details(subscription) for subscription in subscriptions], next_token)


def duration_words(value: timedelta | None) -> str | None:
    """A Pub/Sub duration for people: '7 days', '1 hour 30 minutes', '45 seconds'; None when unset."""
    if value is None:
        return None
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return None
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts)


def subscription_details(subscription) -> dict[str, Any]:
    """The settings the browse page shows for one subscription (a google.pubsub_v1.Subscription)."""
    dead_letter = None
    if subscription.dead_letter_policy and subscription.dead_letter_policy.dead_letter_topic:
        dead_letter = {"topic": subscription.dead_letter_policy.dead_letter_topic,
                       "max_delivery_attempts": subscription.dead_letter_policy.max_delivery_attempts or 5}
    ttl = subscription.expiration_policy.ttl if "expiration_policy" in subscription else None
    return {
        "name": subscription.name,
        "topic": subscription.topic,
        "filter": subscription.filter or "",
        "ack_deadline_seconds": subscription.ack_deadline_seconds,
        # Pub/Sub's default retention is 7 days when none was set.
        "retention": duration_words(subscription.message_retention_duration) or "7 days",
        "dead_letter": dead_letter,
        # No expiration policy: Pub/Sub's default, 31 days of inactivity. An empty ttl: never expires.
        "expiration": ("after 31 days of inactivity (the default)" if ttl is None
                       else f"after {duration_words(ttl)} of inactivity" if duration_words(ttl) else "never"),
        "labels": dict(subscription.labels),
        "is_tap": subscription.labels.get("created-by") == TAP_LABELS["created-by"],
    }
