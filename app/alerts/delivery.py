"""Delivering alerts: the webhook body, its signature, the safe connection, retries and recovery.

An Alert row is the truth about a delivery; RQ jobs on RQ_ALERTS_QUEUE only say "try it now".
A delivery claims its Alert (pending -> delivering, one UPDATE, so two workers never both send
it), sends it, and records the outcome: delivered; pending again with the next attempt after a
growing backoff; or failed, once ALERT_RETRY_HOURS have passed or the target is refused.

At least once: a worker killed mid-delivery leaves its Alert delivering; after ALERT_LEASE_SECONDS
the worker's maintenance step (recover_stuck) makes it pending again and enqueues it. The
receiver may then see it twice, with the same X-PubSub-Monitor-Delivery id.

Polling jobs run until stopped, so a worker busy polling takes no job from any queue. Its parent
process runs a courier meanwhile (app.worker), which delivers due alerts straight from the
database (due_alert_ids): delivery waits for no idle worker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import urllib3
from flask import current_app, url_for
from rq import Queue

from app.alerts.targets import Target, TargetRefused, resolve
from app.extensions import db
from app.models import (
    ALERT_DELIVERED,
    ALERT_DELIVERING,
    ALERT_FAILED,
    ALERT_PENDING,
    Alert,
    AlertRule,
    UserItem,
    as_utc,
    iso,
)
from app.names import short_subscription

log = logging.getLogger(__name__)

DATA_LIMIT = 4096
DELIVERY_HEADER = "X-PubSub-Monitor-Delivery"
SIGNATURE_HEADER = "X-PubSub-Monitor-Signature"
MAX_BACKOFF_SECONDS = 3600.0
MAX_ERROR_LENGTH = 500
USER_AGENT = "pubsub-monitor-alerts/1"


def alerts_queue() -> Queue:
    return Queue(current_app.config["RQ_ALERTS_QUEUE"], connection=current_app.redis)


def wake_key() -> str:
    """A Redis list the couriers of busy workers wait on (BLPOP), so a new alert does not wait for their next round."""
    return f"pubsub-monitor:{current_app.config['RQ_ALERTS_QUEUE']}:wake"


def enqueue(alerts: Iterable[tuple[int, float]]) -> None:
    """Enqueue a delivery job per (alert id, delay in seconds), and wake a courier; raises RedisError."""
    from app.tasks import deliver_alert

    queue = alerts_queue()
    now_jobs = []
    for alert_id, delay in alerts:
        if delay > 0:
            queue.enqueue_in(timedelta(seconds=delay), deliver_alert, alert_id, result_ttl=0, failure_ttl=86400)
        else:
            now_jobs.append(Queue.prepare_data(deliver_alert, (alert_id,), result_ttl=0, failure_ttl=86400))
    if now_jobs:
        queue.enqueue_many(now_jobs)
        with current_app.redis.pipeline() as pipe:
            # A few wake-ups at most: one courier delivers every due alert once woken.
            pipe.lpush(wake_key(), 1).ltrim(wake_key(), 0, 3).execute()


def signature(secret: str, body: bytes) -> str:
    """The X-PubSub-Monitor-Signature value: sha256=<hex HMAC-SHA256 of the raw body, keyed by the rule's secret>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff_seconds(attempts: int) -> float:
    """ALERT_BACKOFF_SECONDS after the first failure, doubling with each, at most an hour."""
    return min(MAX_BACKOFF_SECONDS, current_app.config["ALERT_BACKOFF_SECONDS"] * 2 ** max(0, attempts - 1))


def _data_excerpt(item: UserItem) -> dict[str, Any]:
    raw = item.data
    head = raw[:DATA_LIMIT]
    if item.data_bytes is None:
        # Cut at a character boundary: the first 4 KB of the UTF-8, less a split character.
        return {"data": head.decode("utf-8", errors="ignore"), "data_encoding": "text",
                "data_truncated": len(raw) > DATA_LIMIT}
    return {"data": base64.b64encode(head).decode("ascii"), "data_encoding": "base64",
            "data_truncated": len(raw) > DATA_LIMIT}


def _link(endpoint: str, **values) -> str:
    with current_app.test_request_context(base_url=current_app.config["PUBLIC_URL"]):
        return url_for(endpoint, _external=True, **values)


def payload(alert: Alert, rule: AlertRule, item: UserItem | None) -> dict[str, Any]:
    """The generic JSON body (documented in the README's Alerts section)."""
    body: dict[str, Any] = {"alert_id": alert.id, "rule": {"id": rule.id, "name": rule.name},
                            "fired_at": iso(alert.created_at), "digest": alert.kind == "digest",
                            "test": alert.kind == "test"}
    if item is not None:
        body.update({"subscription": item.subscription, "message_id": item.message_id,
                     "publish_time": iso(item.publish_time), "attributes": item.attributes,
                     **_data_excerpt(item), "size": item.size, "url": _link("main.useritem", item_id=item.id)})
    elif alert.kind == "message":
        # The message was deleted (retention) before the delivery; the alert still says what fired.
        body.update({"subscription": rule.subscription, "message_id": None, "url": None,
                     "note": "the message is no longer stored"})
    else:
        body.update({"subscription": rule.subscription, "count": alert.count,
                     "url": _link("alerts.rule_page", rule_id=rule.id), "messages_url": _messages_link(rule)})
    return body


def _messages_link(rule: AlertRule) -> str:
    """The search for the rule's condition on its subscription, newest first: the messages a digest
    counted are the newest it lists (with any the rule alerted on one by one)."""
    query = {"filter": rule.condition} if rule.condition.strip() else {}
    if rule.subscription:
        query["sub"] = rule.subscription
    return _link("explore.explore", **query)


def slack_text(body: dict[str, Any], rule: AlertRule) -> str:
    project = current_app.config["GCP_PROJECT_ID"]
    subscription = short_subscription(body["subscription"], project) if body.get("subscription") else "any subscription"
    if body["test"]:
        return f"Test of alert rule *{rule.name}* ({subscription}): the webhook works."
    if body["digest"]:
        return (f"Alert rule *{rule.name}* matched {body['count']} more messages on {subscription} "
                f"(over its rate limit). <{body['messages_url']}|See the messages> · <{body['url']}|the rule>")
    if body.get("message_id") is None:
        return f"Alert rule *{rule.name}* matched a message on {subscription} (no longer stored)."
    return (f"Alert rule *{rule.name}* matched message {body['message_id']} on {subscription}, "
            f"published {body['publish_time']}. <{body['url']}|Open the message>")


def render(alert: Alert, rule: AlertRule, item: UserItem | None) -> bytes:
    body = payload(alert, rule, item)
    if rule.format == "slack":
        body = {"text": slack_text(body, rule)}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class DeliveryError(Exception):
    """The receiver did not take the delivery; the message goes into the Alert's last_error."""


def send(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST the body to the checked address (never re-resolving the name); the HTTP status on 2xx."""
    request_headers = {"Host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}",
                       "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    common = {"timeout": urllib3.Timeout(total=timeout), "retries": False, "maxsize": 1}
    if target.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            target.address, target.port, server_hostname=target.host, assert_hostname=target.host, **common)
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, **common)
    try:
        response = pool.urlopen("POST", target.path, body=body, headers=request_headers, redirect=False,
                                assert_same_host=False, preload_content=True)
    except urllib3.exceptions.TimeoutError:
        raise DeliveryError(f"no answer within {timeout:g} s") from None
    except urllib3.exceptions.NewConnectionError:
        raise DeliveryError(f"could not connect to {target.address} port {target.port}") from None
    except urllib3.exceptions.HTTPError as error:
        # The class only: urllib3's messages may quote the URL, whose path can hold a token (Slack's do).
        raise DeliveryError(f"the connection failed ({error.__class__.__name__})") from None
    finally:
        pool.close()
    if not 200 <= response.status < 300:
        raise DeliveryError(f"HTTP {response.status} from the receiver")
    return response.status


def _claim(alert_id: int, now: datetime) -> bool:
    claimed = db.session.execute(
        sa.update(Alert).where(Alert.id == alert_id, Alert.state == ALERT_PENDING, Alert.next_attempt_at <= now)
        .values(state=ALERT_DELIVERING, claimed_at=now, attempts=Alert.attempts + 1)
    ).rowcount
    db.session.commit()
    return bool(claimed)


def deliver(alert_id: int) -> str:
    """Claim and send one alert if it is due; returns the outcome (delivered, retry, failed, skipped)."""
    config = current_app.config
    now = datetime.now(UTC)
    if not _claim(alert_id, now):
        # Delivered or being delivered elsewhere; or not due yet: rq's scheduler counts whole seconds,
        # so a retry's job may come up to a second early, and is then scheduled again.
        due_at = db.session.scalar(
            sa.select(Alert.next_attempt_at).where(Alert.id == alert_id, Alert.state == ALERT_PENDING))
        db.session.rollback()
        if due_at is not None and (wait := (as_utc(due_at) - now).total_seconds()) > 0:
            enqueue([(alert_id, wait)])
        return "skipped"
    alert = db.session.get(Alert, alert_id)
    rule = alert.rule
    item = db.session.get(UserItem, alert.user_item_id) if alert.user_item_id is not None else None
    try:
        if not rule.enabled and alert.kind != "test":
            raise TargetRefused("the rule was disabled before it was delivered")
        body = render(alert, rule, item)
        target = resolve(rule.url, config["ALERT_ALLOW_PRIVATE_TARGETS"])
        send(target, body, {DELIVERY_HEADER: str(alert.id), SIGNATURE_HEADER: signature(rule.secret, body)},
             config["ALERT_TIMEOUT_SECONDS"])
    except TargetRefused as refusal:
        return _finish(alert, ALERT_FAILED, str(refusal))
    except DeliveryError as error:
        created = as_utc(alert.created_at)
        delay = backoff_seconds(alert.attempts)
        retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        if retry_at > created + timedelta(hours=config["ALERT_RETRY_HOURS"]):
            return _finish(alert, ALERT_FAILED, f"{error} (gave up after {alert.attempts} attempts)")
        alert.state, alert.next_attempt_at, alert.claimed_at = ALERT_PENDING, retry_at, None
        alert.last_error = str(error)[:MAX_ERROR_LENGTH]
        db.session.commit()
        # Logged without the URL's query or any header: they may carry credentials.
        log.info("Alert %s (rule %s): attempt %d failed (%s); next in %.1f s",
                 alert.id, rule.id, alert.attempts, error, delay)
        enqueue([(alert.id, delay)])
        return "retry"
    return _finish(alert, ALERT_DELIVERED, None)


def _finish(alert: Alert, state: str, error: str | None) -> str:
    alert.state = state
    alert.claimed_at = None
    if error is not None:
        alert.last_error = error[:MAX_ERROR_LENGTH]
    if state == ALERT_DELIVERED:
        alert.delivered_at = datetime.now(UTC)
    db.session.commit()
    if state == ALERT_FAILED:
        log.warning("Alert %s (rule %s) failed: %s", alert.id, alert.rule_id, error)
    return state


def due_alert_ids(limit: int = 50) -> list[int]:
    """The alerts whose delivery is due, oldest first (the courier's round)."""
    return list(db.session.scalars(
        sa.select(Alert.id).where(Alert.state == ALERT_PENDING, Alert.next_attempt_at <= datetime.now(UTC))
        .order_by(Alert.next_attempt_at).limit(limit)
    ))


def recover_stuck(lost_after_seconds: float = 60.0, limit: int = 500) -> int:
    """Make deliveries whose worker died pending again, re-enqueue pending ones whose job was lost,
    and delete history older than ALERT_HISTORY_DAYS.

    Run by the worker's maintenance step. A delivery claimed more than ALERT_LEASE_SECONDS ago
    (its timeout is far shorter) belongs to a dead worker. Returns how many alerts were enqueued.
    """
    now = datetime.now(UTC)
    lease = timedelta(seconds=current_app.config["ALERT_LEASE_SECONDS"])
    stuck = list(db.session.scalars(
        sa.select(Alert.id).where(Alert.state == ALERT_DELIVERING, Alert.claimed_at < now - lease).limit(limit)
    ))
    if stuck:
        db.session.execute(
            sa.update(Alert).where(Alert.id.in_(stuck), Alert.state == ALERT_DELIVERING)
            .values(state=ALERT_PENDING, claimed_at=None, next_attempt_at=now,
                    last_error="the worker delivering it stopped; delivered again")
        )
    lost = list(db.session.scalars(
        sa.select(Alert.id).where(Alert.state == ALERT_PENDING,
                                  Alert.next_attempt_at < now - timedelta(seconds=lost_after_seconds))
        .order_by(Alert.next_attempt_at).limit(limit)
    ))
    # The history is kept for ALERT_HISTORY_DAYS; a few thousand rows per pass keep each pass short.
    cutoff = now - timedelta(days=current_app.config["ALERT_HISTORY_DAYS"])
    old = sa.select(Alert.id).where(Alert.state.in_((ALERT_DELIVERED, ALERT_FAILED)),
                                    Alert.next_attempt_at < cutoff).limit(5000)
    db.session.execute(sa.delete(Alert).where(Alert.id.in_(old.scalar_subquery())))
    db.session.commit()
    ids = list(dict.fromkeys(stuck + lost))
    if ids:
        enqueue((alert_id, 0.0) for alert_id in ids)
        log.info("Alerts: %d stuck and %d overdue deliveries enqueued again", len(stuck), len(lost))
    return len(ids)


def latency_seconds(alert: Alert) -> float | None:
    """From the firing (the commit of its message) to the receiver's answer."""
    if alert.delivered_at is None:
        return None
    return (as_utc(alert.delivered_at) - as_utc(alert.created_at)).total_seconds()


def history_row(alert: Alert) -> dict[str, Any]:
    """One delivery as GET /alerts/<id>.json and the rule's page show it."""
    return {"id": alert.id, "kind": alert.kind, "count": alert.count, "user_item_id": alert.user_item_id,
            "state": alert.state, "attempts": alert.attempts, "last_error": alert.last_error,
            "created_at": iso(alert.created_at), "delivered_at": iso(alert.delivered_at),
            "next_attempt_at": iso(alert.next_attempt_at) if alert.state == ALERT_PENDING else None,
            "latency_seconds": latency_seconds(alert)}
