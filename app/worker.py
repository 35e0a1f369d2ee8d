"""The RQ worker class: rq's HerokuWorker, which also resumes polling tasks whose job is gone.

Procfile: `rq worker ... -w app.worker.PollingWorker ...`. HerokuWorker already handles
Heroku's SIGTERM well (the running job is told to stop, not killed mid-write). This class
adds one maintenance step, run at start and every MAINTENANCE_SECONDS while idle: polling
Tasks left running by a worker that died are resumed (see app.polling.reconcile), and the
retention pass runs when it is due (app.retention). A worker busy polling runs the retention
pass too, from its heartbeat loop, so that a deployment whose only worker polls still has one.
"""

from __future__ import annotations

from rq.worker import HerokuWorker

MAINTENANCE_SECONDS = 15


class PollingWorker(HerokuWorker):
    def __init__(self, *args, **kwargs):
        kwargs["maintenance_interval"] = MAINTENANCE_SECONDS
        super().__init__(*args, **kwargs)
        self._flask_app = None

    @property
    def dequeue_timeout(self) -> int:
        # rq waits up to worker_ttl - 15 s (405 s) for a job; idle maintenance needs a shorter wait.
        return min(super().dequeue_timeout, MAINTENANCE_SECONDS)

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        self.reconcile_polling_tasks()
        self.apply_retention()

    def maintain_heartbeats(self, job, execution):
        super().maintain_heartbeats(job, execution)
        # Every job_monitoring_interval while a work horse runs; a slice is short (SLICE_SECONDS).
        self.apply_retention()

    def apply_retention(self) -> None:
        from app import create_app
        from app.extensions import db
        from app.retention import run_if_due

        if self._flask_app is None:
            self._flask_app = create_app()
        with self._flask_app.app_context():
            try:
                record = run_if_due()
            except Exception:  # a process boundary: a failed pass must not stop the worker
                self.log.exception("Retention pass failed; will try again")
                return
            finally:
                db.session.remove()
                db.engine.dispose()
        if record is not None:
            self.log.info("Retention pass %s: %d messages deleted so far%s", record.started_at, record.deleted,
                          "" if record.finished_at else " (goes on at the next maintenance step)")

    def reconcile_polling_tasks(self) -> None:
        from app import create_app
        from app.extensions import db
        from app.polling import reconcile

        if self._flask_app is None:
            self._flask_app = create_app()
        with self._flask_app.app_context():
            try:
                # Read while the session is open: it is removed below, which detaches the Tasks.
                resumed = [(task.subscription, task.user_id, task.id) for task in reconcile()]
            except Exception:  # a process boundary: a failed pass must not stop the worker
                self.log.exception("Could not reconcile polling tasks; will try again")
                return
            finally:
                # Hold no database connection across the fork of the next job's work horse.
                db.session.remove()
                db.engine.dispose()
        for subscription, user_id, task_id in resumed:
            self.log.info("Resumed polling %s for user %s as task %s", subscription, user_id, task_id)
