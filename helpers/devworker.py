"""The worker class of the local stack (`make run`): the app's PollingWorker, stopped quickly and quietly.

In production a SIGTERM gives the running job rq's usual 6 s before ShutDownImminentException.
Locally SIGTERM means Ctrl-C, so the job is told at once; it still writes and acks what it holds,
and rq runs it again on the next `make run`. That expected exception is logged in one line
instead of a traceback; every other job error keeps rq's full report.
"""

from __future__ import annotations

from rq.exceptions import ShutDownImminentException
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers

from app.worker import PollingWorker


class DevWorker(PollingWorker):
    imminent_shutdown_delay = 0

    def handle_warm_shutdown_request(self) -> None:
        if self.horse_pid != 0:  # an idle worker just stops, without rq's "no horse found" warning
            super().handle_warm_shutdown_request()

    def handle_exception(self, job: Job, *exc_info) -> None:
        if exc_info and isinstance(exc_info[1], ShutDownImminentException):
            self.log.warning("Job %s stopped for the shutdown; polling resumes on the next `make run`", job.id)
            call_exception_handlers(self._exc_handlers, job, *exc_info)
            return
        super().handle_exception(job, *exc_info)
