"""Evaluating alert rules on newly stored messages, inside the writer's transaction.

The writer (app.pubsub.writer) hands each batch's new rows (those its INSERT ... ON CONFLICT DO
NOTHING really inserted, so a redelivery fires nothing) to a RuleEvaluator, in the transaction
that stores them: the Alert rows commit with the messages, or neither does, so no firing is lost
between the two. Delivery jobs are enqueued once that transaction has committed.

Cost: the user's enabled rules are read once per batch (one indexed query) and each condition is
parsed once per process (app.alerts.rules.compiled). With no rule, or when no rule matches any
message of the batch (matching, the common case), the writer does exactly what it did before
alerts existed; for a batch that holds matches it also reads back the ids of those rows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from redis import RedisError

from app.alerts.rules import compiled
from app.filterlang import And, DataContains, DataEquals, Equals, Filter, FilterSyntaxError
from app.models import ALERT_PENDING, Alert, AlertRule, Notification

log = logging.getLogger(__name__)

ALERT_NOTIFICATION = "alert_fired"
DIGEST_LOOKBACK = timedelta(hours=1)


class Prefilter:
    """What a condition cannot match without, from its root or the terms AND-ed at its top, checked
    before the full evaluation so that a rule about other messages costs next to nothing (parsing
    the JSON data, which a data condition needs, costs far more than a substring search). Each test
    is a necessary condition only; the full evaluation still decides.

    - `attributes.KEY = "v"`: the attribute is that string (exactly what Equals tests).
    - `data:"text"`: the text is in the data (exactly what DataContains tests, on text data).
    - `data.path = "v"` where v is not a JSON number or constant (it holds no digit and is not
      true/false/null): the value found must then be the string v, which appears verbatim in JSON
      text that has no backslash (no escape can spell it otherwise).
    """

    __slots__ = ("equalities", "texts", "json_strings")

    def __init__(self, rule_filter: Filter):
        root = rule_filter.root
        operands = root.operands if isinstance(root, And) else (root,)
        self.equalities = tuple((node.key, node.value) for node in operands if isinstance(node, Equals))
        self.texts = tuple(node.text for node in operands if isinstance(node, DataContains))
        self.json_strings = tuple(
            node.value for node in operands
            if isinstance(node, DataEquals) and node.value not in ("true", "false", "null")
            and not any(char.isdigit() for char in node.value)
        )

    def rejects(self, attributes: dict, data: str | bytes | None) -> bool:
        for key, value in self.equalities:
            if attributes.get(key) != value:
                return True
        if isinstance(data, str):
            for text in self.texts:
                if text not in data:
                    return True
            if self.json_strings and "\\" not in data:
                for value in self.json_strings:
                    if value not in data:
                        return True
        return False


class RuleEvaluator:
    """One per writer (one user, one subscription): decides which new rows fire which rules."""

    def __init__(self, user_id: int, subscription: str):
        self.user_id = user_id
        self.subscription = subscription
        self.rules: list[tuple[int, str, Filter, Prefilter]] = []
        # Rules indexed by the first attribute equality they require: {key: {value: [rule, ...]}}, so
        # that one dict lookup per key and message finds the few rules worth evaluating; the rest
        # (no equality to index on) are evaluated on every message.
        self.indexed: dict[str, dict[str, list[tuple[int, str, Filter, Prefilter]]]] = {}
        self.unindexed: list[tuple[int, str, Filter, Prefilter]] = []
        self.uses_data = False
        self.to_enqueue: list[tuple[int, float]] = []
        config = current_app.config
        self.max_per_window = config["ALERT_MAX_PER_MINUTE"]
        self.window = timedelta(seconds=config["ALERT_RATE_WINDOW_SECONDS"])
        self.digest_delay = timedelta(seconds=config["ALERT_DIGEST_SECONDS"])
        self.app = current_app._get_current_object()

    def watching(self) -> sa.ColumnElement[bool]:
        """Which rules watch this writer's messages: the user's enabled rules for this subscription or for all."""
        return sa.and_(AlertRule.user_id == self.user_id, AlertRule.enabled.is_(True),
                       sa.or_(AlertRule.subscription.is_(None), AlertRule.subscription == self.subscription))

    def load(self, connection: sa.Connection) -> bool:
        """Read the user's enabled rules for this subscription; whether there are any."""
        found = connection.execute(
            sa.select(AlertRule.id, AlertRule.name, AlertRule.condition).where(self.watching()).order_by(AlertRule.id)
        ).all()
        rules = []
        for rule_id, name, condition in found:
            try:
                rule_filter = compiled(condition)
                rules.append((rule_id, name, rule_filter, Prefilter(rule_filter)))
            except FilterSyntaxError:
                # Saved rules were checked; one that no longer parses (a changed grammar) is skipped, not fatal.
                log.warning("Alert rule %s has a condition that no longer parses; skipped", rule_id)
        self.rules = rules
        self.indexed, self.unindexed = {}, []
        for rule in rules:
            equalities = rule[3].equalities
            if equalities:
                key, value = equalities[0]
                self.indexed.setdefault(key, {}).setdefault(value, []).append(rule)
            else:
                self.unindexed.append(rule)
        self.uses_data = any(rule_filter.uses_data for _, _, rule_filter, _ in rules)
        return bool(rules)

    def _candidates(self, attributes: dict) -> list[tuple[int, str, Filter, Prefilter]]:
        found = []
        for key, by_value in self.indexed.items():
            value = attributes.get(key)
            if isinstance(value, str):  # Equals never holds for a missing or non-text attribute
                found.extend(by_value.get(value, ()))
        return found + self.unindexed if self.unindexed else found

    def _fired(self, row: dict[str, Any]):
        """The ids of the rules the row matches."""
        attributes = row.get("attributes")  # set by app.pubsub.messages.build_row
        if attributes is None:
            try:
                attributes = json.loads(row.get("attributes_json") or "{}")
            except ValueError:
                attributes = {}
        if not isinstance(attributes, dict):
            attributes = {}
        data = None
        if self.uses_data:
            data = row.get("data_text")
            if data is None:
                data = row.get("data_bytes")
        for rule_id, _, rule_filter, prefilter in self._candidates(attributes):
            if prefilter.rejects(attributes, data):
                continue
            if rule_filter.matches(attributes, data if rule_filter.uses_data else None):
                yield rule_id

    def matching(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows some rule matches. Only those can fire, so the writer needs the ids of those alone,
        and of none when the list is empty (the common case)."""
        if not self.rules:
            return []
        return [row for row in rows if next(self._fired(row), None) is not None]

    def stored(self, connection: sa.Connection, new_rows: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Fire the rules that the new rows match: Alert rows (and one notification per rule) in the transaction."""
        if not self.rules or not new_rows:
            return
        firings: dict[int, list[int]] = {}
        for item_id, row in new_rows:
            for rule_id in self._fired(row):
                firings.setdefault(rule_id, []).append(item_id)
        if not firings:
            return
        now = datetime.now(UTC)
        names = {rule_id: name for rule_id, name, _, _ in self.rules}
        notifications = []
        for rule_id, item_ids in firings.items():
            single_ids, digested = self._fire(connection, rule_id, item_ids, now)
            notifications.append({
                "name": ALERT_NOTIFICATION, "user_id": self.user_id, "timestamp": time.time(),
                "payload_json": json.dumps({"rule_id": rule_id, "rule": names[rule_id], "count": len(item_ids),
                                            "digested": digested, "subscription": self.subscription,
                                            "alert_ids": single_ids[:20]}),
            })
        connection.execute(sa.insert(Notification), notifications)

    def _fire(self, connection: sa.Connection, rule_id: int, item_ids: list[int],
              now: datetime) -> tuple[list[int], int]:
        """Alerts for one rule's firings: single ones up to the rate limit, the rest counted into a digest."""
        recent = connection.scalar(
            sa.select(sa.func.count()).select_from(Alert)
            .where(Alert.rule_id == rule_id, Alert.kind == "message", Alert.created_at > now - self.window)
        ) or 0
        allowed = max(0, self.max_per_window - recent)
        singles, excess = item_ids[:allowed], len(item_ids) - min(allowed, len(item_ids))
        single_ids: list[int] = []
        if singles:
            single_ids = list(connection.scalars(
                sa.insert(Alert).returning(Alert.id, sort_by_parameter_order=True),
                [{"rule_id": rule_id, "user_item_id": item_id, "kind": "message", "count": 1,
                  "state": ALERT_PENDING, "attempts": 0, "created_at": now, "next_attempt_at": now}
                 for item_id in singles],
            ))
            self.to_enqueue.extend((alert_id, 0.0) for alert_id in single_ids)
        if excess:
            # Into the rule's digest that has not been sent yet, else a new one sent after ALERT_DIGEST_SECONDS.
            counted = connection.execute(
                sa.update(Alert).where(Alert.rule_id == rule_id, Alert.kind == "digest",
                                       Alert.state == ALERT_PENDING, Alert.attempts == 0,
                                       # Bounds the index range; an older unsent digest (no worker ran) stays as it is.
                                       Alert.created_at > now - self.digest_delay - DIGEST_LOOKBACK)
                .values(count=Alert.count + excess)
            ).rowcount
            if not counted:
                due = now + self.digest_delay
                digest_id = connection.scalar(
                    sa.insert(Alert).returning(Alert.id),
                    {"rule_id": rule_id, "user_item_id": None, "kind": "digest", "count": excess,
                     "state": ALERT_PENDING, "attempts": 0, "created_at": now, "next_attempt_at": due},
                )
                self.to_enqueue.append((digest_id, self.digest_delay.total_seconds()))
        return single_ids, excess

    def discard(self) -> None:
        """The transaction rolled back: its alerts do not exist."""
        self.to_enqueue.clear()

    def committed(self) -> None:
        """Enqueue the delivery jobs of the alerts just committed."""
        if not self.to_enqueue:
            return
        pending, self.to_enqueue = self.to_enqueue, []
        from app.alerts.delivery import enqueue

        with self.app.app_context():
            try:
                enqueue(pending)
            except RedisError as error:
                # The alerts are committed and pending: the workers' courier and maintenance step deliver them.
                log.warning("Could not enqueue %d alert deliveries (%s); the worker will pick them up",
                            len(pending), error.__class__.__name__)
