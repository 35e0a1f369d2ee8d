"""Pub/Sub subscription names: checked against Pub/Sub's rules and kept in one canonical form.

A subscription is stored everywhere (tasks, messages, the subscriptions list) as its full path,
`projects/P/subscriptions/S`, so the short name and the full path are the same subscription.
Pure functions: no Flask, no gRPC.
"""

from __future__ import annotations

import re

# Pub/Sub's rules for a subscription id: 3-255 characters, a letter first, then letters, digits
# and - _ . ~ + %; it must not start with "goog".
SUBSCRIPTION_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
# A project id (or a domain-scoped one, example.com:my-project).
PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9\-.:]{1,99}")
FULL_PATH = re.compile(r"projects/(?P<project>[^/]+)/subscriptions/(?P<id>[^/]+)")


class InvalidSubscriptionName(ValueError):
    """The name breaks Pub/Sub's naming rules; the message says how."""


def canonical_subscription(name: str, project_id: str) -> str:
    """The full path of a short name or full path; InvalidSubscriptionName when it is not a valid name."""
    name = (name or "").strip()
    if not name:
        raise InvalidSubscriptionName("A subscription name is required.")
    if len(name) > 400:
        raise InvalidSubscriptionName("A subscription name has at most 255 characters.")
    match = FULL_PATH.fullmatch(name)
    if match:
        project, subscription_id = match.group("project"), match.group("id")
        if not PROJECT_ID.fullmatch(project):
            raise InvalidSubscriptionName(f"{project!r} is not a valid project id.")
    elif "/" in name:
        raise InvalidSubscriptionName(
            "A subscription is a short name or projects/PROJECT/subscriptions/NAME."
        )
    else:
        project, subscription_id = project_id, name
    if not SUBSCRIPTION_ID.fullmatch(subscription_id) or subscription_id.lower().startswith("goog"):
        raise InvalidSubscriptionName(
            "A subscription name has 3 to 255 characters: a letter first, then letters, digits "
            "and - _ . ~ + %, and it does not start with 'goog'."
        )
    return f"projects/{project}/subscriptions/{subscription_id}"


def lenient_canonical(name: str, project_id: str) -> str:
    """The canonical form where the name is valid, else the name as given (for filters and lookups)."""
    try:
        return canonical_subscription(name, project_id)
    except InvalidSubscriptionName:
        return (name or "").strip()


def short_subscription(path: str, project_id: str) -> str:
    """The short name when the subscription is in the app's own project, else the full path (for display)."""
    match = FULL_PATH.fullmatch(path or "")
    if match and match.group("project") == project_id:
        return match.group("id")
    return path or ""
