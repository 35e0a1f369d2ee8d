"""Admin only: publish a message from the UI, replay a stored one unchanged, and the storage page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import wraps

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from google.api_core import exceptions as api_exceptions
from redis import RedisError

from app import retention
from app.admin import bp
from app.admin.forms import PublishForm, ReplayForm, RetentionForm, parse_attributes
from app.admin.publishing import EMPTY_MESSAGE, is_empty_message, publish_one
from app.extensions import db
from app.models import User, UserItem, as_utc
from app.names import InvalidSubscriptionName, canonical_subscription, short_subscription
from app.pubsub.client import SetupError, make_publisher_client, topic_path
from app.subscriptions.checks import SubscriptionUnavailable, check_subscription


def admin_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403, "Only an administrator may see this page or do this.")
        return view(*args, **kwargs)

    return wrapped


def publish(topic: str, data: bytes, attributes: dict[str, str], ordering_key: str) -> tuple[str | None, str | None]:
    """(message id, None) or (None, the reason it failed)."""
    path = topic_path(current_app.config["GCP_PROJECT_ID"], topic)
    try:
        publisher = make_publisher_client(current_app.config)
    except SetupError as error:
        return None, f"Cannot reach Pub/Sub: {error}"
    try:
        message_id = publish_one(publisher, path, data, attributes, ordering_key)
    except api_exceptions.NotFound:
        return None, f"Topic {path} does not exist."
    except api_exceptions.PermissionDenied:
        return None, f"Permission denied on {path}: the service account needs roles/pubsub.publisher."
    except api_exceptions.RetryError:
        return None, f"Pub/Sub did not answer while publishing to {path}. Try again shortly."
    except api_exceptions.GoogleAPICallError as error:
        return None, f"Publishing to {path} failed: {error.__class__.__name__}"
    finally:
        publisher.transport.close()
    current_app.logger.info("Admin %s published message %s to %s", current_user.username, message_id, path)
    return message_id, None


@bp.route("/publish", methods=["GET", "POST"])
@login_required
@admin_required
def publish_message():
    """Publish a message (data, attributes, ordering key) to a topic; shows the id Pub/Sub returns."""
    form = PublishForm()
    message_id = error = None
    if not form.is_submitted():
        form.topic.data = current_app.config["PUBSUB_TOPIC"]
    status = 200
    if form.validate_on_submit():
        data, attributes = (form.data.data or "").encode("utf-8"), parse_attributes(form.attributes.data)
        if is_empty_message(data, attributes):
            form.data.errors.append(EMPTY_MESSAGE)
            status = 400
        else:
            message_id, error = publish(form.topic.data.strip(), data, attributes, form.ordering_key.data or "")
            status = 200 if error is None else 502
    return render_template("admin/publish.html", form=form, message_id=message_id, error=error), status


@bp.route("/replay/<int:item_id>", methods=["POST"])
@login_required
@admin_required
def replay(item_id):
    """Publish a stored message again with its data, attributes and ordering key unchanged."""
    item = db.get_or_404(UserItem, item_id)
    form = ReplayForm()
    if not form.validate_on_submit():
        abort(400, "The replay form was incomplete.")
    topic = (form.topic.data or "").strip()
    if not topic:
        try:
            topic = check_subscription(current_app.config, item.subscription)
        except SubscriptionUnavailable as error:
            return render_template("admin/replayed.html", item=item, message_id=None, error=str(error)), 502
    # As received: a quarantined message's text columns hold only a readable copy.
    original = item.original_message()
    message_id, error = publish(topic, original["data"], original["attributes"], original["ordering_key"])
    return render_template("admin/replayed.html", item=item, topic=topic, message_id=message_id,
                           error=error), 200 if error is None else 502


@dataclass
class StorageRow:
    user_id: int
    username: str
    subscription: str
    messages: int
    bytes: int
    oldest: datetime | None
    override: int | None
    days: int


def storage_rows() -> list[StorageRow]:
    """Messages, bytes and the oldest message per user and subscription, with each one's retention."""
    default_days = current_app.config["MESSAGE_RETENTION_DAYS"]
    overrides = {(user_id, name): days for user_id, name, days in retention.overrides()}
    counts = db.session.execute(
        sa.select(UserItem.user_id, UserItem.subscription, sa.func.count().label("messages"),
                  sa.func.coalesce(sa.func.sum(UserItem.size), 0).label("bytes"),
                  sa.func.min(UserItem.received_at).label("oldest"))
        .group_by(UserItem.user_id, UserItem.subscription)
    ).all()
    found = {(row.user_id, row.subscription): row for row in counts}
    usernames = {user_id: name for user_id, name in db.session.execute(sa.select(User.id, User.username))}
    rows = []
    keys = sorted(set(found) | set(overrides), key=lambda key: (usernames.get(key[0], ""), key[1]))
    for user_id, subscription in keys:
        counted = found.get((user_id, subscription))
        override = overrides.get((user_id, subscription))
        rows.append(StorageRow(
            user_id=user_id, username=usernames.get(user_id, "?"), subscription=subscription,
            messages=counted.messages if counted else 0, bytes=int(counted.bytes) if counted else 0,
            oldest=as_utc(counted.oldest) if counted else None, override=override,
            days=default_days if override is None else override,
        ))
    return rows


@bp.route("/storage")
@login_required
@admin_required
def storage():
    """The database's size, messages per subscription, and the retention passes (last and next)."""
    status = retention.size_status(retention.database_size_bytes())
    try:
        last, next_at, schedule_known = retention.last_pass(), retention.next_pass_at(), True
    except RedisError:
        last, next_at, schedule_known = None, None, False
    rows = storage_rows()
    forms = {}
    for row in rows:
        form = RetentionForm(formdata=None, user_id=row.user_id, subscription=row.subscription, days=row.override)
        forms[(row.user_id, row.subscription)] = form
    return render_template("admin/storage.html", status=status, rows=rows, forms=forms, last=last,
                           next_at=next_at, schedule_known=schedule_known,
                           default_days=current_app.config["MESSAGE_RETENTION_DAYS"],
                           interval=current_app.config["RETENTION_INTERVAL_SECONDS"],
                           total_messages=sum(row.messages for row in rows),
                           total_bytes=sum(row.bytes for row in rows), human_size=retention.human_size)


@bp.route("/storage/retention", methods=["POST"])
@login_required
@admin_required
def set_retention():
    """Set one user's retention for one subscription (empty days: back to MESSAGE_RETENTION_DAYS)."""
    form = RetentionForm()
    if not form.validate_on_submit():
        problems = "; ".join(f"{name}: {', '.join(errors)}" for name, errors in form.errors.items())
        flash(f"Retention not changed: {problems}", "danger")
        return redirect(url_for("admin.storage")), 303
    if not form.user_id.data.isdigit():
        abort(400, "The retention form names no user.")
    user = db.get_or_404(User, int(form.user_id.data))
    try:
        subscription = canonical_subscription(form.subscription.data, current_app.config["GCP_PROJECT_ID"])
    except InvalidSubscriptionName as error:
        abort(400, str(error))
    retention.set_retention_days(user.id, subscription, form.days.data)
    db.session.commit()
    current_app.logger.info("Admin %s set the retention of %s for %s to %s", current_user.username, subscription,
                            user.username, "the default" if form.days.data is None else f"{form.days.data} days")
    days = current_app.config["MESSAGE_RETENTION_DAYS"] if form.days.data is None else form.days.data
    amount = "forever" if days == 0 else f"{days:g} days"
    if form.days.data is None:
        kept = f"as long as the default ({amount})"
    else:
        kept = amount if days == 0 else f"for {amount}"
    # Nothing is deleted here: say when older messages go, not only the new rule.
    when = "" if days == 0 else " Older ones are deleted at the next retention pass."
    flash(f"{user.username}'s messages of {short_subscription(subscription, current_app.config['GCP_PROJECT_ID'])} "
          f"are now kept {kept}.{when}", "success")
    return redirect(url_for("admin.storage")), 303


@bp.app_context_processor
def storage_warning():
    """`database_size_warning()` for the live page: the size status when an admin should see it, else None."""

    def database_size_warning() -> retention.SizeStatus | None:
        if not (current_user.is_authenticated and current_user.is_admin):
            return None
        if current_app.config["DATABASE_SIZE_LIMIT_MB"] <= 0:
            return None
        status = retention.cached_size_status()
        return status if status.level != "ok" else None

    return {"database_size_warning": database_size_warning}
