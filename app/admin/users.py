"""Admin only: the users pages, with the same rules as `flask users` (app/users.py)."""

from __future__ import annotations

from flask import abort, current_app, flash, make_response, redirect, render_template, url_for
from flask_login import current_user, login_required, logout_user

from app import users
from app.admin import bp
from app.admin.forms import CreateUserForm, UserActionForm
from app.admin.routes import admin_required
from app.extensions import db
from app.models import User


def users_page(create_form: CreateUserForm, status: int = 200, **shown):
    return render_template("admin/users.html", users=users.all_users(), create_form=create_form,
                           action_form=UserActionForm(), **shown), status


def shown_once(response_body, status: int = 200):
    """A page holding a new password: never cached, never kept in the session or a flash."""
    response = make_response(response_body, status)
    response.headers["Cache-Control"] = "no-store"
    return response


def sentence(error: Exception) -> str:
    text = str(error)
    return text[:1].upper() + text[1:] + "."


def checked_action(user_id: int) -> User:
    """The user a button acts on, once the button's CSRF token is checked."""
    user = db.get_or_404(User, user_id)
    if not UserActionForm().validate_on_submit():
        abort(400, "The form was incomplete; reload the page and try again.")
    return user


@bp.route("/users", methods=["GET", "POST"])
@login_required
@admin_required
def users_list():
    """List the users and create one (a generated password is shown once)."""
    form = CreateUserForm()
    if not form.validate_on_submit():
        return users_page(form, 400 if form.is_submitted() else 200)
    try:
        user, generated = users.create_user(form.username.data, form.email.data, None, is_admin=form.is_admin.data)
    except users.UserRuleError as error:
        form.username.errors.append(sentence(error))
        return users_page(form, 400)
    db.session.commit()
    current_app.logger.info("Admin %s created user %s", current_user.username, user.username)
    return shown_once(users_page(CreateUserForm(formdata=None), new_user=user, new_password=generated)[0])


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@login_required
@admin_required
def users_reset_password(user_id):
    """Give a user a new generated password, shown once; their sessions end."""
    user = checked_action(user_id)
    generated = users.reset_password(user)
    db.session.commit()
    current_app.logger.info("Admin %s reset the password of user %s", current_user.username, user.username)
    if user.id == current_user.id:
        # The session carries the old password's fingerprint; sign in again with the new one.
        logout_user()
    return shown_once(render_template("admin/user_password.html", user=user, new_password=generated))


@bp.route("/users/<int:user_id>/admin", methods=["POST"])
@login_required
@admin_required
def users_set_admin(user_id):
    """Make a user an admin, or an ordinary user again (never oneself, never the last admin)."""
    user = checked_action(user_id)
    try:
        users.set_admin(user, not user.is_admin, acting=current_user)
    except users.UserRuleError as error:
        flash(f"Not changed: {error}.", "danger")
        return redirect(url_for("admin.users_list"))
    db.session.commit()
    current_app.logger.info("Admin %s set is_admin=%s on user %s", current_user.username, user.is_admin, user.username)
    flash(f"{user.username} is {'now an admin' if user.is_admin else 'no longer an admin'}.", "success")
    return redirect(url_for("admin.users_list"))


@bp.route("/users/<int:user_id>/delete", methods=["GET", "POST"])
@login_required
@admin_required
def users_delete(user_id):
    """Ask, then delete a user with their messages, tasks, notifications and subscriptions."""
    user = db.get_or_404(User, user_id)
    form = UserActionForm()
    if not form.validate_on_submit():
        return render_template("admin/user_delete.html", user=user, form=form,
                               message_count=users.stored_message_count(user), tap_count=len(users.tap_names(user)))
    username, admin_name, deleting_self = user.username, current_user.username, user.id == current_user.id
    try:
        left = users.delete_user(user)
    except users.UserRuleError as error:
        flash(f"Not deleted: {error}.", "danger")
        return redirect(url_for("admin.users_list"))
    db.session.commit()
    current_app.logger.info("Admin %s deleted user %s", admin_name, username)
    if left:
        flash(users.taps_left_words(left), "warning")  # before a sign-out too: the next page shows it
    if deleting_self:
        logout_user()
        return redirect(url_for("auth.index"))
    flash(f"Deleted user {username}.", "success")
    return redirect(url_for("admin.users_list"))
