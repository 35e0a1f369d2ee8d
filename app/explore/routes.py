"""Search and filter stored messages, export them, and chart the activity."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import (
    Response,
    current_app,
    jsonify,
    render_template,
    request,
    stream_with_context,
)
from flask_login import current_user, login_required
from markupsafe import Markup

from app import polling
from app.errors.handlers import error_response
from app.explore import bp
from app.explore.charts import (
    MAX_BREAKDOWN_VALUES,
    UNITS,
    attribute_expression,
    bucket_expression,
    column_bars,
    row_bars,
    time_series,
)
from app.explore.export import EXPORT_COLUMNS, csv_chunks, export_rows, jsonl_chunks
from app.explore.filters import FilterError, ItemFilter
from app.extensions import db
from app.items import id_argument, keyset_page, list_items, render_item_row
from app.models import UserItem
from app.names import lenient_canonical
from app.security import no_store


@bp.app_template_filter("b64encode")
def b64encode_filter(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def dialect() -> str:
    return db.engine.dialect.name


def user_subscriptions() -> list[tuple[str, str]]:
    """The subscriptions the user can narrow by, the default first: (canonical name, name shown)."""
    return [(name, polling.display_name(name)) for name in polling.user_subscription_names(current_user)]


def filtered_items(item_filter: ItemFilter) -> sa.Select:
    query = sa.select(UserItem).where(UserItem.user_id == current_user.id)
    return item_filter.apply(query, dialect())


@bp.route("/explore")
@login_required
@no_store
def explore():
    """Search the user's messages; the filter is in the URL and the list updates live."""
    try:
        item_filter = ItemFilter.from_args(request.args, current_app.config["GCP_PROJECT_ID"])
    except FilterError as error:
        return error_response(400, str(error))
    per_page = current_app.config["ITEMS_PER_PAGE"]
    before = id_argument("before")
    query = filtered_items(item_filter)
    if before is not None:
        query = query.where(UserItem.id < before)
    rows = list_items(query.order_by(UserItem.id.desc()), per_page + 1)
    more_older = len(rows) > per_page
    rows = rows[:per_page]
    filter_args = item_filter.to_args()
    return render_template(
        "explore/explore.html",
        item_filter=item_filter,
        filter_args=filter_args,
        rows=[Markup(render_item_row(*row)) for row in rows],
        newest_id=rows[0][0].id if rows and before is None else 0,
        oldest_id=rows[-1][0].id if rows else 0,
        more_older=more_older,
        live=before is None,
        subscriptions=user_subscriptions(),
    )


@bp.route("/explore/items")
@login_required
@no_store
def explore_items():
    """Filtered items newer than `after` (oldest first) or older than `before` (newest first), as JSON."""
    try:
        item_filter = ItemFilter.from_args(request.args, current_app.config["GCP_PROJECT_ID"])
    except FilterError as error:
        # Only scripts ask here: always JSON.
        return jsonify({"status": "error", "error": str(error), "code": 400}), 400
    return keyset_page(filtered_items(item_filter))


def _export(kind: str):
    try:
        item_filter = ItemFilter.from_args(request.args, current_app.config["GCP_PROJECT_ID"])
    except FilterError as error:
        return error_response(400, str(error))
    query = item_filter.apply(sa.select(*EXPORT_COLUMNS).where(UserItem.user_id == current_user.id), dialect())
    chunks = jsonl_chunks if kind == "jsonl" else csv_chunks
    engine = db.engine

    @stream_with_context
    def generate():
        # A connection of its own, held only while the response streams.
        with engine.connect() as connection:
            yield from chunks(export_rows(connection, query))

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    mimetype = "application/x-ndjson" if kind == "jsonl" else "text/csv"
    return Response(
        generate(),
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="messages-{stamp}.{kind}"',
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
    )


@bp.route("/explore/export.jsonl")
@login_required
@no_store
def export_jsonl():
    """The current filter's messages as JSON Lines, data and attributes exact (base64 for binary)."""
    return _export("jsonl")


@bp.route("/explore/export.csv")
@login_required
@no_store
def export_csv():
    """The current filter's messages as CSV."""
    return _export("csv")


@bp.route("/activity")
@login_required
def activity():
    """Messages per minute (or hour) over the last 24 hours, and a breakdown by one attribute."""
    unit = request.args.get("unit", "minute")
    if unit not in UNITS:
        return error_response(400, "unit must be 'minute' or 'hour'")
    subscription = request.args.get("sub", "").strip()
    if subscription:
        subscription = lenient_canonical(subscription, current_app.config["GCP_PROJECT_ID"])
    attribute = request.args.get("attribute", "").strip()
    if '"' in attribute or "\\" in attribute:
        return error_response(400, "the attribute name may not contain quotes or backslashes")
    now = datetime.now(UTC)
    since = now - timedelta(hours=24)
    base = sa.select().select_from(UserItem).where(UserItem.user_id == current_user.id, UserItem.received_at >= since)
    if subscription:
        base = base.where(UserItem.subscription == subscription)
    bucket = bucket_expression(dialect(), unit).label("bucket")
    counts = dict(db.session.execute(base.add_columns(bucket, sa.func.count()).group_by(bucket)).all())
    series = time_series(counts, unit, now)
    breakdown: list[tuple[str, int]] = []
    if attribute:
        value = attribute_expression(dialect(), attribute).label("value")
        count = sa.func.count().label("count")
        breakdown = [
            ("(not set)" if label is None else str(label), total)
            for label, total in db.session.execute(
                base.add_columns(value, count).group_by(value).order_by(count.desc()).limit(MAX_BREAKDOWN_VALUES)
            ).all()
        ]
    chart_width, chart_height = 960, 200
    return render_template(
        "explore/activity.html",
        unit=unit,
        subscription=subscription,
        attribute=attribute,
        subscriptions=user_subscriptions(),
        total=sum(count for _label, count in series),
        peak=max((count for _label, count in series), default=0),
        series_bars=column_bars(series, chart_width, chart_height),
        chart_width=chart_width,
        chart_height=chart_height,
        first_label=series[0][0],
        last_label=series[-1][0],
        breakdown_bars=row_bars(breakdown, 600, 24),
        breakdown_height=max(1, len(breakdown)) * 24,
    )
