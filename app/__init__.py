"""The application factory."""

import logging
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

import rq
import sqlalchemy as sa
from flask import Blueprint, Flask
from pygments import formatters, lexers
from werkzeug.middleware.proxy_fix import ProxyFix

from app import security
from app.extensions import bootstrap, csrf, db, login, migrate
from app.redis_connection import Redis
from config import DEV_SECRET_KEY, Config


def _enable_sqlite_wal(app: Flask) -> None:
    """WAL lets the web process read while the worker writes."""

    @sa.event.listens_for(db.engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _configure_logging(app: Flask) -> None:
    if app.testing:
        return
    from flask.logging import default_handler

    app.logger.removeHandler(default_handler)
    # A worker creates the app more than once in one process (its own, then each job's): one handler.
    if any(getattr(handler, "_pubsub_monitor", False) for handler in app.logger.handlers):
        return
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if app.config["LOG_TO_STDOUT"]:
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        log_dir = Path(app.root_path).parent / "logs"
        log_dir.mkdir(exist_ok=True)
        handler = RotatingFileHandler(log_dir / "gcpubsub.log", maxBytes=1_000_000, backupCount=10)
    handler._pubsub_monitor = True
    handler.setFormatter(formatter)
    handler.setLevel(logging.INFO)
    app.logger.addHandler(handler)
    app.logger.setLevel(logging.INFO)


def create_app(config_class: type = Config) -> Flask:
    app = Flask(__name__)
    app.config.from_object(config_class)
    if app.config["SECRET_KEY"] == DEV_SECRET_KEY and not (app.debug or app.testing):
        raise RuntimeError(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random value "
            "(or FLASK_DEBUG=1 for local development) before starting the app."
        )
    # Heroku's router sets X-Forwarded-For and -Proto and keeps the Host header; it does not
    # set X-Forwarded-Host, so a value there would come from the client and is not trusted.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=0)

    db.init_app(app)
    migrate.init_app(app, db, render_as_batch=True, compare_type=True)
    login.init_app(app)
    csrf.init_app(app)
    bootstrap.init_app(app)
    security.init_app(app)

    app.redis = Redis.from_url(app.config["REDIS_URL"])
    app.task_queue = rq.Queue(app.config["RQ_QUEUE"], connection=app.redis)
    app.json_lexer = lexers.JsonLexer()
    app.html_formatter = formatters.HtmlFormatter(style=app.config["PYGMENTS_STYLE"])

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            _enable_sqlite_wal(app)

    import xstatic.pkg.jquery

    # jQuery is served from the xstatic package, so no library file is copied in.
    app.register_blueprint(
        Blueprint("vendor_jquery", __name__, static_folder=xstatic.pkg.jquery.BASE_DIR,
                  static_url_path="/static/vendor/jquery")
    )
    from app.errors import bp as errors_bp

    app.register_blueprint(errors_bp)
    from app.auth import bp as auth_bp

    app.register_blueprint(auth_bp)
    from app.main import bp as main_bp

    app.register_blueprint(main_bp)
    from app.explore import bp as explore_bp

    app.register_blueprint(explore_bp)
    from app.subscriptions import bp as subscriptions_bp

    app.register_blueprint(subscriptions_bp)
    from app.admin import bp as admin_bp

    app.register_blueprint(admin_bp)
    from app.health import bp as health_bp

    app.register_blueprint(health_bp)

    from app.names import short_subscription

    # Subscriptions are stored by their full path; pages show the short name in the app's own project.
    app.add_template_filter(lambda path: short_subscription(path, app.config["GCP_PROJECT_ID"]), "subscription_name")
    from app.polling import iso

    # Times reach the page as ISO 8601 in UTC with a Z; the browser shows them in the zone chosen.
    app.add_template_filter(iso, "isoz")

    from app import cli

    cli.register(app)
    _configure_logging(app)
    return app


from app import models  # noqa: E402,F401
