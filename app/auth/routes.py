import math
import time
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app, flash, g, jsonify, redirect, render_template, request, url_for
from flask_limiter import RateLimitExceeded
from flask_login import current_user, login_required, login_url, login_user, logout_user
from werkzeug.security import check_password_hash, generate_password_hash

from app.auth import bp
from app.auth.forms import ChangePasswordForm, LoginForm
from app.errors.handlers import error_response, wants_json_response
from app.extensions import db, limiter, login
from app.models import User, as_utc, utcnow
from app.security import (
    SIGN_IN_LIMIT_MESSAGE,
    WRONG_PASSWORD_LIMIT_MESSAGE,
    change_password_limit_per_user,
    client_address_key,
    is_failed_sign_in,
    is_wrong_current_password,
    log_rate_limit,
    record_failed_sign_in,
    sign_in_limit_per_address,
    sign_in_limit_per_username_and_address,
    signed_in_user_key,
    slow_down_sign_in,
    username_and_address_key,
)

# Checked when the username is unknown, so that a wrong username takes as long as a
# wrong password and the timing does not tell which usernames exist.
_UNKNOWN_USER_HASH = generate_password_hash("no user has this password")


def safe_next_url(target: str | None) -> str | None:
    """Accept only a local path, never another host (including //host and \\\\host)."""
    if not target:
        return None
    target = target.strip()
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


@login.unauthorized_handler
def unauthorized():
    """JSON clients (the live page's polls) get a JSON 401; browsers go to the sign-in form."""
    if wants_json_response():
        return error_response(401, "You are signed out. Sign in again to continue.")
    flash(login.login_message, login.login_message_category)
    return redirect(login_url(login.login_view, next_url=request.url))


@bp.before_app_request
def record_last_seen():
    if current_user.is_authenticated and request.endpoint not in {"static", "bootstrap.static"}:
        # Throttled so the five-second polling does not write on every request.
        last_seen = as_utc(current_user.last_seen)
        now = utcnow()
        if last_seen is None or (now - last_seen).total_seconds() > 60:
            current_user.last_seen = now
            db.session.commit()


_sign_in_limit_options = {
    "methods": ["POST"],
    "deduct_when": is_failed_sign_in,
    "error_message": SIGN_IN_LIMIT_MESSAGE,
    "on_breach": log_rate_limit,
}


@bp.route("/", methods=["GET", "POST"])
@bp.route("/index", methods=["GET", "POST"])
@limiter.limit(sign_in_limit_per_address, key_func=client_address_key, **_sign_in_limit_options)
@limiter.limit(sign_in_limit_per_username_and_address, key_func=username_and_address_key, **_sign_in_limit_options)
def index():
    """Sign-in form; signed-in users go straight to their page."""
    if current_user.is_authenticated:
        return redirect(url_for("main.user", username=current_user.username))
    form = LoginForm()
    if form.validate_on_submit():
        slow_down_sign_in(form.username.data)
        user = db.session.scalar(sa.select(User).where(User.username == form.username.data))
        if user is None:
            check_password_hash(_UNKNOWN_USER_HASH, form.password.data)
        if user is None or not user.check_password(form.password.data):
            record_failed_sign_in(form.username.data)
            # An unknown username is not logged: it is often a password typed in the wrong box.
            current_app.logger.info(
                "Failed sign-in for %s from %s",
                f"user {user.username}" if user else "an unknown username", request.remote_addr,
            )
            flash("Invalid username or password.", "danger")
            return render_template("auth/index.html", form=form), 401
        login_user(user, remember=form.remember_me.data)
        current_app.logger.info("User %s signed in from %s", user.username, request.remote_addr)
        next_url = safe_next_url(request.args.get("next"))
        return redirect(next_url or url_for("main.user", username=user.username))
    return render_template("auth/index.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    """Sign out (POST with a CSRF token): every session and remember-me cookie of the user ends."""
    if current_user.is_authenticated:
        user = current_user._get_current_object()
        user.end_sessions()
        db.session.commit()
        current_app.logger.info("User %s signed out", user.username)
    logout_user()
    return redirect(url_for("auth.index"))


@bp.route("/change_password", methods=["POST"])
@login_required
@limiter.limit(change_password_limit_per_user, key_func=signed_in_user_key, deduct_when=is_wrong_current_password,
               error_message=WRONG_PASSWORD_LIMIT_MESSAGE, on_breach=log_rate_limit)
def change_password():
    """Change the signed-in user's password; answers in JSON."""
    form = ChangePasswordForm()
    if not form.validate():
        errors = [message for messages in form.errors.values() for message in messages]
        return jsonify({"status": "error", "error": " ".join(errors)}), 400
    if not current_user.check_password(form.current_password.data):
        g.wrong_current_password = True
        current_app.logger.info("Wrong current password for user %s changing it", current_user.username)
        return jsonify({"status": "error", "error": "The current password is wrong."}), 400
    user = current_user._get_current_object()
    user.set_password(form.new_password.data)
    db.session.commit()
    # Other sessions and remember-me cookies carry the old password's fingerprint and are now
    # signed out; this one is renewed.
    remembered = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token") in request.cookies
    login_user(user, remember=remembered)
    current_app.logger.info("User %s changed their password", user.username)
    return jsonify({"status": "success", "message": "Password changed."})


@bp.route("/account")
@login_required
def account():
    """The signed-in user's account: who they are, and the password-change form."""
    return render_template("auth/account.html", form=ChangePasswordForm())


@bp.errorhandler(RateLimitExceeded)
def rate_limited(error: RateLimitExceeded):
    """A browser over the sign-in limit gets the form back, with how long to wait; others as before."""
    if request.endpoint != "auth.index" or wants_json_response():
        return error_response(429, error.description)
    limit = limiter.current_limit
    wait_seconds = max(1, math.ceil(limit.reset_at - time.time())) if limit else 60
    return render_template("auth/index.html", form=LoginForm(), wait_seconds=wait_seconds), 429
