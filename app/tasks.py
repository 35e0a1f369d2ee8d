"""RQ jobs. Thin: each makes the app and hands off to the module that does the work."""

import gc
import logging

from rq import get_current_job

from app import create_app
from app.models import task_id_of_job
from app.pubsub import run_polling_task


def polling_subscription(user_id: int, subscription: str, stream: int = 0) -> str:
    """Store every message of `subscription` for the user until the Task behind this job is stopped.

    A Task with several streams has one such job per stream (job ids from Task.job_ids).
    """
    job = get_current_job()
    if job is None:
        raise RuntimeError("polling_subscription runs as an RQ job; its Task id is the job id")
    app = create_app()
    # The work horse is a fork of the worker: nearly every object it inherited, and the app just made,
    # lives as long as the job. Frozen, they are left out of every garbage collection from now on
    # (the few already garbage are never freed). Otherwise each full collection walks all of them
    # (and writes to each one's header, copying the worker's shared pages): at a few thousand
    # messages a second that was a fifth or more of the time spent converting messages (bench/ingest.py).
    gc.freeze()
    logging.getLogger(__name__).info("Polling job %s: %d objects (inherited from the worker, and the app) "
                                     "left out of garbage collection", job.id, gc.get_freeze_count())
    with app.app_context():
        return run_polling_task(task_id_of_job(job.id), stream)


_delivery_app = None


def deliver_alert(alert_id: int) -> str:
    """Send one alert's webhook if it is due (app.alerts.delivery); retries are enqueued by it.

    app.worker.PollingWorker runs it in the worker's own process, so the app is made once per process.
    """
    global _delivery_app
    from app.alerts.delivery import deliver

    if _delivery_app is None:
        _delivery_app = create_app()
    with _delivery_app.app_context():
        return deliver(alert_id)


def forget_inherited_connections() -> None:
    """In a forked work horse: drop, without closing, the pooled connections deliver_alert's app left."""
    if _delivery_app is not None:
        from app.extensions import db

        with _delivery_app.app_context():
            db.engine.dispose(close=False)
