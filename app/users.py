"""Managing users: the rules shared by `flask users` and the admin's users pages.

Helpers add and change rows; the caller (a CLI command or a view) commits.
"""

from __future__ import annotations

import logging
import secrets

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.models import (
    SUBSCRIPTION_TAP,
    Alert,
    AlertRule,
    Notification,
    Subscription,
    Task,
    User,
    UserItem,
    lock_user_items,
)
from app.subscriptions import taps

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 8
MAX_USERNAME_LENGTH = 64


class UserRuleError(ValueError):
    """A change the rules refuse; the message says why, in words for the person who asked."""


def find_user(username: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.username == username))


def all_users() -> list[User]:
    return list(db.session.scalars(sa.select(User).order_by(User.username)))


def admin_count(lock: bool = False) -> int:
    """How many admins there are. With `lock`, their rows stay locked (on PostgreSQL) until the transaction
    ends, so that two admins deleting each other at once cannot both pass the last-admin rule."""
    if lock:
        # FOR NO KEY UPDATE: still one deletion at a time, but not in the way of a foreign key's check on
        # the row (a polling job's notification for that admin), which could deadlock with delete_user.
        return len(db.session.scalars(
            sa.select(User.id).where(User.is_admin.is_(True)).with_for_update(key_share=True)).all())
    return db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.is_admin.is_(True))) or 0


def new_password(password: str | None) -> tuple[str, bool]:
    """The password to set and whether it was generated (then it is shown once)."""
    if password:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise UserRuleError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
        return password, False
    return secrets.token_urlsafe(12), True


def create_user(username: str, email: str | None = None, password: str | None = None,
                is_admin: bool = False) -> tuple[User, str | None]:
    """Add a user; return it and the generated password, if one was generated."""
    username = (username or "").strip()
    if not username or len(username) > MAX_USERNAME_LENGTH:
        raise UserRuleError(f"a username has 1 to {MAX_USERNAME_LENGTH} characters")
    if find_user(username) is not None:
        raise UserRuleError(f"user {username!r} exists already")
    email = (email or "").strip() or f"{username}@localhost"
    if db.session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise UserRuleError(f"the email {email!r} belongs to another user")
    password, generated = new_password(password)
    user = User(username=username, email=email, is_admin=is_admin)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user, password if generated else None


def reset_password(user: User, password: str | None = None) -> str | None:
    """Set a user's password (their other sessions end); return it if it was generated."""
    password, generated = new_password(password)
    user.set_password(password)
    return password if generated else None


def set_admin(user: User, is_admin: bool, acting: User | None = None) -> None:
    """Grant or revoke admin rights; nobody revokes their own, and the last admin stays one."""
    if not is_admin and user.is_admin:
        if acting is not None and acting.id == user.id:
            raise UserRuleError("you cannot remove your own admin rights; ask another admin")
        if admin_count() <= 1:
            raise UserRuleError(f"{user.username!r} is the last admin")
    user.is_admin = is_admin


def delete_user(user: User) -> list[str]:
    """Delete a user with their messages, tasks, notifications, subscriptions and alert rules; never the last admin.

    Their taps go from Pub/Sub first, once their jobs have let go of them, as when they remove one
    themselves (app.subscriptions.taps.remove_taps): that step commits the stops, and a tap it
    deleted stays deleted even if the caller's commit then fails. Returns the taps Pub/Sub did not
    delete (an outage, a missing permission): those expire by themselves, as every tap does.
    """
    if user.is_admin and admin_count() <= 1:
        raise UserRuleError(f"{user.username!r} is the last admin and cannot be deleted")
    names = tap_names(user)
    left = []
    if names:
        for name, error in taps.remove_taps(current_app.config, user.id, names).items():
            log.warning("Deleting user %s: tap %s stays until it expires: %s", user.username, name, error.message)
            left.append(name)
        # The stops committed, and waiting took time: check again, as the deletes begin.
        if user.is_admin and admin_count(lock=True) <= 1:
            raise UserRuleError(f"{user.username!r} is the last admin and cannot be deleted")
    # Before the deletes: a polling job's batch of their messages either commits before they start, or
    # waits and then finds the user gone (user_item has no foreign key: app.models.UserItem.user_id).
    lock_user_items(db.session, user.id)
    rules = sa.select(AlertRule.id).where(AlertRule.user_id == user.id)
    db.session.execute(sa.delete(Alert).where(Alert.rule_id.in_(rules)))
    for model in (UserItem, Notification, Task, Subscription, AlertRule):
        db.session.execute(sa.delete(model).where(model.user_id == user.id))
    # The rows that point at the user are gone; delete the row itself without loading relationships.
    db.session.execute(sa.delete(User).where(User.id == user.id))
    return left


def taps_left_words(left: list[str]) -> str:
    """What to tell whoever deleted a user about taps Pub/Sub did not delete ('' when there are none)."""
    if not left:
        return ""
    return (f"Pub/Sub did not delete {len(left)} of their taps ({', '.join(left)}); each expires by itself "
            f"once unused for its expiration period (TAP_EXPIRATION_DAYS when it was made; now "
            f"{current_app.config['TAP_EXPIRATION_DAYS']} days).")


def tap_names(user: User) -> list[str]:
    """The Pub/Sub subscriptions the app created for this user (taps), oldest first."""
    return list(db.session.scalars(sa.select(Subscription.name).where(
        Subscription.user_id == user.id, Subscription.kind == SUBSCRIPTION_TAP).order_by(Subscription.id)))


def stored_message_count(user: User) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(UserItem).where(UserItem.user_id == user.id)) or 0
