"""/healthz for uptime monitors: the database and its size, Redis and the workers' heartbeat. No auth, no secrets."""

from __future__ import annotations

import time
from datetime import datetime

import sqlalchemy as sa
from flask import current_app, jsonify
from redis import RedisError
from rq import Worker
from sqlalchemy.exc import SQLAlchemyError

from app import retention
from app.extensions import db, limiter
from app.health import bp
from app.models import Task, as_utc, iso, utcnow


def _timed(check):
    started = time.monotonic()
    result = check()
    return result, round((time.monotonic() - started) * 1000, 1)


@bp.route("/healthz")
@limiter.exempt
def healthz():
    """200 when the database and Redis answer, else 503; the workers' state is reported, not judged."""
    checks: dict = {}
    healthy = True
    try:
        _result, elapsed = _timed(lambda: db.session.execute(sa.text("SELECT 1")).scalar())
        checks["database"] = {"status": "ok", "ms": elapsed}
        size = retention.size_status(retention.database_size_bytes())
        checks["database"].update({"size_bytes": size.size_bytes, "size_limit_bytes": size.limit_bytes,
                                   "size_level": size.level})
    except SQLAlchemyError as error:
        db.session.rollback()
        healthy = False
        checks["database"] = {"status": "error", "error": error.__class__.__name__}
    try:
        _result, elapsed = _timed(current_app.redis.ping)
        checks["redis"] = {"status": "ok", "ms": elapsed}
        workers = Worker.all(connection=current_app.redis)
        beats = [as_utc(worker.last_heartbeat) for worker in workers if worker.last_heartbeat]
        checks["workers"] = {"count": len(workers), "latest_heartbeat": iso(max(beats)) if beats else None}
    except RedisError as error:
        healthy = False
        checks["redis"] = {"status": "error", "error": error.__class__.__name__}
    if checks["database"]["status"] == "ok":
        latest: datetime | None = as_utc(db.session.scalar(
            sa.select(sa.func.max(Task.heartbeat_at)).where(Task.complete.is_(False))
        ))
        checks["polling"] = {
            "latest_task_heartbeat": iso(latest),
            "seconds_since": round((utcnow() - latest).total_seconds(), 1) if latest else None,
        }
    return jsonify({"status": "ok" if healthy else "error", "checks": checks}), 200 if healthy else 503
