"""Job records and the whole Redis layout of the project (besides the Celery queues, named by the settings).

Keys (all under ``gendef:``):
- ``job:{id}``: hash, the job record, one JSON value per field; expires ``job_ttl_s`` after its last change.
- ``queued:{queue}``: sorted set, the queued job ids of a Celery queue scored by enqueue time (queue positions,
  dynamic batching).
- ``metrics:job_duration``: hash, the job duration histogram (monotonic counters for /metrics).
- ``active:{owner}``: set, the job ids of an API key that were queued or running when last seen (its limit).
- ``idempotency:{digest}``: string, the first answer to a POST with an Idempotency-Key (service/idempotency.py).
- ``claimed:{id}``: string, the leader job whose batch runs this job; ``batch:{leader}``: set, the job ids the
  leader's batch claimed (worker/batching.py).
- ``parts:{id}``: hash, the subtasks of a job fitted on many workers (worker/fanout.py): its plan, each part's
  state and attempts; expires with the job record (``job_ttl_s`` after its last change, renewed with the record's).
- ``unsent``: sorted set, the job ids recorded but not yet handed to their Celery queue, scored by creation time:
  written with the record, removed once the task is sent. The workers fail those left behind (the API died or
  Redis failed between the two steps) after GENDEF_SEND_TIMEOUT_S (``fail_unsent``), so no record stays queued
  without a message.

The job record: one Redis hash per job, the source of truth for a job's status.

Every field of the hash holds a JSON value. Status changes are optimistic transactions (WATCH/MULTI), so a cancel
from the API and an update from the worker never overwrite each other. A record expires ``ttl_s`` after its last
change. Finished jobs also feed a job-duration histogram kept in Redis (monotonic counters for /metrics).

Status moves ``queued → running → succeeded | failed | canceled`` (and ``queued → canceled``); the three last
ones are final: later updates of a finished job are ignored.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

import redis

from core.errors import TooManyJobs
from core.settings import Settings

KINDS = ("generate", "resample", "edit", "track", "segment", "decompose", "render")
STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
FINAL = frozenset({"succeeded", "failed", "canceled"})
STAGES = ("loading", "sampling", "warping", "tracking", "planning", "fitting", "encoding", "uploading")

KEY_PREFIX = "gendef:job:"  # + job id
QUEUED_PREFIX = "gendef:queued:"  # + Celery queue name
DURATION_KEY = "gendef:metrics:job_duration"
ACTIVE_PREFIX = "gendef:active:"  # + owner
IDEMPOTENCY_PREFIX = "gendef:idempotency:"  # + SHA-256 of caller and key
CLAIMED_PREFIX = "gendef:claimed:"  # + job id
BATCH_PREFIX = "gendef:batch:"  # + leader's job id
PARTS_PREFIX = "gendef:parts:"  # + job id
UNSENT_KEY = "gendef:unsent"
NOT_QUEUED = "The job could not be queued (the job queue was unreachable); submit it again."
RETRY_AFTER_S = 10  # a key at its limit: a tiny job takes seconds, a long one minutes: come back after this
# Upper bounds (seconds) of the job duration histogram's buckets; +Inf is implied.
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@dataclass(frozen=True)
class Artifact:
    key: str  # storage key, e.g. jobs/{id}/video.mp4
    content_type: str
    bytes: int


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str  # one of KINDS
    status: str  # one of STATUSES
    params: dict[str, Any]
    parent_id: str | None = None
    progress: float = 0.0  # 0..1
    stage: str | None = None  # one of STAGES while running
    inputs: dict[str, str] = field(default_factory=dict)  # name -> storage key
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # video, canonical, deformation
    error: dict[str, str] | None = None  # {"code", "message"}
    attempts: int = 0  # times a worker started it
    created_at: str = ""  # ISO 8601 UTC
    started_at: str | None = None
    finished_at: str | None = None
    cancel_requested: bool = False
    queue: str | None = None  # the Celery queue it was sent to (its queue position is counted there)
    stage_started_at: dict[str, str] = field(default_factory=dict)  # stage -> ISO time, this attempt's stages
    webhook: dict[str, Any] | None = None  # {"url", "events"}: see core/webhooks.py
    owner: str | None = (
        None  # SHA-256 of the API key that submitted it (core.jobs.OwnedJobStore); None without keys
    )
    result: dict[str, Any] | None = (
        None  # figures a job reports besides its artifacts (decompose: PSNR so far)
    )


def new_job_id() -> str:
    """An unguessable id: 122 random bits (uuid4), hex."""
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def connect_redis(settings: Settings) -> redis.Redis:
    """A client that fails fast when Redis is down instead of hanging the request."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode(changes: dict[str, Any]) -> dict[str, str]:
    return {name: json.dumps(value, default=asdict) for name, value in changes.items()}  # Artifact -> dict


def _decode(raw: dict) -> JobRecord:
    values = {_text(k): json.loads(v) for k, v in raw.items()}
    known = {f.name for f in fields(JobRecord)}
    values = {k: v for k, v in values.items() if k in known}
    values["artifacts"] = {k: Artifact(**a) for k, a in values.get("artifacts", {}).items()}
    return JobRecord(**values)


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _running(job: JobRecord) -> dict[str, Any]:
    """The changes that start an attempt at a job."""
    return {
        "status": "running",
        "attempts": job.attempts + 1,
        "started_at": utc_now(),
        "progress": 0.0,
        "stage": None,
        "stage_started_at": {},
    }


class JobStore:
    def __init__(
        self,
        redis_client: redis.Redis,
        ttl_s: int,
        on_change: Callable[[JobRecord, JobRecord], None] | None = None,
    ):
        """``on_change(before, after)`` is called after each committed status change (webhooks.Notifier)."""
        self.redis = redis_client
        self.ttl_s = ttl_s
        self.on_change = on_change

    def _enter_queue(self, pipe: redis.client.Pipeline, job: JobRecord, since: str) -> None:
        """Add a queued job to its queue's order; entries older than the record TTL (expired records) go."""
        key = QUEUED_PREFIX + job.queue
        now = _epoch(since)
        pipe.zadd(key, {job.id: now})
        pipe.zremrangebyscore(key, "-inf", now - self.ttl_s)
        pipe.expire(key, self.ttl_s)

    def queue_position(self, job: JobRecord) -> int | None:
        """Jobs of the same queue sent before this one and still queued (0 = next); None unless queued."""
        if job.status != "queued" or not job.queue:
            return None
        return self.redis.zrank(QUEUED_PREFIX + job.queue, job.id)

    @staticmethod
    def _key(job_id: str) -> str:
        return KEY_PREFIX + job_id

    def create(
        self,
        kind: str,
        params: dict[str, Any],
        parent_id: str | None = None,
        inputs: dict[str, str] | None = None,
        job_id: str | None = None,
        queue: str | None = None,
        webhook: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> JobRecord:
        """Record a new queued job. Pass ``job_id`` (from new_job_id) when inputs were stored under it first,
        ``queue`` (the Celery queue it will be sent to) for its queue_position: the job is then also marked unsent
        until ``sent(job_id)``, in the same transaction."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        job = JobRecord(
            id=job_id or new_job_id(),
            kind=kind,
            status="queued",
            params=params,
            parent_id=parent_id,
            inputs=inputs or {},
            created_at=utc_now(),
            queue=queue,
            webhook=webhook,
            owner=owner,
        )
        key = self._key(job.id)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=_encode(asdict(job)))
        pipe.expire(key, self.ttl_s)
        if queue:
            self._enter_queue(pipe, job, job.created_at)
            pipe.zadd(UNSENT_KEY, {job.id: _epoch(job.created_at)})
        pipe.execute()
        return job

    def sent(self, job_id: str) -> None:
        """The job's task is in its Celery queue: it no longer needs the sweep."""
        self.redis.zrem(UNSENT_KEY, job_id)

    def fail_unqueued(self, job_id: str) -> JobRecord | None:
        """A job whose task could not be sent: failed `queue_unavailable` if still queued (a job that some worker
        took meanwhile is left as it is)."""
        job = self._update(
            job_id,
            lambda job: (
                {
                    "status": "failed",
                    "finished_at": utc_now(),
                    "error": {"code": "queue_unavailable", "message": NOT_QUEUED},
                }
                if job.status == "queued"
                else None
            ),
        )
        self.sent(job_id)
        return job

    def fail_unsent(self, older_than_s: float) -> list[str]:
        """fail_unqueued for every job recorded more than ``older_than_s`` ago whose task was never sent; their ids."""
        cutoff = datetime.now(timezone.utc).timestamp() - older_than_s
        stale = self.redis.zrangebyscore(UNSENT_KEY, "-inf", cutoff)
        return [job_id for job_id in stale if (job := self.fail_unqueued(job_id)) and job.status == "failed"]

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(self._key(job_id))
        return _decode(raw) if raw else None

    def _update(self, job_id: str, change: Callable[[JobRecord], dict[str, Any] | None]) -> JobRecord | None:
        """Apply ``change(record) -> fields to set`` atomically; None (no record) or the record after it."""
        key = self._key(job_id)
        result: JobRecord | None = None
        before: JobRecord | None = None

        def transaction(pipe: redis.client.Pipeline) -> None:
            nonlocal result, before
            raw = pipe.hgetall(key)
            if not raw:
                result = None
                return
            job = before = _decode(raw)
            changes = change(job)
            if not changes:
                result = job
                return
            new = replace(job, **changes)
            pipe.multi()
            pipe.hset(key, mapping=_encode(changes))
            pipe.expire(key, self.ttl_s)
            if new.status in FINAL and job.status not in FINAL and new.started_at and new.finished_at:
                self._observe_duration(
                    pipe, new.kind, new.status, _seconds_between(new.started_at, new.finished_at)
                )
            if new.queue and job.status == "queued" and new.status != "queued":
                pipe.zrem(QUEUED_PREFIX + new.queue, job_id)
            elif new.queue and new.status == "queued" and job.status != "queued":
                self._enter_queue(pipe, new, utc_now())
            result = new

        self.redis.transaction(transaction, key)
        if self.on_change and before and result and before.status != result.status:
            self.on_change(before, result)
        return result

    # --- the worker's side -------------------------------------------------------------------------------------

    def mark_running(self, job_id: str) -> JobRecord | None:
        """Count an attempt and mark the job running. A finished (e.g. canceled) job is returned unchanged: the
        worker then skips it. None when the record does not exist (expired)."""
        return self._update(job_id, lambda job: None if job.status in FINAL else _running(job))

    def start_queued(self, job_id: str) -> JobRecord | None:
        """mark_running, but only for a job still queued (a worker's batch takes it out of its queue): the running
        record, or None when the job was not queued (already taken, canceled, expired)."""
        was_queued = False

        def change(job: JobRecord) -> dict[str, Any] | None:
            nonlocal was_queued
            was_queued = job.status == "queued"
            return _running(job) if was_queued else None

        job = self._update(job_id, change)
        return job if was_queued else None

    def set_progress(
        self,
        job_id: str,
        progress: float,
        stage: str,
        result: dict[str, Any] | None = None,
        rising: bool = False,
    ) -> None:
        """Progress of a running job; `result` (when given) replaces the job's reported figures. ``rising``: never
        lower the progress recorded (a job whose subtasks report apart, each from its own view of the others)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
        progress = min(max(float(progress), 0.0), 1.0)

        def change(job: JobRecord) -> dict[str, Any] | None:
            if job.status != "running":
                return None
            extra = {} if result is None else {"result": result}
            value = max(progress, job.progress) if rising else progress
            if stage == job.stage:
                return {"progress": value} | extra
            return {
                "progress": value,
                "stage": stage,
                "stage_started_at": job.stage_started_at | {stage: utc_now()},
            } | extra

        self._update(job_id, change)

    def cancel_requested(self, job_id: str) -> bool:
        """True when the job should stop: cancel asked, already canceled, or its record is gone."""
        job = self.get(job_id)
        return job is None or job.cancel_requested or job.status == "canceled"

    def _end(self, job_id: str, changes: dict[str, Any]) -> JobRecord | None:
        """Apply the changes that end a job (and stamp finished_at), unless it has ended already."""
        return self._update(
            job_id,
            lambda job: None if job.status in FINAL else changes | {"finished_at": utc_now(), "stage": None},
        )

    def mark_canceled(self, job_id: str) -> JobRecord | None:
        return self._end(job_id, {"status": "canceled"})

    def mark_succeeded(self, job_id: str, artifacts: dict[str, Artifact]) -> JobRecord | None:
        return self._end(
            job_id, {"status": "succeeded", "progress": 1.0, "artifacts": artifacts, "error": None}
        )

    def mark_failed(self, job_id: str, code: str, message: str) -> JobRecord | None:
        return self._end(job_id, {"status": "failed", "error": {"code": code, "message": message}})

    # --- dynamic batching (worker/batching.py) ---------------------------------------------------------------

    def queued_ids(self, queue: str, count: int) -> list[str]:
        """The first ``count`` job ids queued on a Celery queue, in queue order."""
        return self.redis.zrange(QUEUED_PREFIX + queue, 0, count - 1)

    def claimed_by(self, job_id: str) -> str | None:
        """The leader whose batch has claimed this job, if its claim is still live."""
        return self.redis.get(CLAIMED_PREFIX + job_id)

    def batch_members(self, leader_id: str) -> list[str]:
        """The jobs the leader's batch claimed (and has not released)."""
        return sorted(self.redis.smembers(BATCH_PREFIX + leader_id))

    def claim(self, leader_id: str, job_id: str) -> JobRecord | None:
        """Take a queued job into the leader's batch: the claim is written first, then the job moves from queued
        to running only if still queued (start_queued). Its running record, or None (claim withdrawn) when it was
        no longer queued (canceled, expired or taken by another worker meanwhile)."""
        pipe = self.redis.pipeline()
        pipe.set(CLAIMED_PREFIX + job_id, leader_id, ex=self.ttl_s)
        pipe.sadd(BATCH_PREFIX + leader_id, job_id)
        pipe.expire(BATCH_PREFIX + leader_id, self.ttl_s)
        pipe.execute()
        job = self.start_queued(job_id)
        if job is None:
            pipe = self.redis.pipeline()
            pipe.delete(CLAIMED_PREFIX + job_id)
            pipe.srem(BATCH_PREFIX + leader_id, job_id)
            pipe.execute()
        return job

    def release_batch(self, leader_id: str, job_ids: list[str]) -> None:
        """Drop the claims of a batch whose jobs have all ended."""
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.delete(CLAIMED_PREFIX + job_id)
        pipe.delete(BATCH_PREFIX + leader_id)
        pipe.execute()

    # --- the API's side ----------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobRecord | None:
        """A queued job is canceled at once; a running one gets cancel_requested (its worker stops between
        stages and marks it canceled); a finished one is returned unchanged."""

        def change(job: JobRecord) -> dict[str, Any] | None:
            if job.status == "queued":
                return {"status": "canceled", "finished_at": utc_now(), "cancel_requested": True}
            if job.status == "running" and not job.cancel_requested:
                return {"cancel_requested": True}
            return None

        return self._update(job_id, change)

    def counts(self) -> Counter[tuple[str, str]]:
        """Live job records by (kind, status). Scans every record: fine for metrics scrapes of a few 100k jobs."""
        counts: Counter[tuple[str, str]] = Counter()
        keys = list(self.redis.scan_iter(match=KEY_PREFIX + "*", count=1000))
        for start in range(0, len(keys), 1000):
            pipe = self.redis.pipeline(transaction=False)
            for key in keys[start : start + 1000]:
                pipe.hmget(key, ["kind", "status"])
            for kind, status in pipe.execute():
                if kind is not None and status is not None:  # expired between scan and read
                    counts[(json.loads(kind), json.loads(status))] += 1
        return counts

    @staticmethod
    def _observe_duration(pipe: redis.client.Pipeline, kind: str, status: str, seconds: float) -> None:
        bucket = next((str(b) for b in DURATION_BUCKETS if seconds <= b), "+Inf")
        pipe.hincrby(DURATION_KEY, f"{kind}|{status}|{bucket}", 1)
        pipe.hincrbyfloat(DURATION_KEY, f"{kind}|{status}|sum", seconds)

    def durations(self) -> dict[tuple[str, str], tuple[list[tuple[str, int]], float]]:
        """Job duration histogram (started → finished) by (kind, status): cumulative [(le, count)], sum."""
        raw = {_text(k): _text(v) for k, v in self.redis.hgetall(DURATION_KEY).items()}
        out = {}
        for kind, status in {tuple(k.split("|")[:2]) for k in raw}:
            total, buckets = 0, []
            for le in [*map(str, DURATION_BUCKETS), "+Inf"]:
                total += int(raw.get(f"{kind}|{status}|{le}", 0))
                buckets.append((le, total))
            out[(kind, status)] = (buckets, float(raw.get(f"{kind}|{status}|sum", 0.0)))
        return out


class OwnedJobStore(JobStore):
    """The job store as one API key (its SHA-256 ``owner``) sees it: other keys' jobs are absent; new jobs carry
    the key and count against its limit of active (queued or running) jobs."""

    def __init__(self, base: JobStore, owner: str, max_active: int):
        super().__init__(base.redis, base.ttl_s, on_change=base.on_change)
        self.owner = owner
        self.max_active = max_active

    def get(self, job_id: str) -> JobRecord | None:
        job = super().get(job_id)
        return job if job is not None and job.owner == self.owner else None

    def _update(self, job_id: str, change: Callable[[JobRecord], dict[str, Any] | None]) -> JobRecord | None:
        if self.get(job_id) is None:  # the owner of a record never changes
            return None
        return super()._update(job_id, change)

    def create(self, kind: str, params: dict[str, Any], **kwargs: Any) -> JobRecord:
        job_id = kwargs.pop("job_id", None) or new_job_id()
        self._reserve(job_id)
        return super().create(kind, params, job_id=job_id, owner=self.owner, **kwargs)

    def _reserve(self, job_id: str) -> None:
        """Add the job to the key's active set, atomically with counting it: TooManyJobs when the set is full.
        Jobs that have finished (or whose record is gone) leave the set here."""
        key = ACTIVE_PREFIX + self.owner
        full: TooManyJobs | None = None

        def transaction(pipe: Any) -> None:
            nonlocal full
            members = sorted(pipe.smembers(key))
            statuses = [super(OwnedJobStore, self).get(m) for m in members]
            done = [m for m, job in zip(members, statuses, strict=True) if job is None or job.status in FINAL]
            active = len(members) - len(done)
            if active >= self.max_active:
                full = TooManyJobs(
                    f"this API key has {active} jobs queued or running, its limit: wait until one finishes "
                    "(or cancel one) and submit again",
                    retry_after_s=RETRY_AFTER_S,
                )
                return
            pipe.multi()
            if done:
                pipe.srem(key, *done)
            pipe.sadd(key, job_id)
            pipe.expire(key, self.ttl_s)

        self.redis.transaction(transaction, key)
        if full is not None:
            raise full


class IdempotencyRecords:
    """The first answer to a POST under each (caller, Idempotency-Key): claimed while the request runs, then kept
    for ``ttl_s`` (2xx answers) or released. Values are JSON: {"fingerprint"} while pending, then also "status",
    "headers" and "body"."""

    PENDING_TTL_S = 120  # a claim whose request never finished (the process died) frees the key after this

    def __init__(self, redis_client: redis.Redis, ttl_s: int):
        self.redis = redis_client
        self.ttl_s = ttl_s

    @staticmethod
    def key(caller: str, idempotency_key: str) -> str:
        return IDEMPOTENCY_PREFIX + hashlib.sha256(f"{caller}\n{idempotency_key}".encode()).hexdigest()

    def claim(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        """None when this request now holds the key; else what is stored under it."""
        if self.redis.set(key, json.dumps({"fingerprint": fingerprint}), nx=True, ex=self.PENDING_TTL_S):
            return None
        raw = self.redis.get(key)
        return json.loads(raw) if raw else self.claim(key, fingerprint)  # expired in between: claim it

    def keep(self, key: str, answer: dict[str, Any]) -> None:
        self.redis.set(key, json.dumps(answer), ex=self.ttl_s)

    def release(self, key: str) -> None:
        self.redis.delete(key)
