"""RQ jobs. Thin: each makes the app and hands off to the module that does the work."""

from rq import get_current_job

from app import create_app
from app.pubsub import run_polling_task


def polling_subscription(user_id: int, subscription: str) -> str:
    """Store every message of `subscription` for the user until the Task (id = this job's id) is stopped."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("polling_subscription runs as an RQ job; its Task id is the job id")
    app = create_app()
    with app.app_context():
        return run_polling_task(job.id)
