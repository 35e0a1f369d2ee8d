"""The alerts pages: list, create, edit, disable, delete a rule; send a test; its delivery history."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from redis import RedisError
from wtforms.fields.choices import SelectChoice

from app import polling
from app.alerts import bp
from app.alerts.delivery import enqueue, history_row
from app.alerts.forms import AlertRuleForm
from app.alerts.rules import RuleInvalid, create_rule, update_rule, user_rules
from app.extensions import db
from app.models import ALERT_PENDING, Alert, AlertRule

HISTORY_LIMIT = 100


def wants_json() -> bool:
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json"


def own_rule(rule_id: int) -> AlertRule:
    """The rule, if it is the user's; otherwise 404 (admins included: rules hold others' secrets)."""
    rule = db.session.get(AlertRule, rule_id)
    if rule is None or rule.user_id != current_user.id:
        abort(404)
    return rule


def rule_form(rule: AlertRule | None = None, *, from_rule: bool = False) -> AlertRuleForm:
    """The rule's form: filled from the request when one was posted, else (or with from_rule) from the rule."""
    from_rule = rule is not None and (from_rule or request.method == "GET")
    form = AlertRuleForm(formdata=None, obj=rule) if from_rule else AlertRuleForm()
    form.subscription.choices = [SelectChoice("", "All my subscriptions")] + [
        SelectChoice(name, polling.display_name(name)) for name in polling.user_subscription_names(current_user)
    ]
    if from_rule:
        form.subscription.data = rule.subscription or ""
    return form


def form_values(form: AlertRuleForm) -> dict:
    return {"name": form.name.data, "condition": form.condition.data or "", "url": form.url.data or "",
            "subscription": form.subscription.data or None, "format": form.format.data or "json"}


def first_error(form: AlertRuleForm) -> str:
    for field in form:
        if field.errors:
            return f"{field.label.text}: {field.errors[0]}" if field.name != "csrf_token" else field.errors[0]
    return "The request is not valid."


def history(rule: AlertRule) -> list[dict]:
    alerts = db.session.scalars(
        sa.select(Alert).where(Alert.rule_id == rule.id).order_by(Alert.created_at.desc(), Alert.id.desc())
        .limit(HISTORY_LIMIT)
    )
    return [history_row(alert) for alert in alerts]


def rule_row(rule: AlertRule) -> dict:
    """A rule as the list and the JSON show it (never its secret)."""
    return {"id": rule.id, "name": rule.name, "subscription": rule.subscription, "condition": rule.condition,
            "url": rule.url, "format": rule.format, "enabled": rule.enabled}


@bp.route("/alerts", methods=["GET", "POST"])
@login_required
def alerts():
    """The user's rules, and the form that adds one (JSON clients get {"id", "secret"} or a 400 {"error"})."""
    form = rule_form()
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                rule = create_rule(current_user, **form_values(form), enabled=True)
            except RuleInvalid as error:
                getattr(form, error.field).errors.append(error.message)
            else:
                db.session.commit()
                current_app.logger.info("User %s created alert rule %s", current_user.username, rule.id)
                if wants_json():
                    return jsonify({"id": rule.id, "secret": rule.secret}), 201
                # The secret is shown now, in this response, and never again.
                return render_template("alerts/rule.html", rule=rule, form=rule_form(rule, from_rule=True),
                                       secret=rule.secret, history=[], history_limit=HISTORY_LIMIT)
        if wants_json():
            return jsonify({"error": first_error(form)}), 400
    rules = user_rules(current_user.id)
    counts = dict(db.session.execute(
        sa.select(Alert.rule_id, sa.func.count()).where(Alert.rule_id.in_([rule.id for rule in rules]))
        .group_by(Alert.rule_id)
    ).all()) if rules else {}
    if wants_json():
        return jsonify([rule_row(rule) | {"deliveries": counts.get(rule.id, 0)} for rule in rules])
    # Field errors are shown on the page, as the app's other forms do (200); JSON clients got a 400 above.
    return render_template("alerts/alerts.html", rules=rules, counts=counts, form=form)


@bp.route("/alerts/<int:rule_id>", methods=["GET", "POST"])
@login_required
def rule_page(rule_id):
    """One rule: edit it, send a test, and its delivery history."""
    rule = own_rule(rule_id)
    form = rule_form(rule)
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                update_rule(rule, current_user, **form_values(form), enabled=form.enabled.data)
            except RuleInvalid as error:
                db.session.rollback()
                getattr(form, error.field).errors.append(error.message)
            else:
                db.session.commit()
                if wants_json():
                    return jsonify(rule_row(rule))
                flash(f"Saved {rule.name}.", "success")
                return redirect(url_for("alerts.rule_page", rule_id=rule.id))
        if wants_json():
            return jsonify({"error": first_error(form)}), 400
    return render_template("alerts/rule.html", rule=rule, form=form, secret=None, history=history(rule),
                           history_limit=HISTORY_LIMIT)


@bp.route("/alerts/<int:rule_id>.json")
@login_required
def rule_json(rule_id):
    """The rule and its deliveries, newest first: state, attempts, last_error, latency."""
    rule = own_rule(rule_id)
    return jsonify({"rule": rule_row(rule), "deliveries": history(rule)})


@bp.route("/alerts/<int:rule_id>/enabled", methods=["POST"])
@login_required
def set_enabled(rule_id):
    """Disable or enable a rule (`enabled` = 0 or 1): a disabled rule fires nothing."""
    rule = own_rule(rule_id)
    form = rule_form(rule)
    if not form.validate_on_submit():
        abort(400)
    rule.enabled = request.form.get("enabled") == "1"
    db.session.commit()
    if wants_json():
        return jsonify(rule_row(rule))
    flash(f"{rule.name} is {'enabled' if rule.enabled else 'disabled'}.", "info")
    return redirect(request.form.get("next") == "list" and url_for("alerts.alerts")
                    or url_for("alerts.rule_page", rule_id=rule.id))


@bp.route("/alerts/<int:rule_id>/delete", methods=["POST"])
@login_required
def delete(rule_id):
    """Delete a rule and its delivery history."""
    rule = own_rule(rule_id)
    if not rule_form(rule).validate_on_submit():
        abort(400)
    name = rule.name
    db.session.execute(sa.delete(Alert).where(Alert.rule_id == rule.id))
    db.session.delete(rule)
    db.session.commit()
    if wants_json():
        return jsonify({"deleted": rule_id})
    flash(f"Deleted {name}.", "info")
    return redirect(url_for("alerts.alerts"))


@bp.route("/alerts/<int:rule_id>/test", methods=["POST"])
@login_required
def send_test(rule_id):
    """Send a test delivery to the rule's webhook now (it shows in the history like any other)."""
    rule = own_rule(rule_id)
    if not rule_form(rule).validate_on_submit():
        abort(400)
    now = datetime.now(UTC)
    alert = Alert(rule_id=rule.id, kind="test", state=ALERT_PENDING, created_at=now, next_attempt_at=now)
    db.session.add(alert)
    db.session.commit()
    try:
        enqueue([(alert.id, 0.0)])
        message = "Test sent; its delivery shows below."
    except RedisError:
        message = "Test recorded; the worker will send it when the queue is reachable."
    if wants_json():
        return jsonify({"id": alert.id}), 202
    flash(message, "info")
    return redirect(url_for("alerts.rule_page", rule_id=rule.id))
