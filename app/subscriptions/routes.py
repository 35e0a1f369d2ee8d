"""The subscriptions panel: add, list, start and stop polling each, dismiss a failure, remove."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy.exc import IntegrityError

from app import polling
from app.extensions import db
from app.models import Subscription
from app.names import InvalidSubscriptionName, canonical_subscription
from app.subscriptions import bp
from app.subscriptions.checks import SubscriptionUnavailable, check_subscription
from app.subscriptions.forms import AddSubscriptionForm


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
    """List the user's subscriptions with their polling state; add one after checking it exists."""
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
    rows = db.session.scalars(
        sa.select(Subscription).where(Subscription.user_id == current_user.id).order_by(Subscription.name)
    ).all()
    panel = [
        {"subscription": row,
         "name": polling.display_name(row.name),
         "status": polling.status(current_user, row.name),
         "others": polling.fellow_pollers(row.name, current_user.id)}
        for row in rows
    ]
    return render_template("subscriptions/subscriptions.html", form=form, panel=panel,
                           default=polling.display_name(polling.default_subscription()),
                           max_streams=current_app.config["MAX_POLLING_STREAMS"])


def add_subscription(form: AddSubscriptionForm, name: str) -> None:
    """Save a subscription to the user's list once Pub/Sub confirms it; errors go on the form."""
    exists = db.session.scalar(
        sa.select(Subscription).where(Subscription.user_id == current_user.id, Subscription.name == name)
    )
    if exists is not None:
        form.name.errors.append(f"{polling.display_name(name)} is already in your list.")
        return
    try:
        topic = check_subscription(current_app.config, name)
    except SubscriptionUnavailable as error:
        form.name.errors.append(str(error))
        return
    db.session.add(Subscription(user_id=current_user.id, name=name))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
    current_app.logger.info("User %s added subscription %s", current_user.username, name)
    flash(f"Added {polling.display_name(name)} (topic {topic}).", "success")


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
    """Remove a subscription from the list (stored messages stay); polling it stops first."""
    subscription = own_subscription(subscription_id)
    polling.stop_all_for(current_user.id, subscription.name)
    db.session.delete(subscription)
    db.session.commit()
    flash(f"Removed {polling.display_name(subscription.name)}; its stored messages are kept.", "info")
    return back_to_panel()
