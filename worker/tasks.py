"""The job kinds and their Celery tasks. Each task takes only a job id and reads everything else from the job
record and the stores.

``JOB_KINDS`` is the worker's table of kinds (core.queues.JOB_TASKS names the same kinds, their task names and
queues): each kind's work function and stages. A job runs as stages (progress written to the record at each); a
cancel is honoured between stages. Artifacts are written under keys derived from the job id, so a redelivered task
overwrites them; they are presented only by `mark_succeeded`, so a canceled or failed job never shows half a
result. Every exception ends the job as `failed` with a stable code; the worker process goes on with the next job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from core.jobs import Artifact, JobRecord
from core.queues import JOB_TASKS
from worker import batching, fanout, runtime
from worker.celery_app import app
from worker.execution import REDIS_ERRORS, JobCanceled, JobRun, Sampler, failure_of, timeout_failure
from worker.generation import do_edit, do_generate, do_resample
from worker.rendering import do_render
from worker.runtime import Runtime
from worker.segmentation import do_segment
from worker.tracking import do_track

log = logging.getLogger(__name__)

# kind -> (work function, its stages in order); decompose reports progress itself (JobRun.report) and hands the job
# on to its subtasks (worker/fanout.py), which end it: its work function returns None.
JOB_KINDS: dict[str, tuple[Callable[[JobRun], dict[str, Artifact] | None], tuple[str, ...]]] = {
    "generate": (do_generate, ("sampling", "encoding", "uploading")),
    "resample": (do_resample, ("sampling", "warping", "encoding", "uploading")),
    "edit": (do_edit, ("warping", "encoding", "uploading")),
    "track": (do_track, ("tracking", "encoding", "uploading")),
    "segment": (do_segment, ("warping", "encoding", "uploading")),
    "decompose": (fanout.plan, ()),
    "render": (do_render, ("sampling", "warping", "encoding", "uploading")),
}
assert JOB_KINDS.keys() == JOB_TASKS.keys()


def run_job(
    rt: Runtime, job_id: str, kind: str, claimed: JobRecord | None = None, sampler: Sampler | None = None
) -> str | None:
    """Run one job to a final status; returns that status (None when there was nothing to run). ``claimed``: the
    record of a job a batch has just started (JobStore.start_queued), run as it is; ``sampler``: its batch's
    (worker/batching.py), else the job samples alone."""
    lost = claimed or rt.jobs.get(job_id)
    if (
        claimed is None
        and lost is not None
        and lost.status == "running"
        and lost.attempts >= rt.settings.max_attempts
    ):
        # Every earlier attempt ended without recording an end: its worker process died (killed, out of memory).
        log.error("job %s: its worker died in each of %d attempts; not tried again", job_id, lost.attempts)
        rt.jobs.mark_failed(
            job_id,
            "worker_lost",
            (
                f"the worker running this job stopped without finishing it {lost.attempts} times (killed, out of "
                "memory or crashed), so it is not tried again; ask for fewer frames, or report the job id"
            ),
        )
        return "failed"
    job = claimed or rt.jobs.mark_running(job_id)
    if job is None:
        log.warning("job %s has no record (expired?): skipped", job_id)
        return None
    if job.status != "running":
        log.info("job %s is %s: skipped", job_id, job.status)
        return None
    if job.kind != kind:
        rt.jobs.mark_failed(job_id, "internal_error", f"a {job.kind} job was sent to the {kind} task")
        return "failed"
    work, stages = JOB_KINDS[kind]
    log.info("job %s (%s, attempt %d) started", job_id, kind, job.attempts)
    try:
        artifacts = work(JobRun(rt, job, stages, sampler))
    except JobCanceled:
        rt.jobs.mark_canceled(job_id)
        log.info("job %s canceled", job_id)
        return "canceled"
    except REDIS_ERRORS:
        raise
    except Exception as e:
        error = failure_of(rt.settings, e)
    else:
        if artifacts is None:  # handed on: its subtasks end it (worker/fanout.py)
            log.info("job %s handed to its subtasks", job_id)
            return "running"
        rt.jobs.mark_succeeded(job_id, artifacts)
        log.info("job %s succeeded", job_id)
        return "succeeded"
    log.warning("job %s failed: %s", job_id, error)
    rt.jobs.mark_failed(job_id, error.code, error.message)
    return "failed"


class JobTask(Task):
    def on_failure(self, exc: Exception, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """A pool process killed at the hard time limit (it ignored the soft one) cannot record its job's end:
        Celery calls this in the worker's main process then."""
        if isinstance(exc, TimeLimitExceeded):
            rt = runtime.get()
            failure = timeout_failure(rt.settings)
            for job_id in [args[0], *rt.jobs.batch_members(args[0])]:  # the job and those its batch claimed
                rt.jobs.mark_failed(job_id, failure.code, failure.message)


def run_task(job_id: str, kind: str) -> None:
    """run_job (through worker/batching.py for generate/resample); with Redis unreachable the task is rejected back
    to its queue: the job is never dropped."""
    rt = runtime.get()
    try:
        if kind in batching.KINDS:
            batching.run(rt, job_id, kind, run_job)
        else:
            run_job(rt, job_id, kind)
    except SoftTimeLimitExceeded:  # a batch's time was up (a job alone records its own timeout)
        failure = timeout_failure(rt.settings)
        for member in [job_id, *rt.jobs.batch_members(job_id)]:
            rt.jobs.mark_failed(member, failure.code, failure.message)
    except REDIS_ERRORS as e:
        log.warning(
            "job %s: the job store (Redis) is unreachable (%s); the task goes back to the queue", job_id, e
        )
        raise Reject(str(e), requeue=True) from e


def _register(kind: str) -> None:
    name = JOB_TASKS[kind][0]

    @app.task(name=name, base=JobTask)
    def task(job_id: str) -> None:
        run_task(job_id, kind)


for _kind in JOB_KINDS:
    _register(_kind)
