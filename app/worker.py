"""The RQ worker class: rq's HerokuWorker, which also resumes polling tasks whose job is gone.

Procfile: `rq worker ... -w app.worker.PollingWorker ...`. HerokuWorker already handles
Heroku's SIGTERM well (the running job is told to stop, not killed mid-write). This class
adds one maintenance step, run at start and every MAINTENANCE_SECONDS while idle: polling
Tasks left running by a worker that died are resumed (see app.polling.reconcile), and the
retention pass runs when it is due (app.retention). A worker busy polling runs the retention
pass too, from its heartbeat loop, so that a deployment whose only worker polls still has one.

Alerts: the worker listens on RQ_ALERTS_QUEUE (first, so deliveries go before new polling jobs)
and RQ_QUEUE. A delivery job is short (its timeout bounds it), so it runs in the worker's own
process, as rq's SimpleWorker runs jobs, without the fork and app start-up of a work horse. A
polling job never ends by itself, so while its work horse polls, the worker's own process runs
an AlertCourier that delivers due alerts from the database, COURIER_THREADS at a time: a worker
busy polling still delivers at once. The maintenance step recovers deliveries left half-done by
a worker that died (app.alerts.delivery.recover_stuck).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from rq.worker import HerokuWorker, WorkerStatus

MAINTENANCE_SECONDS = 15
COURIER_SECONDS = 0.5
COURIER_THREADS = 4
POLLING_JOB = "app.tasks.polling_subscription"
ALERT_JOB = "app.tasks.deliver_alert"

log = logging.getLogger(__name__)


class AlertCourier(threading.Thread):
    """Delivers due alerts while the worker's work horse is busy polling (see the module docstring)."""

    def __init__(self):
        super().__init__(name="alert-courier", daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        from flask import current_app
        from redis import RedisError

        from app import create_app
        from app.alerts.delivery import deliver, due_alert_ids, recover_stuck, wake_key
        from app.extensions import db

        flask_app = create_app()

        def deliver_one(alert_id: int) -> None:
            # Each thread has its own app context, hence its own database session.
            with flask_app.app_context():
                try:
                    deliver(alert_id)
                except Exception:  # a process boundary: one failed delivery must not stop the others
                    log.exception("Alert courier: delivery of alert %s failed", alert_id)

        next_recovery = time.monotonic() + MAINTENANCE_SECONDS
        pool = ThreadPoolExecutor(COURIER_THREADS, thread_name_prefix="alert-courier")
        with flask_app.app_context():
            try:
                while not self.stopping.is_set():
                    try:
                        # Woken as soon as an alert is enqueued; else every COURIER_SECONDS (retries, lost wake-ups).
                        current_app.redis.blpop([wake_key()], timeout=COURIER_SECONDS)
                    except RedisError:
                        self.stopping.wait(COURIER_SECONDS)
                    try:
                        while not self.stopping.is_set():
                            due = due_alert_ids()
                            db.session.rollback()
                            if not due:
                                break
                            # Claims (app.alerts.delivery) keep two threads or workers from sending one alert.
                            list(pool.map(deliver_one, due))
                        if time.monotonic() >= next_recovery:
                            recover_stuck()
                            next_recovery = time.monotonic() + MAINTENANCE_SECONDS
                    except Exception:  # a process boundary: a failed round must not end the courier
                        log.exception("Alert courier: delivery round failed; will try again")
                        db.session.rollback()
            finally:
                pool.shutdown(wait=True)
                db.session.remove()
                db.engine.dispose()

    def stop(self) -> None:
        self.stopping.set()
        # A delivery in flight takes at most its timeout (5 s) before the thread sees the stop.
        self.join(30)


class PollingWorker(HerokuWorker):
    # On SIGTERM, HerokuWorker lets the running job go on for this long before it raises
    # ShutDownImminentException in it, in case the job is about to finish. A polling job never
    # finishes by itself (alert deliveries run in this process, not the work horse), so the wait
    # only took 6 s of Heroku's 30 before the job wrote and acked what it held and let go.
    imminent_shutdown_delay = 0

    def __init__(self, *args, **kwargs):
        kwargs["maintenance_interval"] = MAINTENANCE_SECONDS
        super().__init__(*args, **kwargs)
        self._flask_app = None
        self._courier: AlertCourier | None = None

    @property
    def dequeue_timeout(self) -> int:
        # rq waits up to worker_ttl - 15 s (405 s) for a job; idle maintenance needs a shorter wait.
        return min(super().dequeue_timeout, MAINTENANCE_SECONDS)

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        self.reconcile_polling_tasks()
        self.recover_alerts()
        self.apply_retention()

    def execute_job(self, job, queue):
        if job.func_name != ALERT_JOB:
            return super().execute_job(job, queue)
        # In this process, as rq's SimpleWorker does: no work horse to fork and start for a short delivery.
        execution = self.prepare_execution(job)
        self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)
        return None

    def main_work_horse(self, job, queue):
        from app.tasks import forget_inherited_connections

        # In the forked horse: database connections of the parent's in-process jobs are not its own.
        forget_inherited_connections()
        super().main_work_horse(job, queue)

    def fork_work_horse(self, job, queue):
        super().fork_work_horse(job, queue)
        # Only in this (the parent) process, after the fork: the horse must not inherit a thread.
        if job.func_name == POLLING_JOB:
            self._courier = AlertCourier()
            self._courier.start()

    def monitor_work_horse(self, job, queue, execution):
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            if self._courier is not None:
                self._courier.stop()
                self._courier = None

    def recover_alerts(self) -> None:
        from app.alerts.delivery import recover_stuck

        self._in_app(recover_stuck, "Could not recover alert deliveries")

    def maintain_heartbeats(self, job, execution):
        super().maintain_heartbeats(job, execution)
        # Every job_monitoring_interval while a work horse runs; a slice is short (SLICE_SECONDS).
        self.apply_retention()

    def apply_retention(self) -> None:
        from app.retention import run_if_due

        record = self._in_app(run_if_due, "Retention pass failed")
        if record is not None:
            self.log.info("Retention pass %s: %d messages deleted so far%s", record.started_at, record.deleted,
                          "" if record.finished_at else " (goes on at the next maintenance step)")

    def reconcile_polling_tasks(self) -> None:
        from app.polling import reconcile

        # Read while the session is open: _in_app removes it, which detaches the Tasks.
        resumed = self._in_app(lambda: [(task.subscription, task.user_id, task.id) for task in reconcile()],
                               "Could not reconcile polling tasks")
        for subscription, user_id, task_id in resumed or ():
            self.log.info("Resumed polling %s for user %s as task %s", subscription, user_id, task_id)

    def _in_app(self, step, failure_words: str):
        """Run one maintenance step in the app's context; its result, or None when it failed (logged)."""
        from app import create_app
        from app.extensions import db

        if self._flask_app is None:
            self._flask_app = create_app()
        with self._flask_app.app_context():
            try:
                return step()
            except Exception:  # a process boundary: a failed pass must not stop the worker
                self.log.exception("%s; will try again", failure_words)
                return None
            finally:
                # Hold no database connection across the fork of the next job's work horse.
                db.session.remove()
                db.engine.dispose()
