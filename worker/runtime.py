"""What one worker process holds: settings, the job store, the blob store and the models it has loaded.

Created lazily in the process that runs tasks (a Celery pool process, after the fork), so nothing here is
shared across a fork.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from functools import cached_property

import torch

from core.jobs import JobStore, connect_redis
from core.models import ModelChanged, ModelInfo, ModelRegistry
from core.queues import make_celery
from core.settings import Settings, get_settings
from core.storage import StorageUnavailable, Store, make_store
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
        self.registry = ModelRegistry(settings)
        # (name, version) -> model, least recently used first; at most settings.max_loaded_models
        self._loaded: OrderedDict[tuple[str, str], GenDeF] = OrderedDict()
        self._loading = threading.Lock()  # the two threads of a batch load a model once

    @cached_property
    def jobs(self) -> JobStore:
        return job_store(self.settings)

    @cached_property
    def blobs(self) -> Store:
        return RetryingStore(
            make_store(self.settings), self.settings.storage_attempts, self.settings.storage_backoff_s
        )

    def served(self, name: str | None, version: str | None = None) -> ModelInfo:
        """The model a job names (None: the default) at the version it recorded (None: any), or a JobFailure
        `model_unavailable` when its folder is gone or holds other weights now."""
        models = self.registry.models()
        wanted = name or self.registry.default_name(models)
        info = next((m for m in models if m.name == wanted), None)
        if info is None:
            raise JobFailure(
                "model_unavailable",
                f"model {wanted or '(default)'} is no longer served (its checkpoint folder is not in "
                "GENDEF_MODELS_DIR); submit the job again with a model of GET /models",
            )
        if version is not None and info.version != version:
            raise JobFailure(
                "model_unavailable",
                f"this job was made for version {version} of model {info.name}, which is now version "
                f"{info.version} (retrained); submit the job again",
            )
        return info

    def is_loaded(self, info: ModelInfo) -> bool:
        return (info.name, info.version) in self._loaded

    def loaded_models(self) -> list[str]:
        """The models in memory as name@version, least recently used first."""
        return [f"{name}@{version}" for name, version in self._loaded]

    def model(self, info: ModelInfo) -> GenDeF:
        """The model, loaded on first use; the least recently used one goes when max_loaded_models are loaded. A
        checkpoint that cannot be loaded fails the job (and is tried again by the next one: no restart needed).

        Also pins torch's intra-op threads of the calling thread to GENDEF_TORCH_THREADS: results depend on the
        thread count, and the setting is per thread (a batch samples in a thread of its own)."""
        torch.set_num_threads(self.settings.torch_threads)
        key = (info.name, info.version)
        with self._loading:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            for old in [k for k in self._loaded if k[0] == info.name]:  # an older version of it
                del self._loaded[old]
            while len(self._loaded) >= self.settings.max_loaded_models:
                name, version = next(iter(self._loaded))
                del self._loaded[(name, version)]
                log.info("model %s@%s unloaded (least recently used)", name, version)
            self._loaded[key] = self._load(info)
            log.info("models loaded: %s", ", ".join(self.loaded_models()))
            return self._loaded[key]

    def _load(self, info: ModelInfo) -> GenDeF:
        """The model from its checkpoint (from a bucket: downloaded first, and kept in the cache only once it has
        loaded, so a corrupt upload fails its jobs and is fetched again, never kept)."""
        s = self.settings
        try:
            device = resolve_device(s.device)
            channels_last = {"auto": None, "on": True, "off": False}[s.channels_last]
            with self.registry.checkpoint(info) as folder:
                model = prepare(
                    load_checkpoint(folder, device=device), s.precision, channels_last, s.compile_model
                )
        except ModelChanged as e:
            raise JobFailure(
                "model_unavailable",
                f"model {info.name} changed while it was loaded: {e}; submit the job again",
            ) from e
        except StorageUnavailable:
            raise
        except Exception as e:
            log.exception("loading the checkpoint %s failed", info.location)
            raise JobFailure(
                "model_error",
                f"the worker could not load the checkpoint of model {info.name} version {info.version} "
                f"({info.location}) on device {s.device!r} ({type(e).__name__}: {e}); check that its files are a "
                "whole checkpoint (publish it again if not), GENDEF_MODELS_DIR and GENDEF_DEVICE",
            ) from e
        log.info("model %s@%s loaded from %s on %s", info.name, info.version, info.location, device)
        return model

    def preload_model(self, name: str | None = None) -> None:
        """Load a model (None: the default) before the first job; a failure is reported by the jobs that need it."""
        try:
            self.model(self.served(name))
        except JobFailure:
            pass


_runtime: Runtime | None = None


def get() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime
