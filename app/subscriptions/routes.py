"""The subscriptions panel: add, list, start and stop polling each, remove."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from redis import RedisError
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.main.routes import POLLING_TASK, parse_streams, streams_message, task_status
from app.models import Subscription, Task, User
from app.subscriptions import bp
from app.subscriptions.checks import SubscriptionUnavailable, check_subscription
from app.subscriptions.forms import AddSubscriptionForm


def own_subscription(subscription_id: int) -> Subscription:
    subscription = db.session.get(Subscription, subscription_id)
    if subscription is None or subscription.user_id != current_user.id:
        abort(404)
    return subscription


def fellow_pollers(name: str) -> list[str]:
    """Other users polling the same subscription now: they share its messages."""
    polling = sa.select(User.username).join(Task, Task.user_id == User.id).where(
        Task.subscription == name, Task.complete.is_(False), Task.name == POLLING_TASK, User.id != current_user.id
    )
    return sorted(set(db.session.scalars(polling)))


@bp.route("/subscriptions", methods=["GET", "POST"])
@login_required
def subscriptions():
    """List the user's subscriptions with their polling state; add one after checking it exists."""
    form = AddSubscriptionForm()
    if form.validate_on_submit():
        name = form.name.data.strip()
        exists = db.session.scalar(
            sa.select(Subscription).where(Subscription.user_id == current_user.id, Subscription.name == name)
        )
        if exists is not None:
            form.name.errors.append(f"{name} is already in your list.")
        else:
            try:
                topic = check_subscription(current_app.config, name)
            except SubscriptionUnavailable as error:
                form.name.errors.append(str(error))
            else:
                db.session.add(Subscription(user_id=current_user.id, name=name))
                try:
                    db.session.commit()
                except IntegrityError:
                    db.session.rollback()
                current_app.logger.info("User %s added subscription %s", current_user.username, name)
                flash(f"Added {name} (topic {topic}).", "success")
                return redirect(url_for("subscriptions.subscriptions"))
    rows = db.session.scalars(
        sa.select(Subscription).where(Subscription.user_id == current_user.id).order_by(Subscription.name)
    ).all()
    panel = [
        {"subscription": row,
         "status": task_status(current_user.get_task_in_progress(POLLING_TASK, row.name)),
         "others": fellow_pollers(row.name)}
        for row in rows
    ]
    return render_template("subscriptions/subscriptions.html", form=form, panel=panel,
                           default=current_app.config["SUBSCRIPTION_NAME"],
                           max_streams=current_app.config["MAX_POLLING_STREAMS"])


@bp.route("/subscriptions/<int:subscription_id>/start", methods=["POST"])
@login_required
def start(subscription_id):
    """Start polling one subscription in its own task, on `streams` workers (default 1)."""
    subscription = own_subscription(subscription_id)
    streams = parse_streams(request.form.get("streams"))
    if streams is None:
        flash(f"Not started: {streams_message()}", "danger")
        return redirect(url_for("subscriptions.subscriptions"))
    if current_user.get_task_in_progress(POLLING_TASK, subscription.name) is None:
        try:
            current_user.launch_task(
                POLLING_TASK, f"Polling subscription {subscription.name}", subscription.name, streams=streams
            )
        except IntegrityError:
            db.session.rollback()  # a concurrent start won; it is polling
        except RedisError:
            current_app.logger.exception("Could not queue the polling job")
            flash("The task queue (Redis) is unavailable. Try again shortly.", "danger")
            return redirect(url_for("subscriptions.subscriptions"))
        current_app.logger.info("User %s started polling %s (%d streams)", current_user.username,
                                subscription.name, streams)
    flash(f"Polling {subscription.name}.", "success")
    return redirect(url_for("subscriptions.subscriptions"))


@bp.route("/subscriptions/<int:subscription_id>/stop", methods=["POST"])
@login_required
def stop(subscription_id):
    """Stop polling one subscription; its job sees the flag within two seconds."""
    subscription = own_subscription(subscription_id)
    task = current_user.get_task_in_progress(POLLING_TASK, subscription.name)
    if task is not None:
        task.request_stop()
        db.session.commit()
        current_app.logger.info("User %s stopped polling %s", current_user.username, subscription.name)
    flash(f"Stopped polling {subscription.name}.", "info")
    return redirect(url_for("subscriptions.subscriptions"))


@bp.route("/subscriptions/<int:subscription_id>/delete", methods=["POST"])
@login_required
def delete(subscription_id):
    """Remove a subscription from the list (stored messages stay); polling it stops first."""
    subscription = own_subscription(subscription_id)
    task = current_user.get_task_in_progress(POLLING_TASK, subscription.name)
    if task is not None:
        task.request_stop()
    db.session.delete(subscription)
    db.session.commit()
    flash(f"Removed {subscription.name}; its stored messages are kept.", "info")
    return redirect(url_for("subscriptions.subscriptions"))
