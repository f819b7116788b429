"""Dynamic batching: a worker that starts a generate or resample job also takes the others already queued.

How a batch forms. The API records every queued job id in its Celery queue's order (``JobStore`` keeps a sorted
set per queue, core/jobs.py). The task that starts job L (the leader) reads that set in queue order,
waiting up to ``GENDEF_BATCH_WAIT_MS`` for it to fill, and claims up to ``GENDEF_BATCH_MAX - 1`` generate/resample
jobs of L's model and version from it (other models' jobs are left to their own tasks): for each, it first writes
a claim (``JobStore.claim``: this job is in L's batch, and L's batch holds it), then moves the job from queued to
running only if it is still queued (``JobStore.start_queued``, atomic), so a job canceled or taken by another
worker meanwhile is left alone. The claimed jobs' own Celery messages stay in the queue; when one is delivered,
its task acknowledges it at once and does nothing (its job is in a batch, or has ended).

Nothing lost: a batch's claims live until all its jobs have ended. If the worker dies mid-batch, Celery redelivers
the leader's message (acks late); its task finds the claims of the earlier attempt and runs those jobs again (each
counting an attempt, so GENDEF_MAX_ATTEMPTS still ends a job that kills its worker). A claimed job may, in a race
of microseconds with its own message, run twice; both runs write artifacts of the same seeds.

How a batch runs (``GENDEF_BATCH_MODE``). Every job of a batch runs as it would alone (its stages, progress,
cancel checks and errors are its own: a failure fails that job only); the modes differ in how the generator runs:
- ``stack``: each job runs in a thread of its own; their sampling requests meet in a ``Stack``, which, once every
  job still running has asked, samples them in one forward pass (and one render) per frame count
  (``GenDeF.sample(..., stack=True)``) and hands each job its own video; then the jobs encode and upload side by
  side. A stacked video equals the same job alone within ``model.gendef.STACK_TOLERANCE`` (batched kernels may
  sum in another order); a job alone is bit-identical run to run. If a stacked pass fails, its jobs are sampled
  one by one, so only a job that fails alone fails.
- ``pipeline``: two threads run the jobs in queue order, the sampling serialized (``SAMPLING_LOCK``), so one job
  samples while the one before it encodes and uploads; every video bit-identical to the job alone.
- ``off``: no batching (as ``GENDEF_BATCH_MAX=1``): a job per task.
- ``auto``: ``AUTO_MODE`` of the device type, chosen by measurement: stack on CUDA, off on the CPU.

A batch shares its task's time limit (GENDEF_JOB_TIME_LIMIT_S): keep GENDEF_BATCH_MAX x the time of a long job
below it. At the limit, the batch's jobs that have not ended fail with ``timeout``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from core.jobs import FINAL, JobRecord
from model.checkpoint import resolve_device
from worker.execution import Draw, Sampled, Sampler, sample_videos
from worker.runtime import Runtime

log = logging.getLogger(__name__)

KINDS = ("generate", "resample")  # the jobs that sample the generator: the ones worth batching
POLL_S = 0.005

# run_one(rt, job_id, kind, claimed, sampler): worker.tasks.run_job; claimed is the record JobStore.claim returned
RunOne = Callable[[Runtime, str, str, JobRecord | None, Sampler | None], str | None]
# GENDEF_BATCH_MODE=auto per device type. CUDA: one video per forward pass leaves a GPU nearly idle (benchmarks/
# gpu_check.sh measures B = 1, 8, 32). CPU: one video's 16 frames already fill a core: stacked 8 ran at 0.66-0.79x
# the videos/s of 8 alone (benchmarks/model_speed.py, shipped model), and off, pipeline and stack served bursts of 8
# jobs at 1.00, 0.97-1.02 and 0.93-1.02x in two runs (benchmarks/batching.py, paired rounds, a round's ratio +-40 %
# on a loaded 2-core machine); off leaves queued jobs to whichever worker is free.
AUTO_MODE = {"cuda": "stack", "cpu": "off"}


def mode(setting: str, batch_max: int, device_type: str) -> str:
    """The batch mode a worker runs: stack, pipeline or off."""
    if batch_max == 1:
        return "off"
    return AUTO_MODE.get(device_type, "off") if setting == "auto" else setting


class Stack:
    """The sampling of a stacked batch, whose jobs run in threads of their own: a job's request waits until every
    job of the batch still running has asked (or ended without asking), then one forward pass per model and frame
    count serves every request (run in the thread that asked last)."""

    def __init__(self, job_ids: list[str]):
        self._changed = threading.Condition()
        self._may_ask = set(job_ids)
        self._asked: dict[str, Draw] = {}
        self._results: dict[str, Sampled | Exception] = {}

    def sampler(self, job_id: str) -> Sampler:
        return lambda draw: self._sample(job_id, draw)

    def _sample(self, job_id: str, draw: Draw) -> Sampled:
        with self._changed:
            self._asked[job_id] = draw
            self._may_ask.discard(job_id)
            self._serve()
            self._changed.wait_for(lambda: job_id in self._results)
            result = self._results.pop(job_id)
        if isinstance(result, Exception):
            raise result
        return result

    def leave(self, job_id: str) -> None:
        """The job has ended: the others no longer wait for it."""
        with self._changed:
            self._may_ask.discard(job_id)
            self._serve()

    def _serve(self) -> None:
        if self._may_ask or not self._asked:
            return
        asked, self._asked = self._asked, {}
        self._results |= sample_stacked(asked)
        self._changed.notify_all()


def sample_stacked(asked: dict[str, Draw]) -> dict[str, Sampled | Exception]:
    """Each job's video, one forward pass per model and frame count; a group whose pass fails is sampled job by job
    so that the failure is only the failing job's (its exception as its result)."""
    groups: dict[tuple[int, int], list[str]] = {}
    for job_id, draw in asked.items():
        groups.setdefault((id(draw.model), draw.num_frames), []).append(job_id)
    results: dict[str, Sampled | Exception] = {}
    for ids in groups.values():
        try:
            results |= zip(ids, sample_videos([asked[i] for i in ids], stack=True), strict=True)
        except Exception as e:  # noqa: BLE001 - handed to the jobs, which fail with it
            if len(ids) == 1:
                results[ids[0]] = e
                continue
            log.warning("a stacked pass of %d jobs failed: sampling them one by one", len(ids), exc_info=True)
            for job_id in ids:
                try:
                    results[job_id] = sample_videos([asked[job_id]])[0]
                except Exception as e:  # noqa: BLE001
                    results[job_id] = e
    return results


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
    if job is None or (job.status in FINAL and not again):
        log.info("job %s has ended (or expired): nothing to do for its message", job_id)
        return
    how = mode(rt.settings.batch_mode, rt.settings.batch_max, resolve_device(rt.settings.device).type)
    room = rt.settings.batch_max - 1 - len(again) if how != "off" else 0
    claimed = _fill(rt, job, room) if room > 0 else []
    batch: list[tuple[str, str, JobRecord | None]] = [(job_id, kind, None)]
    batch += [(j.id, j.kind, None) for j in again] + [(j.id, j.kind, j) for j in claimed]
    if len(batch) == 1:
        run_one(rt, job_id, kind, None, None)
        return
    log.info(
        "job %s: %s batch of %d jobs (%d claimed, %d again)",
        job_id,
        how,
        len(batch),
        len(claimed),
        len(again),
    )
    stack = Stack([i for i, _, _ in batch]) if how == "stack" else None

    def member(i: str, k: str, claim: JobRecord | None) -> str | None:
        if stack is None:
            return run_one(rt, i, k, claim, None)
        try:
            return run_one(rt, i, k, claim, stack.sampler(i))
        finally:
            stack.leave(i)

    pool = ThreadPoolExecutor(max_workers=len(batch) if stack else 2, thread_name_prefix="batch")
    try:
        futures = [pool.submit(member, i, k, claim) for i, k, claim in batch]
        for future in futures:
            future.result()  # re-raises what a job could not record (the job store unreachable)
    except BaseException:  # Redis down, or the time limit: jobs not started stay claimed for the next attempt
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    rt.jobs.release_batch(job_id, [i for i, _, _ in batch[1:]])
