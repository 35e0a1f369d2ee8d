"""Extension instances, attached to the app in create_app."""

import logging

import sqlalchemy as sa
from flask_bootstrap import Bootstrap5
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login = LoginManager()
login.login_view = "auth.index"
login.login_message = "Please sign in to see this page."
login.session_protection = "strong"
csrf = CSRFProtect()
bootstrap = Bootstrap5()
# Limits are declared on the views that need them (sign-in); none applies by default.
# Its storage (Redis) and failure mode are set in app.security.init_app.
limiter = Limiter(key_func=get_remote_address)
# Under the app's logger, so its warnings (Redis unreachable, limit hit) reach the app's handlers.
limiter.logger = logging.getLogger("app.ratelimit")
