"""Admin only: publish a message from the UI, and replay a stored one unchanged."""

from __future__ import annotations

from functools import wraps

from flask import abort, current_app, render_template
from flask_login import current_user, login_required
from google.api_core import exceptions as api_exceptions

from app.admin import bp
from app.admin.forms import PublishForm, ReplayForm, parse_attributes
from app.admin.publishing import EMPTY_MESSAGE, is_empty_message, publish_one
from app.extensions import db
from app.models import UserItem
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
    except (api_exceptions.GoogleAPICallError, api_exceptions.RetryError) as error:
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
