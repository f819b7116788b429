"""The Celery app of the workers: `celery -A worker.celery_app worker --concurrency 1` (one per GPU).

A worker consumes the generate, the edit and the webhook queue (and the queue of each model of GENDEF_MODEL_QUEUES)
unless `-Q` names some of them (edit never runs the generators, so CPU-only workers may take just
`-Q $GENDEF_EDIT_QUEUE`; `-Q gendef-generate-NAME` pins a worker to model NAME; some worker must take the webhook
queue). Models are loaded in each pool process after the fork (`worker_process_init`), never in the parent.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend
from celery.signals import worker_process_init, worker_ready
from kombu import Exchange, Queue

from core.queues import model_queue, queue_names
from core.settings import Settings, get_settings
from worker import runtime, sweeper

# Loading a checkpoint (and initialising CUDA) in a fresh pool process may take longer than Celery's default 4 s.
PROCESS_START_TIMEOUT_S = 300


class ChordResults(RedisBackend):
    """Celery's Redis result backend, less the RETRY state Celery writes when it cancels a running task.

    At a lost broker connection the worker cancels its running acks-late tasks (their messages stay unacknowledged
    and come back after the visibility timeout) and first writes each one's RETRY state to the result backend,
    which is the same Redis, down: the write raises, the cancel is never recorded, and Celery takes the killed task
    for a revoked one and acknowledges its message once Redis is back. The job would stay ``running`` with no
    message left to run it (tests/reliability/test_redis_restart.py). No task here retries through Celery and
    nothing reads that state, so it is not written."""

    def mark_as_retry(self, task_id: str, exc: Exception, *args: Any, **kwargs: Any) -> None:
        return None


def hard_limit_grace_s(job_time_limit_s: int) -> int:
    """Seconds between the soft time limit (the task records `timeout` and stops at once, unless it is inside a
    call that swallows the exception or does not return to Python) and the kill of its pool process: 5 % of the
    limit, 5 to 60 s (30 s for the default 600 s limit)."""
    return min(60, max(5, job_time_limit_s // 20))


def create_app(settings: Settings) -> Celery:
    hard_limit_s = settings.job_time_limit_s + hard_limit_grace_s(settings.job_time_limit_s)
    app = Celery(
        "gendef",
        broker=settings.redis_url,
        # Only the chord of a decompose job's fit subtasks (worker/fanout.py) uses results: Celery counts there
        # which subtasks have ended. Every other task's result is ignored: the job record in Redis is the truth.
        backend=f"worker.celery_app:ChordResults+{settings.redis_url}",
        include=["worker.tasks", "worker.fanout", "worker.webhooks"],
    )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_expires=settings.job_ttl_s,  # a subtask's result goes with its job's record
        # Long GPU jobs: one job in hand at a time, acknowledged only when done, redelivered if the process dies.
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_soft_time_limit=settings.job_time_limit_s,
        task_time_limit=hard_limit_s,
        # An unacknowledged job goes back to the queue after this long: it must outlast the longest job, or a
        # second worker would start a job that is still running.
        # Unacknowledged jobs of a dead worker are looked for every 10 s (kombu's default: every 100 s).
        broker_transport_options={"visibility_timeout": 2 * hard_limit_s, "unacked_restore_throttle": 1},
        broker_connection_retry_on_startup=True,
        # Each queue bound under its own name, as the API's send_task(queue=name) addresses it. The webhook queue
        # holds deliveries (worker/webhooks.py), which never run inside a job's task.
        task_queues=[
            Queue(name, Exchange(name), routing_key=name)
            for name in (*queue_names(settings), settings.webhook_queue)
        ],
        task_default_queue=settings.generate_queue,
        worker_proc_alive_timeout=PROCESS_START_TIMEOUT_S,
    )
    return app


app = create_app(get_settings())


@worker_process_init.connect
def _load_models_in_pool_process(**_: Any) -> None:
    """Runs in each pool process after the fork: load the models of the queues it consumes there, before the first
    job: the default model for the generate queue, each model of its own queue. A worker that consumes only the
    edit queue loads none; any other model is loaded when a job needs it."""
    settings, consumed = get_settings(), app.amqp.queues.consume_from
    names: list[str | None] = [None] if settings.generate_queue in consumed else []
    names += [m for m in sorted(settings.model_queue_names) if model_queue(settings, m) in consumed]
    for name in names[: settings.max_loaded_models]:
        runtime.get().preload_model(name)


@worker_ready.connect
def _sweep_unsent_jobs(**_: Any) -> None:
    """In the worker's main process: fail jobs whose task the API never sent (worker/sweeper.py)."""
    sweeper.start(get_settings())
