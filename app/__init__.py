"""The application factory."""

import rq
import sqlalchemy as sa
from flask import Blueprint, Flask
from pygments import formatters, lexers
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from app import security
from app.extensions import bootstrap, csrf, db, login, migrate
from app.logs import configure_logging
from app.redis_connection import Redis
from config import DEV_SECRET_KEY, Config

# libpq's TCP keepalives: a PostgreSQL server that stops answering probes is given up after about
# a minute (30 s idle, then 3 probes 10 s apart), and the query fails as an outage, which the pages
# and the polling job already handle, instead of waiting hours.
POSTGRESQL_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


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


class Int64Converter(IntegerConverter):
    """`<int:...>` in a URL, limited to the databases' 64-bit ids: a larger number is a 404, not an
    overflow in the database driver."""

    def __init__(self, map, *args, **kwargs) -> None:  # noqa: A002 (werkzeug's signature)
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


def create_app(config_class: type = Config) -> Flask:
    app = Flask(__name__)
    app.url_map.converters["int"] = Int64Converter
    app.config.from_object(config_class)
    if app.config["SECRET_KEY"] == DEV_SECRET_KEY and not (app.debug or app.testing):
        raise RuntimeError(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random value "
            "(or FLASK_DEBUG=1 for local development) before starting the app."
        )
    # Heroku's router sets X-Forwarded-For and -Proto and keeps the Host header; it does not
    # set X-Forwarded-Host, so a value there would come from the client and is not trusted.
    # Without a proxy in front (TRUSTED_PROXIES=0), no forwarded header is believed.
    trusted_proxies = app.config["TRUSTED_PROXIES"]
    if trusted_proxies > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxies, x_proto=trusted_proxies, x_host=0)

    database_url = sa.engine.make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if database_url.get_backend_name() == "postgresql":
        # libpq waits for ever on a server that takes the connection and never answers; and on an open
        # connection whose server is gone without a word (a failover, a dropped NAT mapping), a query
        # waits for the system's TCP keepalive, two hours by default. Settings in DATABASE_URL win.
        extra = {"connect_timeout": app.config["DATABASE_CONNECT_TIMEOUT_SECONDS"], **POSTGRESQL_KEEPALIVES}
        options = dict(app.config["SQLALCHEMY_ENGINE_OPTIONS"])
        options["connect_args"] = {**{name: value for name, value in extra.items() if name not in database_url.query},
                                   **options.get("connect_args", {})}
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    db.init_app(app)
    migrate.init_app(app, db, render_as_batch=True, compare_type=True)
    login.init_app(app)
    csrf.init_app(app)
    bootstrap.init_app(app)
    security.init_app(app)

    redis_timeout = app.config["REDIS_TIMEOUT_SECONDS"]
    app.redis = Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=redis_timeout,
                               socket_timeout=redis_timeout)
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
    from app.alerts import bp as alerts_bp

    app.register_blueprint(alerts_bp)
    from app.health import bp as health_bp

    app.register_blueprint(health_bp)

    from app.names import short_subscription

    # Subscriptions are stored by their full path; pages show the short name in the app's own project.
    app.add_template_filter(lambda path: short_subscription(path, app.config["GCP_PROJECT_ID"]), "subscription_name")
    from app.models import iso

    # Times reach the page as ISO 8601 in UTC with a Z; the browser shows them in the zone chosen.
    app.add_template_filter(iso, "isoz")

    from app import cli

    cli.register(app)
    configure_logging(app)
    return app


from app import models  # noqa: E402,F401
