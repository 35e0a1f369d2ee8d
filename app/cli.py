"""Command-line commands: `flask deploy`, `flask users ...`, `flask purge`, `flask replay`."""

import re
import secrets
from datetime import timedelta

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup
from flask_migrate import upgrade

from app import retention
from app.extensions import db
from app.models import Subscription, User, UserItem, utcnow
from app.names import canonical_subscription
from app.users import UserRuleError, all_users, create_user, delete_user, reset_password, set_admin, taps_left_words
from app.users import find_user as lookup_user

DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta:
    """'30d', '12h', '90m', '2w' or '45s' as a timedelta."""
    match = DURATION.match(value or "")
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration such as 30d, 12h, 90m, 2w or 45s")
    return timedelta(**{DURATION_UNITS[match.group(2)]: int(match.group(1))})


def purge_items(cutoff, user_id: int | None, progress=None) -> int:
    """Delete messages received before `cutoff` (of one user, or all), in app.retention's batches; return how many."""
    deleted = 0
    for owner_id in [user_id] if user_id is not None else retention.user_ids():
        report = (lambda total, before=deleted: progress(before + total)) if progress else None
        count, _finished = retention.delete_older_than(cutoff, owner_id, progress=report)
        deleted += count
    return deleted


def ensure_admin() -> tuple[User, bool, str | None]:
    """Create the admin user once; return it, whether it was created, and the password if generated."""
    config = current_app.config
    admin = db.session.scalar(sa.select(User).where(User.username == config["ADMIN_USERNAME"]))
    if admin is not None:
        return admin, False, None
    password = config["ADMIN_PASSWORD"]
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(12)
    admin = User(username=config["ADMIN_USERNAME"], email=config["ADMIN_EMAIL"], is_admin=True)
    admin.set_password(password)
    db.session.add(admin)
    db.session.flush()
    # SUBSCRIPTION_NAME is the subscription the admin starts with, in their panel.
    db.session.add(Subscription(user_id=admin.id,
                                name=canonical_subscription(config["SUBSCRIPTION_NAME"], config["GCP_PROJECT_ID"])))
    db.session.commit()
    return admin, True, generated


def find_user(username: str) -> User:
    user = lookup_user(username)
    if user is None:
        raise click.ClickException(f"no user named {username!r}")
    return user


users = AppGroup("users", help="Create, list and delete users, and set their passwords.")


@users.command("create")
@click.argument("username")
@click.option("--email", help="Defaults to USERNAME@localhost.")
@click.option("--password", help="At least 8 characters; generated and printed once if not given.")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
def users_create(username, email, password, admin):
    """Create a user."""
    try:
        _user, generated = create_user(username, email, password, is_admin=admin)
    except UserRuleError as error:
        raise click.ClickException(str(error)) from None
    db.session.commit()
    click.echo(f"Created {'admin ' if admin else ''}user {username!r}.")
    if generated:
        click.echo(f"Password: {generated}  (shown once)")


@users.command("list")
def users_list():
    """List the users."""
    for user in all_users():
        click.echo(f"{user.username}\t{user.email}\t{'admin' if user.is_admin else 'user'}\t"
                   f"last seen {user.last_seen.isoformat() if user.last_seen else '-'}")


@users.command("delete")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def users_delete(username, yes):
    """Delete a user with their messages, tasks, notifications and subscriptions (never the last admin)."""
    user = find_user(username)
    if not yes:
        click.confirm(f"Delete user {username!r} and all their messages?", abort=True)
    try:
        left = delete_user(user)
    except UserRuleError as error:
        raise click.ClickException(str(error)) from None
    db.session.commit()
    click.echo(f"Deleted user {username!r}.")
    if left:
        click.echo(taps_left_words(left), err=True)


@users.command("set-password")
@click.argument("username")
@click.option("--password", help="At least 8 characters; generated and printed once if not given.")
def users_set_password(username, password):
    """Set a user's password."""
    user = find_user(username)
    try:
        generated = reset_password(user, password)
    except UserRuleError as error:
        raise click.BadParameter(str(error), param_hint="--password") from None
    db.session.commit()
    click.echo(f"Password set for {username!r}.")
    if generated:
        click.echo(f"Password: {generated}  (shown once)")


@users.command("set-admin")
@click.argument("username")
@click.option("--revoke", is_flag=True, help="Remove the admin rights instead (never from the last admin).")
def users_set_admin(username, revoke):
    """Make a user an administrator, or with --revoke an ordinary user."""
    user = find_user(username)
    try:
        set_admin(user, not revoke)
    except UserRuleError as error:
        raise click.ClickException(str(error)) from None
    db.session.commit()
    click.echo(f"{username!r} is {'no longer ' if revoke else 'now '}an admin.")


def register(app: Flask) -> None:
    app.cli.add_command(users)

    @app.cli.command()
    @click.option("--older-than", "older_than", required=True, help="Age such as 30d, 12h or 90m.")
    @click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
    @click.option("--user", "username", help="Only this user's messages.")
    def purge(older_than, dry_run, username):
        """Delete stored messages received longer ago than --older-than, in batches."""
        cutoff = utcnow() - parse_duration(older_than)
        user_id = find_user(username).id if username else None
        if dry_run:
            query = sa.select(sa.func.count()).select_from(UserItem).where(UserItem.received_at < cutoff)
            if user_id is not None:
                query = query.where(UserItem.user_id == user_id)
            count = db.session.scalar(query)
            click.echo(f"Dry run: {count} messages received before {cutoff.isoformat()} would be deleted.")
            return
        deleted = purge_items(cutoff, user_id, progress=lambda total: click.echo(f"  deleted {total}..."))
        click.echo(f"Deleted {deleted} messages received before {cutoff.isoformat()}.")

    @app.cli.command()
    @click.argument("export_file", type=click.File("r", encoding="utf-8"))
    @click.option("--topic", required=True, help="Topic name or projects/P/topics/T.")
    def replay(export_file, topic):
        """Publish every message of a JSON Lines export to a topic, data and attributes unchanged."""
        from app.admin.publishing import publish_jsonl
        from app.pubsub.client import SetupError, make_publisher_client, topic_path

        path = topic_path(current_app.config["GCP_PROJECT_ID"], topic)
        try:
            publisher = make_publisher_client(current_app.config)
        except SetupError as error:
            raise click.ClickException(str(error)) from None
        try:
            count = publish_jsonl(publisher, path, export_file)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"Published {count} messages to {path}.")

    @app.cli.command()
    def deploy():
        """Migrate the database to the latest revision, then create the admin user."""
        upgrade()
        admin, created, generated = ensure_admin()
        if generated:
            # The one place a password is printed: once, when it is created.
            click.echo(f"Created admin user '{admin.username}' with password: {generated}")
            click.echo("Keep it safe; it will not be shown again. Change it after signing in.")
        elif created:
            click.echo(f"Created admin user '{admin.username}' with the password in ADMIN_PASSWORD.")
        else:
            click.echo(f"Database is up to date; admin user '{admin.username}' exists.")
