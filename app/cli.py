"""Command-line commands: `flask deploy`."""

import secrets

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask_migrate import upgrade

from app.extensions import db
from app.models import User


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
    db.session.commit()
    return admin, True, generated


def register(app: Flask) -> None:
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
