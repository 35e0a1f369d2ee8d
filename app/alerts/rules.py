"""Alert rules: validation, creation and the parsed conditions the worker evaluates."""

from __future__ import annotations

import secrets
from functools import lru_cache

import sqlalchemy as sa
from flask import current_app

from app import polling
from app.alerts.targets import TargetRefused, resolve
from app.extensions import db
from app.filterlang import Filter, FilterSyntaxError, parse
from app.models import ALERT_FORMATS, AlertRule, User
from app.names import InvalidSubscriptionName, canonical_subscription


class RuleInvalid(ValueError):
    """A rule cannot be saved; `field` names the form field at fault, the message says why."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@lru_cache(maxsize=4096)
def compiled(condition: str) -> Filter:
    """A rule's condition, parsed once per process (the worker evaluates it on every new message)."""
    return parse(condition, extensions=True)


def new_secret() -> str:
    return secrets.token_hex(32)


def check_condition(condition: str) -> str:
    # Kept as written (not stripped), so that error positions point into what the user typed.
    condition = condition or ""
    try:
        compiled(condition)
    except FilterSyntaxError as error:
        raise RuleInvalid("condition", f"The condition is not valid: {error}.") from None
    return condition


def check_url(url: str) -> str:
    url = (url or "").strip()
    try:
        resolve(url, current_app.config["ALERT_ALLOW_PRIVATE_TARGETS"])
    except TargetRefused as error:
        raise RuleInvalid("url", str(error)) from None
    return url


def check_subscription(user: User, subscription: str | None) -> str | None:
    """None for all the user's subscriptions, else the full path of one in the user's list."""
    subscription = (subscription or "").strip()
    if not subscription:
        return None
    try:
        path = canonical_subscription(subscription, current_app.config["GCP_PROJECT_ID"])
    except InvalidSubscriptionName as error:
        raise RuleInvalid("subscription", str(error)) from None
    if path not in polling.user_subscription_names(user):
        raise RuleInvalid("subscription", f"{subscription} is not in your list of subscriptions.")
    return path


def check_format(value: str | None) -> str:
    value = (value or "json").strip().lower()
    if value not in ALERT_FORMATS:
        raise RuleInvalid("format", "The format is json or slack.")
    return value


def check_name(name: str | None) -> str:
    name = (name or "").strip()
    if not name:
        raise RuleInvalid("name", "Give the rule a name.")
    if len(name) > 128:
        raise RuleInvalid("name", "The name is at most 128 characters.")
    return name


def create_rule(user: User, name: str, condition: str = "", url: str = "", *, subscription: str | None = None,
                format: str = "json", enabled: bool = True) -> AlertRule:  # noqa: A002 (the form's word)
    """Check and add a rule for the user (the caller commits); RuleInvalid says what is wrong.

    Its `secret` is the HMAC key of the signature header: show it to the user now, once.
    """
    rule = AlertRule(user_id=user.id, name=check_name(name), subscription=check_subscription(user, subscription),
                     condition=check_condition(condition), url=check_url(url), format=check_format(format),
                     secret=new_secret(), enabled=enabled)
    db.session.add(rule)
    return rule


def update_rule(rule: AlertRule, user: User, *, name: str, condition: str, url: str, subscription: str | None,
                format: str, enabled: bool) -> None:  # noqa: A002
    """Check and apply an edit (the secret stays); the caller commits."""
    checked = {"name": check_name(name), "subscription": check_subscription(user, subscription),
               "condition": check_condition(condition), "url": check_url(url), "format": check_format(format)}
    for key, value in checked.items():
        setattr(rule, key, value)
    rule.enabled = enabled


def user_rules(user_id: int) -> list[AlertRule]:
    return list(db.session.scalars(
        sa.select(AlertRule).where(AlertRule.user_id == user_id).order_by(AlertRule.name, AlertRule.id)
    ))
