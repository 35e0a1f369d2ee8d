"""Keep polling Tasks honest: a Task "in progress" whose job is gone is resumed in a new job.

A running polling job proves it is alive in two places: a Redis key with a short TTL
(`mark_alive`) and `Task.heartbeat_at` in the database. Either one is enough, so an
outage of Redis or of the database alone never makes a live job look dead. A Task
whose RQ job is still waiting in the queue is left alone too.

`reconcile_polling_tasks` runs in every worker (at start and every few seconds while
idle, see app.worker) and in the web app when a user asks for their polling status.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from redis import Redis, RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Task, User, as_utc, utcnow

log = logging.getLogger(__name__)

POLLING_TASK = "polling_subscription"
ALIVE_TTL_SECONDS = 30
# A job that has written neither key nor heartbeat for this long is gone.
STALE_AFTER = timedelta(seconds=30)
WAITING_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
RESUMED_STAGE = "Resumed after worker restart"


def alive_key(task_id: str) -> str:
    return f"pubsub-monitor:task-alive:{task_id}"


def mark_alive(redis: Redis, task_id: str) -> None:
    """Called by the running job at least every 10 s."""
    redis.set(alive_key(task_id), "1", ex=ALIVE_TTL_SECONDS)


def clear_alive(redis: Redis, task_id: str) -> None:
    redis.delete(alive_key(task_id))


def _recent(moment: datetime | None, now: datetime) -> bool:
    moment = as_utc(moment)
    return moment is not None and now - moment < STALE_AFTER


def job_is_alive(task: Task, redis: Redis, now: datetime) -> bool:
    """Whether every stream of this Task has a job running or waiting to run. Raises RedisError when unsure.

    Task.heartbeat_at is shared by the streams, so with several it vouches for the Task as a whole
    only while Redis cannot tell (a stream whose key and job are gone counts as dead).
    """
    job_ids = task.job_ids()
    alive_keys = redis.exists(*(alive_key(job_id) for job_id in job_ids))
    if alive_keys == len(job_ids):
        return True
    for job_id in job_ids:
        if redis.exists(alive_key(job_id)):
            continue
        try:
            job = Job.fetch(job_id, connection=redis)
            status, job_started_at = job.get_status(), job.started_at
        except NoSuchJobError:
            status = job_started_at = None
        if status in WAITING_STATUSES:
            continue
        # Picked up a moment ago: its work horse is still starting and has not heartbeated yet.
        if status == JobStatus.STARTED and _recent(job_started_at, now):
            continue
        if len(job_ids) == 1 and _recent(task.heartbeat_at, now):
            continue
        # Launched a moment ago and not yet heartbeating: give the jobs time to start.
        if (task.heartbeat_at is None or len(job_ids) > 1) and _recent(task.started_at, now):
            continue
        return False
    return True


def resume_task(task: Task, reason: str) -> Task | None:
    """Close a Task whose job is gone and launch its replacement; None when another process won."""
    closed = db.session.execute(
        sa.update(Task)
        .where(Task.id == task.id, Task.complete.is_(False))
        .values(complete=True, finished_at=utcnow(), last_error=reason)
    )
    if closed.rowcount != 1:
        db.session.rollback()
        return None
    db.session.commit()
    for job_id in task.job_ids():
        try:
            # So that rq's own abandoned-job handling cannot run the old job again later.
            Job.fetch(job_id, connection=current_app.redis).delete()
        except NoSuchJobError:
            pass
    user = db.session.get(User, task.user_id)
    try:
        replacement = user.launch_task(POLLING_TASK, task.description or "Polling", task.subscription,
                                       streams=task.streams or 1)
    except IntegrityError:
        # The user (or another worker) started polling this subscription in the meantime.
        db.session.rollback()
        return None
    # Posted here rather than through app.pubsub: the worker's main process must not load gRPC
    # before it forks the work horse.
    user.add_notification("task_progress", {
        "task_id": replacement.id, "description": replacement.description,
        "subscription": replacement.subscription, "progress": RESUMED_STAGE, "mode": None, "stored_count": 0,
    })
    db.session.commit()
    log.warning("Task %s (%s, user %s): %s; resumed as task %s",
                task.id, task.subscription, task.user_id, reason, replacement.id)
    return replacement


def reconcile_polling_tasks(user_id: int | None = None) -> list[Task]:
    """Resume every in-progress polling Task (of one user, or all) whose job is gone."""
    query = sa.select(Task).where(Task.name == POLLING_TASK, Task.complete.is_(False))
    if user_id is not None:
        query = query.where(Task.user_id == user_id)
    tasks = list(db.session.scalars(query))
    now = utcnow()
    resumed = []
    for task in tasks:
        try:
            if job_is_alive(task, current_app.redis, now):
                continue
        except RedisError:
            return resumed  # cannot tell without Redis; never guess
        replacement = resume_task(task, "The worker running this task stopped; polling was resumed.")
        if replacement is not None:
            resumed.append(replacement)
    return resumed
