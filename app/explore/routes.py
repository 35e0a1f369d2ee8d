"""Search and filter stored messages, export them, and chart the activity."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import (
    Response,
    current_app,
    jsonify,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user, login_required
from markupsafe import Markup

from app import polling
from app.errors.handlers import error_response, wants_json_response
from app.explore import bp
from app.explore.charts import (
    EARLIEST,
    LATEST,
    MAX_CUSTOM_RANGE,
    MAX_LATENCY_ROWS,
    RANGES,
    TOP_VALUES,
    TimeWindow,
    attribute_expression,
    bucket_expression,
    column_chart,
    latency_expression,
    latency_percentiles,
    preset_window,
    row_bars,
    time_window,
    top_with_other,
)
from app.explore.export import EXPORT_COLUMNS, csv_chunks, export_rows, jsonl_chunks
from app.explore.filters import FilterError, ItemFilter, parse_time, parse_zone
from app.extensions import db
from app.filterlang import FilterSyntaxError, parse
from app.filterquery import Expression, matching_rows, scan
from app.items import id_argument, keyset_page, list_items, render_item_row, scanned_page
from app.models import Subscription, UserItem, iso
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
        return filter_form_with_error(error)
    per_page = current_app.config["ITEMS_PER_PAGE"]
    before = id_argument("before")
    query = filtered_items(item_filter)
    expression = item_filter.compiled(dialect())
    scan_note = None
    if expression is None:
        if before is not None:
            query = query.where(UserItem.id < before)
        rows = list_items(query.order_by(UserItem.id.desc()), per_page + 1)
        more_older = len(rows) > per_page
        rows = rows[:per_page]
        newest_id = rows[0][0].id if rows else 0
        older_than = rows[-1][0].id if rows else 0
    else:
        # SQL narrows to candidates; the evaluator decides each, over a bounded scan (app.filterquery).
        limit = current_app.config["FILTER_SCAN_MAX_MESSAGES"]
        result = scan(db.session, query, expression, before=before, max_matches=per_page + 1, max_scanned=limit)
        ids = [row.id for row in result.matches[:per_page]]
        rows = list_items(query.where(UserItem.id.in_(ids)).order_by(UserItem.id.desc()), per_page) if ids else []
        full = len(result.matches) > per_page
        more_older = full or not result.exhausted
        newest_id = result.first_id or 0
        older_than = ids[-1] if full else (result.last_id or 0)
        if not expression.exact_in_sql:
            # Why the scan stopped: it read every candidate, it filled the page, or it met the bound.
            stopped = "page" if full else ("end" if result.exhausted else "bound")
            scan_note = {"scanned": result.scanned, "stopped": stopped, "limit": limit,
                         "reached_at": iso(result.reached_at)}
    filter_args = item_filter.to_args()
    return render_template(
        "explore/explore.html",
        item_filter=item_filter,
        filter_args=filter_args,
        rows=[Markup(render_item_row(*row)) for row in rows],
        newest_id=newest_id if before is None else 0,
        oldest_id=older_than,
        more_older=more_older,
        live=before is None,
        subscriptions=user_subscriptions(),
        scan=scan_note,
    )


def filter_form_with_error(error: FilterError):
    """The search form again with what was typed and the mistake beside its field; no results (400)."""
    if wants_json_response():
        return error_response(400, str(error))
    message = str(error)
    return render_template(
        "explore/explore.html",
        item_filter=ItemFilter(text=request.args.get("q", "")),
        filter_errors={error.field or "q": message[:1].upper() + message[1:] + "."},
        typed=request.args,
        filter_args={},
        rows=[],
        newest_id=0,
        oldest_id=0,
        more_older=False,
        live=False,
        subscriptions=user_subscriptions(),
    ), 400


@bp.route("/explore/items")
@login_required
@no_store
def explore_items():
    """Filtered items newer than `after` (oldest first) or older than `before` (newest first), as JSON."""
    try:
        item_filter = ItemFilter.from_args(request.args, current_app.config["GCP_PROJECT_ID"])
    except FilterError as error:
        # Only scripts ask here: always JSON.
        return jsonify({"status": "error", "error": str(error), "field": error.field, "position": error.position,
                        "code": 400}), 400
    expression = item_filter.compiled(dialect())
    if expression is not None:
        return scanned_page(filtered_items(item_filter), expression)
    return keyset_page(filtered_items(item_filter))


def _export(kind: str):
    try:
        item_filter = ItemFilter.from_args(request.args, current_app.config["GCP_PROJECT_ID"])
    except FilterError as error:
        return error_response(400, str(error))
    query = item_filter.apply(sa.select(*EXPORT_COLUMNS).where(UserItem.user_id == current_user.id), dialect())
    expression = item_filter.compiled(dialect())
    chunks = jsonl_chunks if kind == "jsonl" else csv_chunks
    engine = db.engine

    @stream_with_context
    def generate():
        # A connection of its own, held only while the response streams.
        with engine.connect() as connection:
            rows = export_rows(connection, query)
            # The export holds every match: the evaluator checks each candidate, with no scan bound.
            yield from chunks(rows if expression is None else matching_rows(rows, expression))

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


# A dry run shows this many of the matching messages.
DRY_RUN_SAMPLE = 5


def topic_path(name: str) -> str:
    """A topic's full path: the name as given when it already is one, else in the app's project."""
    name = name.strip()
    return name if name.startswith("projects/") else f"projects/{current_app.config['GCP_PROJECT_ID']}/topics/{name}"


@bp.route("/filter_check")
@login_required
@no_store
def filter_check():
    """Dry-run a Pub/Sub filter over the user's newest stored messages (of one subscription, of the
    user's subscriptions on one topic, or all): how many it matches, with a sample, as JSON.
    With data=1 the expression may test the data too, as Search's may."""
    subscription = request.args.get("subscription", "").strip()
    topic = request.args.get("topic", "").strip()
    if subscription and topic:
        return jsonify({"status": "error", "error": "Give a subscription or a topic, not both.", "code": 400}), 400
    query = sa.select(UserItem).where(UserItem.user_id == current_user.id)
    if subscription:
        subscription = lenient_canonical(subscription, current_app.config["GCP_PROJECT_ID"])
        scope_kind, scope = "subscription", f"subscription {subscription}"
        query = query.where(UserItem.subscription == subscription)
    elif topic:
        topic = topic_path(topic)
        scope_kind, scope = "topic", f"topic {topic}"
        on_topic = sa.select(Subscription.name).where(Subscription.user_id == current_user.id,
                                                      Subscription.topic == topic)
        query = query.where(UserItem.subscription.in_(on_topic))
    else:
        scope_kind, scope = "all", "all your subscriptions"
    answer = {"valid": True, "error": None, "matched": 0, "scanned": 0, "scope": scope, "scope_kind": scope_kind,
              "sample": [], "limit": current_app.config["FILTER_SCAN_MAX_MESSAGES"], "complete": True}
    try:
        # data=1 (Search) also accepts the conditions on the data; a subscription's filter cannot hold them.
        extensions = request.args.get("data") == "1"
        expression = Expression(parse(request.args.get("filter", ""), extensions=extensions), dialect())
    except FilterSyntaxError as error:
        answer.update(valid=False, error={"message": error.message, "position": error.position})
        return jsonify(answer)
    result = scan(db.session, query, expression, max_scanned=answer["limit"],
                  columns=(UserItem.message_id, UserItem.subscription, UserItem.publish_time))
    answer.update(
        matched=len(result.matches), scanned=result.scanned, complete=result.exhausted,
        sample=[{"id": row.id, "message_id": row.message_id, "subscription": row.subscription,
                 "publish_time": iso(row.publish_time), "attributes": json.loads(row.attributes_json or "{}"),
                 "url": url_for("main.useritem", item_id=row.id)}
                for row in result.matches[:DRY_RUN_SAMPLE]],
    )
    return jsonify(answer)


@bp.route("/activity")
@login_required
def activity():
    """Messages per time bucket over a range, a breakdown by one attribute, latency and delivery attempts."""
    errors: dict[str, str] = {}
    now = datetime.now(UTC)
    range_name = request.args.get("range", "").strip() or ("custom" if request.args.get("from") else "24h")
    if range_name not in (*RANGES, "custom"):
        errors["range"] = "Choose 1 h, 24 h, 7 d or custom."
        range_name = "24h"
    try:
        zone = parse_zone(request.args.get("tz"))
    except FilterError as error:
        errors["range"] = f"{str(error)[:1].upper()}{str(error)[1:]}."
        zone = UTC
    window = preset_window(range_name if range_name != "custom" else "24h", now, zone)
    if range_name == "custom":
        window = custom_window(request.args, now, errors, zone) or window
    subscription = request.args.get("sub", "").strip()
    if subscription:
        subscription = lenient_canonical(subscription, current_app.config["GCP_PROJECT_ID"])
    attribute = request.args.get("attribute", "").strip()
    if '"' in attribute or "\\" in attribute:
        errors["attribute"] = "An attribute name may not contain quotes or backslashes."
        attribute = ""
    base = sa.select().select_from(UserItem).where(
        UserItem.user_id == current_user.id, UserItem.received_at >= window.start, UserItem.received_at < window.end)
    if subscription:
        base = base.where(UserItem.subscription == subscription)
    bucket = bucket_expression(dialect(), window).label("bucket")
    counts = dict(db.session.execute(base.add_columns(bucket, sa.func.count()).group_by(bucket)).all())
    series = [counts.get(index, 0) for index in range(window.bucket_count)]
    total = sum(series)

    latency_rows = db.session.execute(
        base.add_columns(bucket, latency_expression(dialect()))
        .where(UserItem.publish_time.is_not(None)).order_by(UserItem.id.desc()).limit(MAX_LATENCY_ROWS)
    ).all()
    latencies = latency_percentiles([tuple(row) for row in latency_rows], window.bucket_count)

    attempt = UserItem.delivery_attempt.label("attempt")
    attempts = [
        ("first / unknown" if number is None else f"{number} {'attempt' if number == 1 else 'attempts'}", count)
        for number, count in db.session.execute(
            base.add_columns(attempt, sa.func.count()).group_by(attempt).order_by(attempt.asc().nulls_first())
        ).all()
    ]

    breakdown: list[tuple[str, int]] = []
    if attribute:
        value = attribute_expression(dialect(), attribute).label("value")
        count = sa.func.count().label("count")
        top = [
            ("(not set)" if label is None else str(label), number)
            for label, number in db.session.execute(
                base.add_columns(value, count).group_by(value).order_by(count.desc(), value).limit(TOP_VALUES + 1)
            ).all()
        ]
        breakdown = top_with_other(top, total)

    page = render_template(
        "explore/activity.html",
        errors=errors,
        range_name=range_name,
        ranges=RANGES,
        custom_from=request.args.get("from", "") if range_name == "custom" else "",
        custom_to=request.args.get("to", "") if range_name == "custom" else "",
        window=window,
        subscription=subscription,
        attribute=attribute,
        subscriptions=user_subscriptions(),
        total=total,
        peak=max(series, default=0),
        counts_chart=column_chart(window, [series]),
        latency_chart=column_chart(window, [[pair and pair[1] for pair in latencies],
                                            [pair and pair[0] for pair in latencies]], unit="s"),
        latency_measured=sum(1 for pair in latencies if pair),
        latency_capped=len(latency_rows) >= MAX_LATENCY_ROWS,
        max_latency_rows=MAX_LATENCY_ROWS,
        attempt_bars=row_bars(attempts),
        breakdown_bars=row_bars(breakdown),
    )
    return page, 400 if errors else 200


def custom_window(args, now: datetime, errors: dict[str, str], zone=UTC) -> TimeWindow | None:
    """The window of a custom range read in `zone` (a to-date includes its whole day), or None with
    the reasons in `errors`."""
    start = end = None
    for name in ("from", "to"):
        try:
            moment = parse_time(args.get(name, ""), name, zone, end_of_day=name == "to")
        except FilterError as error:
            errors[name] = f"{str(error)[:1].upper()}{str(error)[1:]}."
            continue
        if moment is None:
            errors[name] = f"Give the {'start' if name == 'from' else 'end'} of the range."
        elif name == "from":
            start = moment
        else:
            end = moment
    if start is None or end is None:
        return None
    if not EARLIEST <= start <= LATEST or not EARLIEST <= end <= LATEST:
        errors["from" if not EARLIEST <= start <= LATEST else "to"] = (
            f"Give a time between {EARLIEST.year} and {LATEST.year}.")
    elif end <= start:
        errors["to"] = "The end must come after the start."
    elif end - start > MAX_CUSTOM_RANGE:
        errors["to"] = f"A range covers at most {MAX_CUSTOM_RANGE.days} days."
    return None if errors else time_window(start, end, zone)
