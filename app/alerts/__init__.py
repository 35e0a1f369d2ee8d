"""Alerts: rules on the messages, and webhooks that fire when a new message matches one.

Rules are kept and edited here (routes); evaluate.py fires them in the worker after each batch,
delivery.py sends them; app.alerts.create_rule is the one way a rule is made (benches use it too).
"""

from flask import Blueprint

bp = Blueprint("alerts", __name__)

from app.alerts import routes  # noqa: E402,F401
from app.alerts.rules import RuleInvalid, create_rule  # noqa: E402,F401
