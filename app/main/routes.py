"""The live page, one message, notifications and the polling controls."""

import sqlalchemy as sa
from flask import Response, abort, current_app, jsonify, render_template, request, url_for
from flask_login import current_user, login_required
from markupsafe import Markup
from pygments.formatters import HtmlFormatter

from app import polling
from app.errors.handlers import error_response
from app.extensions import db
from app.items import keyset_page, list_items, render_item_row
from app.main import bp
from app.models import Notification, User, UserItem
from app.rendering import render_attributes, render_data
from app.security import no_store

MAX_NOTIFICATIONS_PER_RESPONSE = 100
ALL_SUBSCRIPTIONS = "all"


def visible_user(username: str | None) -> User:
    """The user whose data is asked for: yourself, or anyone if you are an admin."""
    if not username or username == current_user.username:
        return current_user._get_current_object()
    user = db.first_or_404(sa.select(User).where(User.username == username))
    if not current_user.is_admin:
        abort(403)
    return user


def selected_subscription(value: str | None) -> str:
    """The subscription a page or poll is narrowed to: a canonical name, or "all"; 400 when invalid."""
    if value is not None and value.strip().lower() == ALL_SUBSCRIPTIONS:
        return ALL_SUBSCRIPTIONS
    try:
        return polling.canonical(value)
    except polling.PollingRefused as refusal:
        abort(400, refusal.message)


def narrowed(query: sa.Select, subscription: str) -> sa.Select:
    return query if subscription == ALL_SUBSCRIPTIONS else query.where(UserItem.subscription == subscription)


@bp.route("/user/<username>")
@login_required
@no_store
def user(username):
    """A user's page for one subscription (or all): newest messages first, live updates, its polling state."""
    owner = visible_user(username)
    subscription = selected_subscription(request.args.get("subscription"))
    rows = list_items(narrowed(owner.items.select(), subscription).order_by(UserItem.id.desc()),
                      current_app.config["ITEMS_PER_PAGE"])
    # The page follows notifications from now on; the task's state is already in the page.
    notifications_since = db.session.scalar(
        sa.select(sa.func.max(Notification.timestamp)).where(Notification.user_id == owner.id)
    )
    choices = polling.user_subscription_names(owner)
    if subscription != ALL_SUBSCRIPTIONS and subscription not in choices:
        choices.append(subscription)
    return render_template(
        "main/user.html",
        owner=owner,
        # Rendered by our own template, which escapes every value: safe to place as HTML.
        rows=[Markup(render_item_row(*row)) for row in rows],
        newest_id=rows[0][0].id if rows else 0,
        oldest_id=rows[-1][0].id if rows else 0,
        more_older=len(rows) == current_app.config["ITEMS_PER_PAGE"],
        notifications_since=notifications_since or 0,
        subscription=subscription,
        choices=[(name, polling.display_name(name)) for name in choices],
        status=None if subscription == ALL_SUBSCRIPTIONS else polling.status(owner, subscription),
    )


@bp.route("/useritems")
@login_required
@no_store
def useritems():
    """Messages newer than `after` (oldest first) or older than `before` (newest first), as rendered rows;
    `subscription` narrows them to one (default: all)."""
    owner = visible_user(request.args.get("user"))
    subscription = selected_subscription(request.args.get("subscription") or ALL_SUBSCRIPTIONS)
    return keyset_page(narrowed(owner.items.select(), subscription))


# The detail page shows this much of a message's data at first; "load all" (?all=1) shows the rest.
DETAIL_PREVIEW_BYTES = 256 * 1024
# Copy buttons hold the data in the page; past this size, the download is the way to take it.
COPY_MAX_BYTES = 1024 * 1024
# Binary data is shown as a hex dump, about twelve times its size in HTML and slow to lay out on a
# phone: the detail page shows at most this much of it, "load all" or not; the download has it all.
HEX_VIEW_MAX_BYTES = 64 * 1024


@bp.route("/useritems/<int:item_id>")
@login_required
@no_store
def useritem(item_id):
    """One message: its first 256 KB rendered (all of it with ?all=1; binary data up to HEX_VIEW_MAX_BYTES),
    its attributes, a download."""
    item = readable_item(item_id)
    limit = None if request.args.get("all") == "1" else DETAIL_PREVIEW_BYTES
    data_size = len(item.data)
    data = render_data(item, limit=limit, hex_limit=HEX_VIEW_MAX_BYTES)
    binary = data.kind == "binary"
    return render_template(
        "main/useritem.html", item=item, data=data,
        attributes=sorted(item.attributes.items()), attributes_json=render_attributes(item),
        data_size=data_size, copyable=data_size <= COPY_MAX_BYTES,
        shown_bytes=HEX_VIEW_MAX_BYTES if binary else DETAIL_PREVIEW_BYTES,
        load_all=data.truncated and not binary,  # text cut to the preview; all of it is a click away
    )


@bp.route("/useritems/<int:item_id>/data")
@login_required
@no_store
def useritem_data(item_id):
    """A message's data byte for byte, as a download (never rendered by the browser)."""
    item = readable_item(item_id)
    extension = "json" if item.is_json else "txt" if item.data_bytes is None else "bin"
    return Response(
        item.data,
        mimetype="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="message-{item.id}.{extension}"',
                 "X-Content-Type-Options": "nosniff"},
    )


def readable_item(item_id: int) -> UserItem:
    """The item, if it is yours or you are an admin; otherwise 404, so ids of others' items stay hidden."""
    item = db.session.get(UserItem, item_id)
    if item is None or (item.user_id != current_user.id and not current_user.is_admin):
        abort(404)
    return item


@bp.route("/notifications")
@login_required
def notifications():
    """The user's notifications newer than `since` (a float timestamp)."""
    since = request.args.get("since", 0.0, type=float)
    query = (
        current_user.notifications.select()
        .where(Notification.timestamp > since)
        .order_by(Notification.timestamp.asc())
        .limit(MAX_NOTIFICATIONS_PER_RESPONSE)
    )
    return jsonify(
        [{"name": n.name, "data": n.get_data(), "timestamp": n.timestamp} for n in db.session.scalars(query)]
    )


@bp.route("/polling_pubsub", methods=["GET"])
@login_required
def polling_status():
    """The state of the user's polling of `subscription` (default: SUBSCRIPTION_NAME); never changes anything."""
    try:
        subscription = polling.canonical(request.args.get("subscription"))
    except polling.PollingRefused as refusal:
        return error_response(refusal.status, refusal.message)
    return jsonify(polling.status(current_user, subscription))


@bp.route("/polling_pubsub", methods=["POST"])
@login_required
def polling_pubsub():
    """Start, stop or dismiss the failure of polling a subscription (action=start|stop|dismiss, form or JSON)."""
    payload = request.get_json(silent=True) or request.form
    action = str(payload.get("action") or "").strip().lower()
    if action not in {"start", "stop", "dismiss"}:
        return error_response(400, "action must be 'start', 'stop' or 'dismiss'.")
    try:
        if action == "start":
            task, started = polling.start(current_user, payload.get("subscription"), payload.get("streams"))
            if not started:
                return jsonify({"status": "polling", "task_id": task.id, "streams": task.streams}), 200
            return jsonify({"status": "success", "task_id": task.id, "streams": task.streams}), 202
        if action == "stop":
            task = polling.stop(current_user, payload.get("subscription"))
            if task is None:
                return jsonify({"status": "error", "task_id": 0}), 200
            return jsonify({"status": "terminated", "task_id": task.id}), 202
        dismissed = polling.dismiss(current_user, payload.get("subscription"))
        return jsonify({"status": "dismissed" if dismissed else "unchanged"}), 200
    except polling.PollingRefused as refusal:
        return error_response(refusal.status, refusal.message)


@bp.route("/pygments.css")
def pygments_css():
    """The highlight styles: the light one, and the dark one under Bootstrap's dark colour mode."""
    light = current_app.html_formatter.get_style_defs(".highlight")
    dark = HtmlFormatter(style=current_app.config["PYGMENTS_DARK_STYLE"]).get_style_defs(
        "[data-bs-theme=dark] .highlight")
    return f"{light}\n{dark}\n", 200, {"Content-Type": "text/css"}


@bp.app_context_processor
def inject_urls():
    return {"page_urls": {
        "notifications": url_for("main.notifications"),
        "useritems": url_for("main.useritems"),
        "polling": url_for("main.polling_pubsub"),
    }}
