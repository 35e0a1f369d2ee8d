import sys
import threading
from collections import OrderedDict

import sqlalchemy as sa
from flask import Response, abort, current_app, jsonify, render_template, request, url_for
from flask_login import current_user, login_required
from markupsafe import Markup
from redis import RedisError
from sqlalchemy.exc import IntegrityError

from app.errors.handlers import error_response
from app.extensions import db
from app.main import bp
from app.main.rendering import render_attributes, render_data, with_previews
from app.models import Notification, Task, User, UserItem, utcnow
from app.resume import job_is_alive
from app.security import no_store

POLLING_TASK = "polling_subscription"
# Each poll answers with at most this many new items; a burst is caught up over
# several polls instead of one huge response.
MAX_ITEMS_PER_RESPONSE = 100
MAX_NOTIFICATIONS_PER_RESPONSE = 100


def visible_user(username: str | None) -> User:
    """The user whose data is asked for: yourself, or anyone if you are an admin."""
    if not username or username == current_user.username:
        return current_user._get_current_object()
    user = db.first_or_404(sa.select(User).where(User.username == username))
    if not current_user.is_admin:
        abort(403)
    return user


class RenderedRows:
    """The app's recently rendered item rows, newest use last (an LRU, shared by a process's threads).

    A stored message never changes, and rendering its row costs a few tenths of a millisecond,
    so the many tabs watching one user's messages render each row once per process instead of
    once per poll, and a scroll back through history is served from memory. The cache is bounded
    by the memory its rows take, not by their number: a row of a large message is many times
    the size of a small one's. The key holds (subscription, message_id) as well as the id, so a
    reused id can never show another message.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.rows: OrderedDict[tuple, str] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> str | None:
        with self.lock:
            row = self.rows.get(key)
            if row is not None:
                self.rows.move_to_end(key)
            return row

    def put(self, key: tuple, row: str) -> None:
        size = sys.getsizeof(row)
        with self.lock:
            old = self.rows.pop(key, None)
            if old is not None:
                self.bytes -= sys.getsizeof(old)
            if size > self.max_bytes:
                return
            self.rows[key] = row
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self.rows.popitem(last=False)
                self.bytes -= sys.getsizeof(evicted)


def rendered_rows() -> RenderedRows:
    cache = current_app.extensions.get("rendered_item_rows")
    if cache is None:
        cache = current_app.extensions.setdefault(
            "rendered_item_rows", RenderedRows(current_app.config["RENDERED_ROWS_CACHE_MB"] * 1024 * 1024)
        )
    return cache


def render_item_row(item: UserItem, text_preview: str | None, bytes_preview: bytes | None) -> str:
    """The item's row in the list (_useritem.html); the same for every viewer."""
    key = (item.id, item.subscription, item.message_id)
    cache = rendered_rows()
    row = cache.get(key)
    if row is None:
        data = render_data(item, previewed=True, text=text_preview, raw=bytes_preview)
        # The row needs no context processors: the template is rendered directly, which costs
        # half as much as render_template on a path that renders up to 100 rows per request.
        row = current_app.jinja_env.get_template("main/_useritem.html").render(
            item=item, data=data, attributes=render_attributes(item),
            detail_url=url_for("main.useritem", item_id=item.id),
        )
        cache.put(key, row)
    return row


def list_items(query: sa.Select, limit: int) -> list:
    """Rows of (item, text_preview, bytes_preview): large data is cut in SQL, not in memory."""
    return list(db.session.execute(with_previews(query).limit(limit)))


@bp.route("/user/<username>")
@login_required
@no_store
def user(username):
    """A user's page: their newest messages first, with live updates."""
    owner = visible_user(username)
    rows = list_items(owner.items.select().order_by(UserItem.id.desc()), current_app.config["ITEMS_PER_PAGE"])
    task = owner.get_task_in_progress(POLLING_TASK)
    # The page follows notifications from now on; the task's state is already in the page.
    notifications_since = db.session.scalar(
        sa.select(sa.func.max(Notification.timestamp)).where(Notification.user_id == owner.id)
    )
    return render_template(
        "main/user.html",
        owner=owner,
        # Rendered by our own template, which escapes every value: safe to place as HTML.
        rows=[Markup(render_item_row(*row)) for row in rows],
        newest_id=rows[0][0].id if rows else 0,
        oldest_id=rows[-1][0].id if rows else 0,
        more_older=len(rows) == current_app.config["ITEMS_PER_PAGE"],
        notifications_since=notifications_since or 0,
        polling=task is not None,
        task=task,
        subscription=current_app.config["SUBSCRIPTION_NAME"],
    )


@bp.route("/useritems")
@login_required
@no_store
def useritems():
    """Items newer than `after` (oldest first) or older than `before` (newest first), as rendered rows."""
    owner = visible_user(request.args.get("user"))
    return keyset_page(owner.items.select())


# Ids are 64-bit in the databases; a cursor beyond that range means "beyond every id".
MAX_ID = 2**63 - 1


def id_argument(name: str) -> int | None:
    """A whole-number id cursor from the query string, held within the databases' 64-bit range;
    None when absent or not a whole number."""
    value = request.args.get(name, type=int)
    return None if value is None else max(-MAX_ID, min(value, MAX_ID))


def keyset_page(query):
    """One page of `query`'s items as JSON rows, by the request's `after` or `before` id.

    `after` (the live poll) answers newer items oldest first, at most MAX_ITEMS_PER_RESPONSE;
    `before` (infinite scroll) answers older items newest first, ITEMS_PER_PAGE of them.
    """
    after = id_argument("after")
    before = id_argument("before")
    if before is not None:
        limit = current_app.config["ITEMS_PER_PAGE"]
        query = query.where(UserItem.id < before).order_by(UserItem.id.desc())
    else:
        limit = MAX_ITEMS_PER_RESPONSE
        query = query.where(UserItem.id > (after or 0)).order_by(UserItem.id.asc())
    # One extra row tells whether more are waiting, without a COUNT.
    rows = list_items(query, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return jsonify(
        {
            "status": "success" if rows else "unchanged",
            "items": [render_item_row(*row) for row in rows],
            "ids": [row[0].id for row in rows],
            "more": more,
        }
    )


@bp.route("/useritems/<int:item_id>")
@login_required
@no_store
def useritem(item_id):
    """One message in full."""
    item = readable_item(item_id)
    return render_template(
        "main/useritem.html", item=item, data=render_data(item, limit=None),
        attributes=render_attributes(item),
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


def task_status(task: Task | None) -> dict:
    if task is None:
        return {"status": "idle", "task_id": None}
    try:
        alive = job_is_alive(task, current_app.redis, utcnow())
    except RedisError:
        alive = None  # unknown while Redis is down; the database still says polling
    return {
        # "stalled": the worker running it is gone; a worker resumes it within seconds of being up.
        "status": "stalled" if alive is False else "polling",
        "task_id": task.id,
        "subscription": task.subscription,
        "description": task.description,
        "stored_count": task.stored_count,
        "streams": task.streams,
        "started_at": task.started_at.isoformat() if task.started_at else None,
    }


@bp.route("/polling_pubsub", methods=["GET"])
@login_required
def polling_status():
    """Status of the user's polling task; never changes anything."""
    subscription = request.args.get("subscription") or None
    return jsonify(task_status(current_user.get_task_in_progress(POLLING_TASK, subscription)))


def parse_streams(value) -> int | None:
    """How many streams (one job each, on as many workers) a polling task runs: 1 when not given,
    None when not a whole number from 1 to MAX_POLLING_STREAMS. See README, "Scaling out"."""
    if value is None or str(value).strip() == "":
        return 1
    try:
        streams = int(str(value).strip())
    except ValueError:
        return None
    return streams if 1 <= streams <= current_app.config["MAX_POLLING_STREAMS"] else None


def streams_message() -> str:
    return f"streams must be a whole number from 1 to {current_app.config['MAX_POLLING_STREAMS']}."


@bp.route("/polling_pubsub", methods=["POST"])
@login_required
def polling_pubsub():
    """Start or stop polling (action=start|stop, as a form field or JSON)."""
    payload = request.get_json(silent=True) or request.form
    action = (payload.get("action") or "").strip().lower()
    subscription = (payload.get("subscription") or current_app.config["SUBSCRIPTION_NAME"]).strip()
    if action not in {"start", "stop"}:
        return error_response(400, "action must be 'start' or 'stop'.")
    streams = parse_streams(payload.get("streams"))
    if streams is None:
        return error_response(400, streams_message())
    current_task = current_user.get_task_in_progress(POLLING_TASK, subscription)
    if action == "start":
        if current_task is not None:
            return jsonify({"status": "polling", "task_id": current_task.id, "streams": current_task.streams}), 200
        try:
            task = current_user.launch_task(
                POLLING_TASK, f"Polling subscription {subscription}", subscription, streams=streams
            )
        except IntegrityError:
            # A concurrent start won the race: report its task.
            db.session.rollback()
            current_task = current_user.get_task_in_progress(POLLING_TASK, subscription)
            return jsonify({"status": "polling", "task_id": current_task.id if current_task else 0}), 200
        except RedisError:
            current_app.logger.exception("Could not queue the polling job")
            return error_response(503, "The task queue (Redis) is unavailable. Try again shortly.")
        current_app.logger.info("User %s started polling %s (task %s, %d streams)", current_user.username,
                                subscription, task.id, streams)
        return jsonify({"status": "success", "task_id": task.id, "streams": streams}), 202
    if current_task is None:
        return jsonify({"status": "error", "task_id": 0}), 200
    current_task.request_stop()
    db.session.commit()
    current_app.logger.info(
        "User %s stopped polling %s (task %s)", current_user.username, subscription, current_task.id
    )
    return jsonify({"status": "terminated", "task_id": current_task.id}), 202


@bp.route("/pygments.css")
def pygments_css():
    """The highlight styles."""
    return current_app.html_formatter.get_style_defs(".highlight"), 200, {"Content-Type": "text/css"}


@bp.app_context_processor
def inject_urls():
    return {"page_urls": {
        "notifications": url_for("main.notifications"),
        "useritems": url_for("main.useritems"),
        "polling": url_for("main.polling_pubsub"),
    }}
