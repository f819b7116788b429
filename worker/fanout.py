"""One decompose job as Celery work spread over every worker: a plan, a group of fit subtasks, and a chord that joins
them (what each step computes is in worker/decomposition.py).

- **Plan**: the job's own task (gendef.decompose, started by worker/tasks.py as every job is). It decodes the upload
  once, plans the units (shots, and segments of long shots), stores each unit's frames under the job's prefix
  (``jobs/{id}/parts/{k}.frames.npz``: 8-bit, deflated), records the plan and sends
  ``chord(group(fit(id, k) for each unit, longest first), join(id))`` to the generate queue. The job stays
  ``running``.
- **Fit** (gendef.decompose.fit): one unit, on whichever worker is free; writes ``jobs/{id}/parts/{k}.fit.npz``.
- **Join** (gendef.decompose.join): the chord's callback, sent by Celery once every fit has returned: it lays the
  tiles into the atlas, writes the job's artifacts and ends the job; then the work files are deleted.

The job stays one job to its user: its record alone has its status, and only its own status changes (start, end)
send webhooks or SSE events. Each subtask reports into the job's parts record (``gendef:parts:{id}``, core/jobs.py);
the job's progress is the frames-weighted progress of all units (never lower than before, as subtasks report
apart), its ``result.shots`` every unit with its step and PSNR so far.

Faults and cancel, as for every job:
- A subtask is acknowledged only when it returns (worker/celery_app.py), so one whose worker dies is redelivered:
  that unit is fitted again, alone. A unit already fitted is never fitted again (a redelivered message finds it
  done). A unit whose worker died ``GENDEF_MAX_ATTEMPTS`` times fails the job ``worker_lost``.
- A subtask that fails ends the job ``failed``, its message naming the shot and frames.
- A subtask looks at the job before it starts and at each report: a cancel asked ends the job ``canceled``; a job
  that has ended (or whose record expired) stops it. No subtask outlives its job by more than one report.
- A subtask never raises to Celery (but for Redis out of reach: then it goes back to its queue), so the chord
  always reaches its join, which also deletes the work files of a job that ended otherwise; a fit that raises
  outside its work all the same reaches the join as the chord's error callback (``send_chord``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from celery import Task, chord, group
from celery.exceptions import Reject, TimeLimitExceeded

from core.artifacts import NPZ_CONTENT_TYPE
from core.errors import DomainError
from core.jobs import PARTS_PREFIX, JobRecord, JobStore
from core.settings import Settings, video_limits
from core.storage import StorageUnavailable, artifact_key
from model.decomposition import units as planning
from model.decomposition.units import Unit
from worker import decomposition, runtime
from worker.celery_app import app
from worker.execution import REDIS_ERRORS, JobCanceled, JobRun, failure_of, timeout_failure
from worker.runtime import JobFailure, Runtime

log = logging.getLogger(__name__)

FIT_TASK, JOIN_TASK = "gendef.decompose.fit", "gendef.decompose.join"
# Shares of a decompose job's progress: planning (decoding, storing the frames), the fits, then the join.
PLAN_SHARE, FIT_SHARE = 0.05, 0.85


def frames_key(job_id: str, index: int) -> str:
    return artifact_key(job_id, f"parts/{index}.frames.npz")


def fit_key(job_id: str, index: int) -> str:
    return artifact_key(job_id, f"parts/{index}.fit.npz")


def _reason_of_old(unit: dict[str, Any]) -> str:
    """Why a unit of a plan stored before units said so starts where it does (a job planned by an older worker and
    fitted by this one): a shot's first segment starts the clip or follows a cut; a later one, most likely, a full
    segment (length; a panorama split reads the same)."""
    if unit["segment"] > 0:
        return planning.LENGTH
    return planning.START if unit["shot"] == 0 else planning.CUT


class Parts:
    """The parts record of one job (``gendef:parts:{id}``, a hash of JSON values): ``plan`` (its units and figures),
    ``dispatched`` once the chord is sent, ``state:{k}`` (status, step, psnr_db) and ``attempts:{k}`` of each unit,
    ``attempts:join``. Each write renews its expiry to the job record's TTL."""

    def __init__(self, jobs: JobStore, job_id: str):
        self.redis, self.ttl_s, self.key = jobs.redis, jobs.ttl_s, PARTS_PREFIX + job_id

    def _set(self, **values: Any) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(self.key, mapping={name: json.dumps(value) for name, value in values.items()})
        pipe.expire(self.key, self.ttl_s)
        pipe.execute()

    def record_plan(self, units: list[Unit], figures: dict[str, Any]) -> None:
        self._set(plan={"units": [u.__dict__ for u in units], "figures": figures})

    def plan(self) -> tuple[list[Unit], dict[str, Any]] | None:
        raw = self.redis.hget(self.key, "plan")
        if raw is None:
            return None
        plan = json.loads(raw)
        return [Unit(**{"reason": _reason_of_old(u), **u}) for u in plan["units"]], plan["figures"]

    def dispatched(self) -> bool:
        return bool(self.redis.hexists(self.key, "dispatched"))

    def mark_dispatched(self) -> None:
        self._set(dispatched=True)

    def attempt(self, name: str) -> int:
        """Count a start of unit `name` (or of the join); how many there have been."""
        pipe = self.redis.pipeline()
        pipe.hincrby(self.key, f"attempts:{name}", 1)
        pipe.expire(self.key, self.ttl_s)
        return int(pipe.execute()[0])

    def report(self, index: int, state: dict[str, Any]) -> None:
        self._set(**{f"state:{index}": state})

    def states(self, count: int) -> list[dict[str, Any]]:
        raw = self.redis.hmget(self.key, [f"state:{k}" for k in range(count)])
        return [json.loads(r) if r else {} for r in raw]

    def renew(self) -> None:
        """Expire with the job record, whose last change is now."""
        self.redis.expire(self.key, self.ttl_s)


def going_on(job: JobRecord | None) -> bool:
    return job is not None and job.status == "running" and not job.cancel_requested


def stop_if_ended(rt: Runtime, job_id: str) -> None:
    """JobCanceled when the job should not go on: a cancel was asked, it has ended, or its record is gone."""
    if not going_on(rt.jobs.get(job_id)):
        raise JobCanceled


def progress(units: list[Unit], states: list[dict[str, Any]], steps: int) -> float:
    """The job's progress while its units are fitted: the share of all units' frames x steps done."""
    total = sum(u.end - u.start for u in units)
    done = sum(
        (u.end - u.start) * min(s.get("step", 0), steps) / steps for u, s in zip(units, states, strict=True)
    )
    return PLAN_SHARE + FIT_SHARE * done / total


def figures_of(units: list[Unit], states: list[dict[str, Any]], figures: dict[str, Any]) -> dict[str, Any]:
    """The job's result while its units are fitted: its figures and `shots`, each unit with its step and PSNR."""
    shots = [
        {
            "shot": u.shot,
            "segment": u.segment,
            "reason": u.reason,
            "start": u.start,
            "frames": u.end - u.start,
            "step": s.get("step", 0),
            "psnr_db": s.get("psnr_db"),
        }
        for u, s in zip(units, states, strict=True)
    ]
    return figures | {"shots": shots}


# --- the plan: the job's own task ----------------------------------------------------------------------------


def plan(run: JobRun) -> None:
    """The decompose job's work (worker/tasks.py): plan, store the frames, send the chord; the job goes on."""
    rt, job = run.rt, run.job
    parts = Parts(rt.jobs, job.id)
    if parts.dispatched():  # a plan redelivered after its chord was sent: the subtasks carry the job on
        return None
    run.report("planning", 0.0)
    upload = run.input_blob("video")
    try:
        frames = decomposition.read_clip(
            upload, int(job.params["num_frames"]), int(job.params["resolution"]), video_limits(rt.settings)
        )  # (T, 3, H, W)
    except DomainError as e:
        raise JobFailure("invalid_input", f"the uploaded video is refused: {e}") from e
    units = planning.plan(frames, rt.settings.decompose_segment_frames)
    T, _, H, W = frames.shape
    figures = {"frames": T, "width": W, "height": H, "steps": int(job.params["steps"])}
    figures["shot_count"] = units[-1].shot + 1
    stored = 0
    try:
        for index, unit in enumerate(units):
            run.report("planning", PLAN_SHARE * index / len(units), figures)
            data = decomposition.encode_frames(frames[unit.start : unit.end])
            rt.blobs.put(frames_key(job.id, index), data, NPZ_CONTENT_TYPE)
            stored += 1
        parts.record_plan(units, figures)
        run.report("fitting", PLAN_SHARE, figures_of(units, [{}] * len(units), figures))
        # Longest first: the workers that take the last, short units finish about together.
        send_chord(
            job.id, sorted(range(len(units)), key=lambda k: units[k].start - units[k].end), rt.settings
        )
    except BaseException:
        delete_work(rt, job.id, stored)
        raise
    parts.mark_dispatched()
    log.info("job %s: %d units sent to the workers", job.id, len(units))
    return None


def send_chord(job_id: str, order: list[int], settings: Settings) -> None:
    """Send the fits of units `order` as a group and the join as its chord's callback. The join is also the
    callback's error callback: a fit that raises to Celery outside its work (its soft time limit running out while
    Celery stores its result) makes the chord skip the callback, and the job would stay running; the join then
    runs anyway, and joins the units or fails the job naming those not fitted."""
    queue = settings.generate_queue
    fits = group(fit.si(job_id, k).set(queue=queue, task_id=f"{job_id}-fit-{k}") for k in order)
    joined = join.si(job_id).set(queue=queue, task_id=f"{job_id}-join")
    chord(fits, joined.on_error(join.si(job_id).set(queue=queue))).apply_async()


# --- the subtasks ----------------------------------------------------------------------------------------------


class PartTask(Task):
    def on_failure(self, exc: Exception, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """A pool process killed at the hard time limit cannot record the job's end: Celery calls this in the
        worker's main process then."""
        if isinstance(exc, TimeLimitExceeded):
            rt = runtime.get()
            failure = timeout_failure(rt.settings)
            rt.jobs.mark_failed(args[0], failure.code, f"{part_name(rt, *args)}: {failure.message}")


def part_name(rt: Runtime, job_id: str, index: int | None = None) -> str:
    """What a message names: a unit (its shot and frames) or, without index, the join."""
    if index is None:
        return "joining the fitted parts"
    planned = Parts(rt.jobs, job_id).plan()
    return planned[0][index].describe() if planned else f"part {index}"


def in_subtask(job_id: str, index: int | None, work: Callable[[Runtime, Parts], None]) -> None:
    """Run a subtask's work for its job: its end recorded as the job's (canceled, or failed naming the part); a
    Redis outage sends it back to its queue."""
    rt = runtime.get()
    parts = Parts(rt.jobs, job_id)
    try:
        work(rt, parts)
    except JobCanceled:
        job = rt.jobs.get(job_id)
        if job is not None and job.cancel_requested and rt.jobs.mark_canceled(job_id):
            log.info("job %s canceled", job_id)
    except REDIS_ERRORS as e:
        log.warning(
            "job %s: the job store (Redis) is unreachable (%s); the subtask goes back to the queue", job_id, e
        )
        raise Reject(str(e), requeue=True) from e
    except Exception as e:
        failure = failure_of(rt.settings, e)
        log.warning("job %s failed in %s: %s", job_id, part_name(rt, job_id, index), failure)
        rt.jobs.mark_failed(job_id, failure.code, f"{part_name(rt, job_id, index)}: {failure.message}")
    parts.renew()


@app.task(name=FIT_TASK, base=PartTask, bind=True, ignore_result=False)  # a chord counts its header's results
def fit(self: Task, job_id: str, index: int) -> None:
    in_subtask(job_id, index, lambda rt, parts: fit_unit(rt, parts, job_id, index, self.request.hostname))


def count_attempt(rt: Runtime, parts: Parts, name: str) -> None:
    """Count a start of unit `name` (or of the join): worker_lost when its worker died in each of the attempts
    allowed (a start that ends, however it ends, is never started again)."""
    if parts.attempt(name) > rt.settings.max_attempts:
        raise JobFailure(
            "worker_lost",
            f"the worker running it stopped without finishing {rt.settings.max_attempts} times (killed, out of "
            "memory or crashed), so it is not tried again; ask for fewer frames, or report the job id",
        )


def fit_unit(rt: Runtime, parts: Parts, job_id: str, index: int, worker: str) -> None:
    """Fit unit `index` of the job (on the worker named `worker`) and store the fit."""
    stop_if_ended(rt, job_id)
    planned = parts.plan()
    if planned is None:
        raise JobCanceled  # the job's records expired
    units, figures = planned
    if parts.states(len(units))[index].get("status") == "done":
        return  # fitted already: a message delivered twice
    count_attempt(rt, parts, str(index))
    steps = figures["steps"]

    def report(step: int, db: float, status: str = "running") -> None:
        stop_if_ended(rt, job_id)
        parts.report(index, {"status": status, "step": step, "psnr_db": round(db, 2), "worker": worker})
        states = parts.states(len(units))
        result = figures_of(units, states, figures)
        rt.jobs.set_progress(job_id, progress(units, states, steps), "fitting", result=result, rising=True)

    frames = decomposition.decode_frames(rt.blobs.get(frames_key(job_id, index)))  # (T, 3, H, W)
    fitted = decomposition.fit(frames, steps, report)
    rt.blobs.put(fit_key(job_id, index), decomposition.encode_fitted(fitted), NPZ_CONTENT_TYPE)
    report(steps, planning.psnr_db(fitted.errors), "done")
    log.info("job %s: unit %d, %s, fitted", job_id, index, units[index].describe())


@app.task(name=JOIN_TASK, base=PartTask)
def join(job_id: str) -> None:
    """The chord's callback: join the units, or record the job's end; either way, delete the work files (the job
    has ended: every path of join_units ends it, and a Redis outage sends the join back to its queue first)."""
    in_subtask(job_id, None, lambda rt, parts: join_units(rt, parts, job_id))
    in_subtask(job_id, None, lambda rt, parts: delete_work(rt, job_id, len((parts.plan() or ([], {}))[0])))


def join_units(rt: Runtime, parts: Parts, job_id: str) -> None:
    job = rt.jobs.get(job_id)
    planned = parts.plan()
    if not going_on(job) or planned is None:
        raise JobCanceled
    units, figures = planned
    count_attempt(rt, parts, "join")
    missing = [
        u.describe()
        for u, s in zip(units, parts.states(len(units)), strict=True)
        if s.get("status") != "done"
    ]
    if missing:
        raise JobFailure("internal_error", f"not fitted: {', '.join(missing)}; submit the job again")
    run = JobRun(rt, job, ())
    run.report("encoding", PLAN_SHARE + FIT_SHARE)
    fitted = [decomposition.decode_fitted(rt.blobs.get(fit_key(job_id, k))) for k in range(len(units))]
    atlas = planning.assemble(units, fitted)
    figures = figures | {
        "step": figures["steps"],
        "psnr_db": round(atlas.psnr_db, 2),
        "shots": atlas.shots,
        "canonical_width": atlas.canonical.shape[2],
        "canonical_height": atlas.canonical.shape[1],
    }
    files = decomposition.artifacts(job, atlas)
    run.report("uploading", (1 + PLAN_SHARE + FIT_SHARE) / 2, figures)
    rt.jobs.mark_succeeded(job_id, run.upload(files))
    log.info("job %s succeeded (%d units joined)", job_id, len(units))


def delete_work(rt: Runtime, job_id: str, count: int) -> None:
    """Delete the work files of a job's first `count` units (frames and fits); a store out of reach leaves them
    (to the bucket's lifecycle rule)."""
    try:
        for index in range(count):
            rt.blobs.delete(frames_key(job_id, index))
            rt.blobs.delete(fit_key(job_id, index))
    except StorageUnavailable as e:
        log.warning("job %s: its work files could not be deleted (%s)", job_id, e)
