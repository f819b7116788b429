"""Dynamic batching: a worker that starts a generate or resample job also takes the others already queued.

How a batch forms. The API records every queued job id in its Celery queue's order (``JobStore`` keeps a sorted
set per queue, core/jobs.py). The task that starts job L (the leader) reads that set in queue order,
waiting up to ``GENDEF_BATCH_WAIT_MS`` for it to fill, and claims up to ``GENDEF_BATCH_MAX - 1`` generate/resample
jobs of L's model and version from it (other models' jobs are left to their own tasks): for each, it first writes
a claim (``JobStore.claim``: this job is in L's batch, and L's batch holds it), then moves the job from queued to
running only if it is still queued (``JobStore.start_queued``, atomic), so a job canceled or taken by another
worker meanwhile is left alone. The claimed jobs' own Celery messages stay in the
queue; when one is delivered while its job is claimed and not finished, its task acknowledges it and does nothing;
delivered later, it finds the job finished and does nothing as before.

Nothing lost: a batch's claims live until all its jobs have ended. If the worker dies mid-batch, Celery redelivers
the leader's message (acks late); its task finds the claims of the earlier attempt and runs those jobs again (each
counting an attempt, so GENDEF_MAX_ATTEMPTS still ends a job that kills its worker). A claimed job may, in a race
of microseconds with its own message, run twice; both runs write the same artifacts (same seeds, same bytes).

How a batch runs. Per-job results must equal one-by-one sampling bit for bit, and ``GenDeF.sample`` computes each
video on its own for that reason (batched convolutions may sum in another order: measured on this CPU, one pass
over 8 videos was ~1.7x faster but differed by ~5e-6). So a batch does not stack videos into one forward pass:
it pipelines the jobs. Two threads run the jobs of the batch in queue order, each job exactly as alone (its
stages, progress, cancel checks and errors are its own: a failure fails that job only); the model's sampling is
serialized by ``worker.tasks.SAMPLING_LOCK``, so while one job samples, the other thread encodes and uploads the
job before it. What a batch saves: the encode/upload time of all but the last job, and a queue round trip per job.

A batch shares its task's time limit (GENDEF_JOB_TIME_LIMIT_S): keep GENDEF_BATCH_MAX x the time of a long job
below it. At the limit, the batch's jobs that have not ended fail with ``timeout``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from core.jobs import FINAL, JobRecord
from worker.runtime import Runtime

log = logging.getLogger(__name__)

KINDS = ("generate", "resample")  # the jobs that sample the generator: the ones worth batching
POLL_S = 0.005

# run_one(rt, job_id, kind, claimed): worker.tasks.run_job; claimed is the record JobStore.claim returned
RunOne = Callable[[Runtime, str, str, JobRecord | None], str | None]


def _same_model(a: JobRecord, b: JobRecord) -> bool:
    return all(a.params.get(k) == b.params.get(k) for k in ("model", "version"))


def _fill(rt: Runtime, leader: JobRecord, room: int) -> list[JobRecord]:
    """Claim up to room queued generate/resample jobs of the leader's model and version, in the order of its queue,
    waiting up to batch_wait_ms for them."""
    deadline = time.monotonic() + rt.settings.batch_wait_ms / 1000
    claimed: list[JobRecord] = []
    seen: set[str] = {leader.id}
    while len(claimed) < room:
        for job_id in rt.jobs.queued_ids(leader.queue or rt.settings.generate_queue, 4 * room + 1):
            if len(claimed) == room:
                break
            if job_id in seen:
                continue
            seen.add(job_id)
            record = rt.jobs.get(job_id)
            if (
                record is not None
                and record.kind in KINDS
                and record.status == "queued"
                and _same_model(record, leader)
            ):
                job = rt.jobs.claim(leader.id, job_id)
                if job is not None:
                    claimed.append(job)
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    return claimed


def run(rt: Runtime, job_id: str, kind: str, run_one: RunOne) -> None:
    """The task of a generate/resample job: run it, with the queued jobs it can batch, each to a final status."""
    leader = rt.jobs.claimed_by(job_id)
    job = rt.jobs.get(job_id)
    if leader is not None and leader != job_id and job is not None and job.status not in FINAL:
        log.info("job %s runs in the batch of job %s: nothing to do for its own message", job_id, leader)
        return
    # jobs an earlier attempt of this batch claimed and did not finish (its worker died): run them again
    again = [
        j for j in map(rt.jobs.get, rt.jobs.batch_members(job_id)) if j is not None and j.status not in FINAL
    ]
    room = rt.settings.batch_max - 1 - len(again)
    claimed = _fill(rt, job, room) if room > 0 and job is not None else []
    batch: list[tuple[str, str, JobRecord | None]] = [(job_id, kind, None)]
    batch += [(j.id, j.kind, None) for j in again] + [(j.id, j.kind, j) for j in claimed]
    if len(batch) > 1:
        log.info(
            "job %s: batch of %d jobs (%d claimed, %d again)", job_id, len(batch), len(claimed), len(again)
        )
    if len(batch) == 1:
        run_one(rt, job_id, kind, None)
        return
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="batch")
    try:
        futures = [pool.submit(run_one, rt, i, k, claim) for i, k, claim in batch]
        for future in futures:
            future.result()  # re-raises what a job could not record (the job store unreachable)
    except BaseException:  # Redis down, or the time limit: jobs not started stay claimed for the next attempt
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    rt.jobs.release_batch(job_id, [i for i, _, _ in batch[1:]])
