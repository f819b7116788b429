"""What one worker process holds: settings, the job store, the blob store and, once loaded, the model.

Created lazily in the process that runs tasks (a Celery pool process, after the fork), so nothing here is
shared across a fork.
"""

from __future__ import annotations

import logging
from functools import cached_property

import torch

from core.jobs import JobStore, connect_redis
from core.queues import make_celery
from core.settings import Settings, get_settings
from core.storage import Store, make_store
from core.webhooks import Notifier
from model.checkpoint import load_checkpoint, resolve_device
from model.gendef import GenDeF
from model.inference import prepare
from worker.retry import RetryingStore

log = logging.getLogger(__name__)


class JobFailure(Exception):
    """Ends a job as failed with a stable machine code and a message a person can act on."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def job_store(settings: Settings) -> JobStore:
    """The job store as workers use it: status changes queue their webhooks."""
    notify = Notifier(make_celery(settings), settings)
    return JobStore(connect_redis(settings), ttl_s=settings.job_ttl_s, on_change=notify)


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._model: GenDeF | None = None

    @cached_property
    def jobs(self) -> JobStore:
        return job_store(self.settings)

    @cached_property
    def blobs(self) -> Store:
        return RetryingStore(
            make_store(self.settings), self.settings.storage_attempts, self.settings.storage_backoff_s
        )

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def model(self) -> GenDeF:
        """The model, loaded on first use; a checkpoint that cannot be loaded fails the job (and is retried by
        the next one, so fixing the checkpoint needs no worker restart)."""
        if self._model is None:
            path = self.settings.checkpoint
            try:
                torch.set_num_threads(self.settings.torch_threads)  # before any op: results depend on it
                device = resolve_device(self.settings.device)
                s = self.settings
                channels_last = {"auto": None, "on": True, "off": False}[s.channels_last]
                self._model = prepare(
                    load_checkpoint(path, device=device), s.precision, channels_last, s.compile_model
                )
            except Exception as e:
                log.exception("loading the checkpoint %s failed", path)
                raise JobFailure(
                    "model_error",
                    f"the worker could not load the model checkpoint {path} on device "
                    f"{self.settings.device!r} ({type(e).__name__}: {e}); check GENDEF_CHECKPOINT and GENDEF_DEVICE",
                ) from e
            log.info("model loaded from %s on %s", path, device)
        return self._model

    def preload_model(self) -> None:
        """Load the model before the first job; a failure is logged and reported by the jobs that need it."""
        try:
            self.model()
        except JobFailure:
            pass


_runtime: Runtime | None = None


def get() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime
