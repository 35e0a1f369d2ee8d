"""The life of a polling task, in one place: start, stop, state, progress, end and resume.

A polling Task is one subscription polled for one user by `Task.streams` RQ jobs. Its state
(`TaskState`) lives on the Task row and is changed only by `transition`, which also posts the
`task_progress` notification the page follows; the notification's payload is built only by
`progress_payload`. `stalled` is not a state: it is derived from the heartbeat (`job_is_alive`).

Views, the RQ job (app.pubsub.poller) and the worker's maintenance step (app.worker) call this
module. It imports nothing from gRPC, so the worker's main process can use it before it forks.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from flask import current_app, g, has_request_context
from redis import Redis, RedisError
from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Subscription, Task, User, as_utc, iso, utcnow
from app.names import InvalidSubscriptionName, canonical_subscription, short_subscription
from app.security import redact_secrets

log = logging.getLogger(__name__)

POLLING_TASK = "polling_subscription"
JOB_FUNCTION = "app.tasks.polling_subscription"

# How often, and after how long, rq runs a job again whose worker died or restarted.
TASK_RESUME_LIMIT = 10_000
TASK_RESUME_INTERVALS = [5, 30, 60]

ALIVE_TTL_SECONDS = 30
# A job that has written neither its Redis key nor the heartbeat for this long is gone.
STALE_AFTER = timedelta(seconds=30)
WAITING_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
RESUMED_STAGE = "Resumed after worker restart"
# The reason a task stops when the user removes its subscription from their list.
REMOVED_REASON = "the subscription was removed from the list"
# How often a removal looks whether the job has stopped (it checks for a stop every two seconds).
STOP_WAIT_POLL_SECONDS = 0.2


class TaskState(StrEnum):
    QUEUED = "queued"
    POLLING = "polling"
    RECONNECTING = "reconnecting"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"


# A task in one of these states has a job waiting or running (Task.complete is False).
RUNNING_STATES = frozenset({TaskState.QUEUED, TaskState.POLLING, TaskState.RECONNECTING})
# What the job may no longer overwrite: the user asked it to stop, or it has ended.
CLOSED_STATES = frozenset({TaskState.STOPPING, TaskState.FINISHED, TaskState.FAILED})
# The words shown beside each state (the page switches on the state, never on these).
STAGE_WORDS = {
    TaskState.QUEUED: "Waiting for a free worker",
    TaskState.POLLING: "Polling",
    TaskState.RECONNECTING: "Reconnecting",
    TaskState.STOPPING: "Stopping",
    TaskState.FINISHED: "Finished",
    TaskState.FAILED: "Failed",
}


class PollingRefused(Exception):
    """A start or stop the user may not make; `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --- names and permissions ---------------------------------------------------------------------


def project_id() -> str:
    return current_app.config["GCP_PROJECT_ID"]


def default_subscription() -> str:
    """The default subscription (SUBSCRIPTION_NAME), in canonical form; it is in every user's list."""
    return canonical_subscription(current_app.config["SUBSCRIPTION_NAME"], project_id())


def canonical(name: str | None) -> str:
    """The canonical name of what the user asked for (the default when empty); PollingRefused(400) when invalid."""
    if name is None or not str(name).strip():
        return default_subscription()
    try:
        return canonical_subscription(str(name), project_id())
    except InvalidSubscriptionName as error:
        raise PollingRefused(400, str(error)) from None


def display_name(subscription: str | None) -> str:
    return short_subscription(subscription or "", project_id())


def user_subscription_names(user: User) -> list[str]:
    """The subscriptions a user may poll and pick: the default first, then their list."""
    names = db.session.scalars(
        sa.select(Subscription.name).where(Subscription.user_id == user.id).order_by(Subscription.name)
    ).all()
    default = default_subscription()
    return [default, *(name for name in names if name != default)]


def check_may_poll(user: User, subscription: str) -> None:
    """PollingRefused(403) unless the user may poll this (canonical) subscription."""
    if user.is_admin or subscription == default_subscription():
        return
    listed = db.session.scalar(
        sa.select(Subscription.id).where(Subscription.user_id == user.id, Subscription.name == subscription)
    )
    if listed is None:
        raise PollingRefused(
            403, f"{display_name(subscription)} is not in your subscriptions. Add it on the Subscriptions page first."
        )


def parse_streams(value: Any) -> int:
    """How many streams (one job each, on as many workers) a task runs: 1 when not given.

    PollingRefused(400) unless a whole number from 1 to MAX_POLLING_STREAMS. See README, "Scaling out"."""
    if value is None or str(value).strip() == "":
        return 1
    limit = current_app.config["MAX_POLLING_STREAMS"]
    refusal = PollingRefused(400, f"streams must be a whole number from 1 to {limit}.")
    if isinstance(value, bool) or isinstance(value, float):
        raise refusal
    try:
        streams = int(str(value).strip())
    except ValueError:
        raise refusal from None
    if not 1 <= streams <= limit:
        raise refusal
    return streams


# --- reading tasks -----------------------------------------------------------------------------


def running_task(user_id: int, subscription: str | None = None) -> Task | None:
    """The user's task polling this subscription (or any, newest first) whose job waits or runs."""
    query = sa.select(Task).where(Task.user_id == user_id, Task.name == POLLING_TASK, Task.complete.is_(False))
    if subscription is not None:
        query = query.where(Task.subscription == subscription)
    return db.session.scalar(query.order_by(Task.started_at.desc()).limit(1))


def latest_task(user_id: int, subscription: str) -> Task | None:
    """The task the user sees for this subscription: the running one, else the newest ended one."""
    task = running_task(user_id, subscription)
    if task is not None:
        return task
    return db.session.scalar(
        sa.select(Task)
        .where(Task.user_id == user_id, Task.name == POLLING_TASK, Task.subscription == subscription)
        .order_by(Task.started_at.desc())
        .limit(1)
    )


def running_task_count(user_id: int) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(Task)
        .where(Task.user_id == user_id, Task.name == POLLING_TASK, Task.complete.is_(False))
    ) or 0


def fellow_pollers(subscription: str, user_id: int) -> list[str]:
    """Other users polling the same subscription now: they share its messages."""
    polling = sa.select(User.username).join(Task, Task.user_id == User.id).where(
        Task.subscription == subscription, Task.complete.is_(False), Task.name == POLLING_TASK, User.id != user_id
    )
    return sorted(set(db.session.scalars(polling)))


# --- status --------------------------------------------------------------------------------------


@dataclass
class QueueInfo:
    position: int | None
    workers: int
    busy: int


def queue_info(task: Task, redis: Redis) -> QueueInfo:
    """Where the task's first job waits in the queue, and how many workers there are and are busy."""
    queue = Queue(current_app.config["RQ_QUEUE"], connection=redis)
    position = queue.get_job_position(task.job_ids()[0])
    workers = Worker.all(queue=queue)
    busy = sum(1 for worker in workers if worker.get_state() == "busy")
    return QueueInfo(position=None if position is None else position + 1, workers=len(workers), busy=busy)


def queued_words(info: QueueInfo | None) -> str:
    if info is None:
        return STAGE_WORDS[TaskState.QUEUED]
    return f"{STAGE_WORDS[TaskState.QUEUED]} ({info.workers} running, {info.busy} busy)"


def status(user: User, subscription: str) -> dict[str, Any]:
    """The state of the user's polling of one (canonical) subscription, as GET /polling_pubsub answers it.

    `status` is the coarse word (idle, queued, polling, stalled, failed); `state` is the Task's state.
    """
    task = latest_task(user.id, subscription)
    answer: dict[str, Any] = {
        "subscription": subscription,
        "subscription_name": display_name(subscription),
        "status": "idle", "state": None, "reason": None, "task_id": None, "stored_count": 0,
    }
    if task is None:
        return answer
    state = TaskState(task.state)
    answer.update({
        "task_id": task.id,
        "state": state.value,
        "reason": task.state_reason,
        "state_changed_at": iso(task.state_changed_at),
        "description": task.description,
        "stored_count": task.stored_count,
        "quarantined_count": task.quarantined_count,
        "streams": task.streams,
        "started_at": iso(task.started_at),
        "words": STAGE_WORDS[state],
    })
    if not task.complete:
        answer["status"] = "queued" if state == TaskState.QUEUED else "polling"
        if task.state_reason:  # a running task may say why it is held back (app.retention: the database is full)
            answer["words"] = f"{STAGE_WORDS[state]}: {task.state_reason}"
        try:
            if has_request_context() and g.get("redis_unanswered"):
                # A page lists a status per subscription: one Redis timeout per request is enough.
                raise RedisError("Redis did not answer earlier in this request")
            alive = job_is_alive(task, current_app.redis, utcnow())
            info = queue_info(task, current_app.redis) if state == TaskState.QUEUED else None
        except RedisError:
            if has_request_context():
                g.redis_unanswered = True
            alive, info = None, None  # unknown while Redis is down; the database still says what it says
        if alive is False:
            # The worker running it is gone; a worker resumes it within seconds of being up.
            answer["status"] = "stalled"
        if info is not None:
            answer.update({"queue_position": info.position, "workers": info.workers, "busy_workers": info.busy})
            answer["words"] = queued_words(info)
    elif state == TaskState.FAILED and not task.dismissed:
        answer["status"] = "failed"
        answer["words"] = f"Failed: {task.state_reason}" if task.state_reason else "Failed"
    return answer


# --- transitions ---------------------------------------------------------------------------------


def progress_payload(task: Task, stage: str | None = None, mode: str | None = None,
                     local_filter: dict[str, Any] | None = None) -> dict[str, Any]:
    """The task_progress notification's payload: the state for scripts, the stage for people.

    `local_filter` is present where the job applies the subscription's filter itself (the
    emulator, app.pubsub.filtering): the expression, whether it is applied, how many messages it
    left out (acked, not stored) and why it is not applied when it is not."""
    state = TaskState(task.state)
    if stage is None:
        stage = STAGE_WORDS[state]
        if state == TaskState.FAILED and task.state_reason:
            stage = f"Failed: {task.state_reason}"
    return {
        "task_id": task.id,
        "state": state.value,
        "reason": task.state_reason,
        "subscription": task.subscription,
        "subscription_name": display_name(task.subscription),
        "description": task.description,
        "progress": stage,
        "mode": mode,
        "stored_count": task.stored_count,
        "quarantined_count": task.quarantined_count,
        "local_filter": local_filter,
    }


def _set_state(task: Task, state: TaskState, reason: str | None) -> None:
    if task.state != state.value or task.state_reason != reason:
        task.state = state.value
        task.state_reason = reason
        task.state_changed_at = utcnow()
    if state in CLOSED_STATES:
        task.complete = True
        if task.finished_at is None:
            task.finished_at = utcnow()


def transition(task_id: str, state: TaskState, reason: str | None = None, *, stage: str | None = None,
               mode: str | None = None, notify: bool = True, local_filter: dict[str, Any] | None = None,
               ) -> Task | None:
    """The one way a task's state changes: set it (with its reason and time), commit, and tell the user.

    From the job, states a user has closed (stopping, or ended) are never overwritten by a running
    state, so a stop is never undone by a progress report that crossed it. Reasons are redacted like
    the logs. Returns the task, or None when it does not exist.
    """
    db.session.rollback()  # read the row as it is now, not as an earlier transaction saw it
    task = db.session.get(Task, task_id, with_for_update=db.engine.dialect.name == "postgresql")
    if task is None:
        return None
    if reason is not None:
        reason = redact_secrets(reason)[:2000]
    if state in RUNNING_STATES and TaskState(task.state) in CLOSED_STATES:
        state, reason = TaskState(task.state), task.state_reason
    elif state == TaskState.FAILED and task.state == TaskState.STOPPING.value and task.state_reason == REMOVED_REASON:
        # The user removed the subscription (a tap's is then deleted): a job that meets it gone ends
        # as it would have anyway, without a failure for a subscription the user no longer has.
        state, reason = TaskState.FINISHED, REMOVED_REASON
    _set_state(task, state, reason)
    if state == TaskState.FAILED and reason is not None:
        task.last_error = reason
    if notify:
        user = db.session.get(User, task.user_id)
        user.add_notification("task_progress", progress_payload(task, stage, mode, local_filter))
    db.session.commit()
    return task


def report(task_id: str, state: TaskState, stage: str | None = None, mode: str | None = None,
           local_filter: dict[str, Any] | None = None) -> Task | None:
    """Progress from a running job: the state and counts as they are, for the page."""
    return transition(task_id, state, stage=stage, mode=mode, local_filter=local_filter)


def end(task_id: str, state: TaskState, reason: str | None = None, mode: str | None = None) -> Task | None:
    """The job has ended: finished, or failed with a reason the user sees until they act on it."""
    return transition(task_id, state, reason, mode=mode)


# --- start and stop ------------------------------------------------------------------------------


def launch(user: User, subscription: str, streams: int = 1, description: str | None = None) -> Task:
    """Record a queued Task, commit it, then enqueue its RQ jobs (no timeout: they run until stopped).

    `streams` jobs are enqueued for the one Task, so that as many workers share the subscription,
    each with its own stream or puller (Task.job_ids names them). Raises IntegrityError when a task
    already runs for this subscription, and RedisError when the queue is unreachable (the Task then
    ends failed with that reason).
    """
    task = Task(
        id=uuid.uuid4().hex, name=POLLING_TASK, user=user, subscription=subscription, streams=streams,
        description=description or f"Polling subscription {display_name(subscription)}",
        state=TaskState.QUEUED.value, state_changed_at=utcnow(),
    )
    db.session.add(task)
    db.session.commit()
    try:
        for stream, job_id in enumerate(task.job_ids()):
            current_app.task_queue.enqueue(
                JOB_FUNCTION, user.id, subscription,
                **({"stream": stream} if stream else {}),
                job_id=job_id, job_timeout=-1, result_ttl=3600, failure_ttl=86400,
                # A worker that dies or restarts (Heroku restarts every dyno daily) fails the job;
                # rq then queues it again and polling resumes on the same Task.
                retry=Retry(max=TASK_RESUME_LIMIT, interval=TASK_RESUME_INTERVALS),
            )
    except RedisError as error:
        transition(task.id, TaskState.FAILED, f"could not queue the job ({error.__class__.__name__})")
        raise
    return task


def start(user: User, name: str | None, streams: Any = None) -> tuple[Task, bool]:
    """Start polling a subscription for the user; (task, True) when started, (running task, False) when
    it already ran. PollingRefused says why not: a bad name or streams (400), a subscription the user
    may not poll (403), too many running tasks (429), or no task queue (503)."""
    subscription = canonical(name)
    stream_count = parse_streams(streams)
    check_may_poll(user, subscription)
    running = running_task(user.id, subscription)
    if running is not None:
        return running, False
    limit = current_app.config["MAX_TASKS_PER_USER"]
    if running_task_count(user.id) >= limit:
        raise PollingRefused(
            429, f"You already poll {limit} subscriptions, the most allowed (MAX_TASKS_PER_USER). Stop one first."
        )
    try:
        task = launch(user, subscription, stream_count)
    except IntegrityError:
        # A concurrent start won the race: report its task.
        db.session.rollback()
        running = running_task(user.id, subscription)
        if running is None:
            raise PollingRefused(409, "Another start of this subscription is under way; try again.") from None
        return running, False
    except RedisError:
        log.exception("Could not queue the polling job")
        raise PollingRefused(503, "The task queue (Redis) is unavailable. Try again shortly.") from None
    log.info("User %s started polling %s (task %s, %d streams)", user.username, subscription, task.id,
             stream_count)
    return task, True


def stop(user: User, name: str | None) -> Task | None:
    """Ask the user's task on this subscription to stop; its job sees that within two seconds, writes and
    acks what it holds, and ends as finished. None when nothing was polling it."""
    subscription = canonical(name)
    task = running_task(user.id, subscription)
    if task is None:
        return None
    transition(task.id, TaskState.STOPPING)
    log.info("User %s stopped polling %s (task %s)", user.username, subscription, task.id)
    return task


def dismiss(user: User, name: str | None) -> bool:
    """Hide a failed task's alert (the user has read it); True when there was one."""
    task = latest_task(user.id, canonical(name))
    if task is None or task.state != TaskState.FAILED.value or task.dismissed:
        return False
    task.dismissed = True
    db.session.commit()
    return True


def stop_all_for(user_id: int, subscription: str) -> None:
    """Stop whatever polls this subscription for the user (it is being removed); the caller commits."""
    task = running_task(user_id, subscription)
    if task is not None:
        _set_state(task, TaskState.STOPPING, REMOVED_REASON)


def stop_for_removal(user_id: int, subscriptions: list[str], timeout: float) -> bool:
    """Stop polling subscriptions about to be deleted, and wait (at most `timeout` seconds in all) until
    their jobs have let go of them. True when nothing polls them any more; False when a job did not
    stop in time. Commits (each stop is a task transition).

    A task still queued has no job holding its subscription (its job ends at once when it starts),
    so there is nothing to wait for.
    """
    stopping = []
    for subscription in subscriptions:
        task = latest_task(user_id, subscription)
        if task is None or TaskState(task.state) not in RUNNING_STATES | {TaskState.STOPPING}:
            continue
        was_queued = task.state == TaskState.QUEUED.value
        transition(task.id, TaskState.STOPPING, REMOVED_REASON)
        if not was_queued:
            stopping.append(task.id)
    deadline = time.monotonic() + timeout
    while stopping:
        db.session.rollback()  # see the jobs' writes, not this session's snapshot
        states = dict(db.session.execute(sa.select(Task.id, Task.state).where(Task.id.in_(stopping))).all())
        stopping = [task_id for task_id in stopping if states.get(task_id) == TaskState.STOPPING.value]
        if stopping and time.monotonic() >= deadline:
            log.warning("Tasks %s still held their subscriptions %.0f s after a stop; removing them anyway",
                        ", ".join(stopping), timeout)
            return False
        if stopping:
            time.sleep(STOP_WAIT_POLL_SECONDS)
    return True


# --- liveness and resume ---------------------------------------------------------------------------


def alive_key(job_id: str) -> str:
    return f"pubsub-monitor:task-alive:{job_id}"


def mark_alive(redis: Redis, job_id: str) -> None:
    """Called by the running job at least every 10 s."""
    redis.set(alive_key(job_id), "1", ex=ALIVE_TTL_SECONDS)


def _recent(moment: datetime | None, now: datetime) -> bool:
    moment = as_utc(moment)
    return moment is not None and now - moment < STALE_AFTER


def job_is_alive(task: Task, redis: Redis, now: datetime) -> bool:
    """Whether every stream of this Task has a job running or waiting to run. Raises RedisError when unsure.

    A running job proves it is alive in two places: a Redis key with a short TTL and
    `Task.heartbeat_at`. Either is enough, so an outage of Redis or of the database alone never
    makes a live job look dead. Task.heartbeat_at is shared by the streams, so with several it
    vouches for the Task as a whole only while Redis cannot tell.
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
            job_status, job_started_at = job.get_status(), job.started_at
        except NoSuchJobError:
            job_status = job_started_at = None
        if job_status in WAITING_STATUSES:
            continue
        # Picked up a moment ago: its work horse is still starting and has not heartbeated yet.
        if job_status == JobStatus.STARTED and _recent(job_started_at, now):
            continue
        if len(job_ids) == 1 and _recent(task.heartbeat_at, now):
            continue
        # Launched a moment ago and not yet heartbeating: give the jobs time to start.
        if (task.heartbeat_at is None or len(job_ids) > 1) and _recent(task.started_at, now):
            continue
        return False
    return True


def resume(task: Task, reason: str) -> Task | None:
    """Close a Task whose job is gone and launch its replacement; None when another process won."""
    closed = db.session.execute(
        sa.update(Task)
        .where(Task.id == task.id, Task.complete.is_(False))
        .values(complete=True, finished_at=utcnow(), last_error=reason, state=TaskState.FINISHED.value,
                state_reason=reason, state_changed_at=utcnow())
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
        replacement = launch(user, task.subscription, task.streams or 1, task.description)
    except IntegrityError:
        # The user (or another worker) started polling this subscription in the meantime.
        db.session.rollback()
        return None
    user.add_notification("task_progress", progress_payload(replacement, RESUMED_STAGE))
    db.session.commit()
    log.warning("Task %s (%s, user %s): %s; resumed as task %s",
                task.id, task.subscription, task.user_id, reason, replacement.id)
    return replacement


def reconcile() -> list[Task]:
    """Resume every running polling Task whose job is gone (run by every worker's maintenance step)."""
    tasks = list(db.session.scalars(
        sa.select(Task).where(Task.name == POLLING_TASK, Task.complete.is_(False))
    ))
    now = utcnow()
    resumed = []
    for task in tasks:
        try:
            if job_is_alive(task, current_app.redis, now):
                continue
        except RedisError:
            return resumed  # cannot tell without Redis; never guess
        replacement = resume(task, "The worker running this task stopped; polling was resumed.")
        if replacement is not None:
            resumed.append(replacement)
    return resumed
