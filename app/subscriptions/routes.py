"""The subscriptions panel: add, list, start and stop polling each, dismiss a failure, remove."""

from __future__ import annotations

from contextlib import suppress

import sqlalchemy as sa
from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app import polling
from app.extensions import db
from app.models import SUBSCRIPTION_EXISTING, SUBSCRIPTION_TAP, Subscription
from app.names import InvalidSubscriptionName, canonical_subscription
from app.subscriptions import bp, taps
from app.subscriptions.checks import SubscriptionUnavailable, fetch_subscription
from app.subscriptions.forms import AddSubscriptionForm, WatchTopicForm


def own_subscription(subscription_id: int) -> Subscription:
    subscription = db.session.get(Subscription, subscription_id)
    if subscription is None or subscription.user_id != current_user.id:
        abort(404)
    return subscription


def back_to_panel():
    return redirect(url_for("subscriptions.subscriptions"))


@bp.route("/subscriptions", methods=["GET", "POST"])
@login_required
def subscriptions():
    """List the user's subscriptions with their polling state; add an existing one (`name`) after checking
    it exists, or watch a topic (`topic`, optional `filter`) through a tap of the user's own."""
    form = AddSubscriptionForm(formdata=None)
    watch_form = WatchTopicForm(formdata=None, topic=request.args.get("topic", ""),
                                filter=request.args.get("filter", ""))
    if request.method == "POST" and "topic" in request.form:
        watch_form = WatchTopicForm()
        if watch_form.validate_on_submit() and add_tap(watch_form):
            return back_to_panel()
    elif request.method == "POST":
        form = AddSubscriptionForm()
        if form.validate_on_submit():
            try:
                name = canonical_subscription(form.name.data, current_app.config["GCP_PROJECT_ID"])
            except InvalidSubscriptionName as error:
                form.name.errors.append(str(error))
            else:
                add_subscription(form, name)
                if not form.name.errors:
                    return back_to_panel()
    rows = user_rows()
    panel = [
        {"subscription": row,
         "name": polling.display_name(row.name),
         "status": polling.status(current_user, row.name),
         "others": polling.fellow_pollers(row.name, current_user.id)}
        for row in rows
    ]
    return render_template("subscriptions/subscriptions.html", form=form, watch_form=watch_form, panel=panel,
                           default=polling.display_name(polling.default_subscription()),
                           max_streams=current_app.config["MAX_POLLING_STREAMS"],
                           expiration_days=current_app.config["TAP_EXPIRATION_DAYS"], check_url=filter_check_url())


def filter_check_url() -> str | None:
    """Where the tap form's "Check filter" button asks (GET /filter_check, the explore blueprint's)."""
    for rule in current_app.url_map.iter_rules():
        if rule.rule == "/filter_check":
            return url_for(rule.endpoint)
    return None


def user_rows() -> list[Subscription]:
    return list(db.session.scalars(
        sa.select(Subscription).where(Subscription.user_id == current_user.id).order_by(Subscription.name)
    ))


@bp.route("/subscriptions.json")
@login_required
def subscriptions_json():
    """The user's subscriptions: name (full path), kind (tap or existing), topic, filter and polling state."""
    rows = []
    for row in user_rows():
        status = polling.status(current_user, row.name)
        rows.append({"id": row.id, "name": row.name, "kind": row.kind, "topic": row.topic, "filter": row.filter,
                     "state": status["state"], "status": status["status"]})
    return jsonify({"subscriptions": rows})


def add_subscription(form: AddSubscriptionForm, name: str) -> None:
    """Save a subscription to the user's list once Pub/Sub confirms it; errors go on the form."""
    exists = db.session.scalar(
        sa.select(Subscription).where(Subscription.user_id == current_user.id, Subscription.name == name)
    )
    if exists is not None:
        form.name.errors.append(f"{polling.display_name(name)} is already in your list.")
        return
    try:
        found = fetch_subscription(current_app.config, name)
    except SubscriptionUnavailable as error:
        form.name.errors.append(str(error))
        return
    db.session.add(Subscription(user_id=current_user.id, name=name, kind=SUBSCRIPTION_EXISTING,
                                topic=found.topic or None, filter=found.filter or None))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
    current_app.logger.info("User %s added subscription %s", current_user.username, name)
    flash(f"Added {polling.display_name(name)} (topic {found.topic}).", "success")


def add_tap(form: WatchTopicForm) -> bool:
    """Create a tap on the topic and save it in the user's list; False with the error on the form."""
    try:
        created = taps.create_tap(current_app.config, current_user.username, form.topic.data, form.filter.data)
    except taps.TapError as error:
        field = form.filter if error.field == "filter" else form.topic
        field.errors = [*field.errors, error.message]
        return False
    db.session.add(Subscription(user_id=current_user.id, name=created["name"], kind=SUBSCRIPTION_TAP,
                                topic=created["topic"], filter=created["filter"] or None))
    try:
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        # Do not leave a subscription behind that no row points at.
        with suppress(taps.TapError):
            taps.delete_tap(current_app.config, created["name"])
        raise
    current_app.logger.info("User %s created tap %s on %s", current_user.username, created["name"], created["topic"])
    flash(f"Watching {created['topic']} through your tap {polling.display_name(created['name'])}"
          f"{' (filter: ' + created['filter'] + ')' if created['filter'] else ''}. Start polling it below.",
          "success")
    return True


@bp.route("/subscriptions/<int:subscription_id>/start", methods=["POST"])
@login_required
def start(subscription_id):
    """Start polling one subscription in its own task, on `streams` workers (default 1)."""
    subscription = own_subscription(subscription_id)
    try:
        polling.start(current_user, subscription.name, request.form.get("streams"))
    except polling.PollingRefused as refusal:
        flash(f"Not started: {refusal.message}", "danger")
        return back_to_panel()
    flash(f"Started {polling.display_name(subscription.name)}.", "success")
    return back_to_panel()


@bp.route("/subscriptions/<int:subscription_id>/stop", methods=["POST"])
@login_required
def stop(subscription_id):
    """Stop polling one subscription; its job sees the request within two seconds."""
    subscription = own_subscription(subscription_id)
    polling.stop(current_user, subscription.name)
    flash(f"Stopping {polling.display_name(subscription.name)}.", "info")
    return back_to_panel()


@bp.route("/subscriptions/<int:subscription_id>/dismiss", methods=["POST"])
@login_required
def dismiss(subscription_id):
    """Hide the failure shown for a subscription (it stays in the task's history)."""
    subscription = own_subscription(subscription_id)
    polling.dismiss(current_user, subscription.name)
    return back_to_panel()


@bp.route("/subscriptions/<int:subscription_id>/delete", methods=["POST"])
@login_required
def delete(subscription_id):
    """Remove a subscription from the list (stored messages stay); polling it stops first. A tap's
    Pub/Sub subscription is deleted once its job has let go of it."""
    subscription = own_subscription(subscription_id)
    shown = polling.display_name(subscription.name)
    if subscription.kind == SUBSCRIPTION_TAP:
        failed = taps.remove_taps(current_app.config, current_user.id, [subscription.name])
        if failed:
            flash(failed[subscription.name].message, "danger")
            return back_to_panel()
        message = f"Removed the tap {shown} and deleted its Pub/Sub subscription; its stored messages are kept."
    else:
        polling.stop_all_for(current_user.id, subscription.name)
        message = f"Removed {shown}; its stored messages are kept."
    db.session.delete(subscription)
    db.session.commit()
    current_app.logger.info("User %s removed %s %s", current_user.username, subscription.kind, subscription.name)
    flash(message, "info")
    return back_to_panel()


@bp.route("/project")
@login_required
def project():
    """The project's topics and subscriptions, as far as the credentials may list them (read-only, paged)."""
    page_size = current_app.config["BROWSE_PAGE_SIZE"]
    listings = {}
    for what, lister, token_arg in (("topics", taps.list_topics, "topics_page"),
                                    ("subscriptions", taps.list_subscriptions, "subscriptions_page")):
        token = request.args.get(token_arg, "")[:1024]
        try:
            listings[what] = {"page": lister(current_app.config, page_size, token), "error": None, "token": token}
        except taps.BrowseError as error:
            listings[what] = {"page": None, "error": str(error), "token": token}
    return render_template("subscriptions/project.html", listings=listings,
                           project_id=current_app.config["GCP_PROJECT_ID"])
