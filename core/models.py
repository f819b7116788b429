"""The models a deployment serves, from a folder or from an S3 bucket (``GENDEF_MODELS_DIR``): every subfolder
(or sub-prefix) that holds a checkpoint (model.safetensors + config.json, with its MODEL_CARD.md) is one model,
named by it.

Read without torch, so the API lists models and checks requests with them: the architecture's resolution, frame
limit and classes and what the weights were trained on (``data``) come from config.json. ``version`` is a digest
of the weights: the first hex digits of the weights file's SHA-256 in a folder (computed once per file path,
modification time and size); of its ETag in a bucket (S3's own digest of the object, so that listing the models
reads no weights). A model added, removed or replaced is seen without a restart: the folder is read again at each
call; the bucket is listed again at each call of the workers and, in the API, once the list is older than
``GENDEF_MODELS_LIST_CACHE_S``.

In a bucket, a model is listed once all three of its files are there (an upload in progress is not), and a worker
downloads a model's files when a job first needs them into ``GENDEF_MODELS_CACHE_DIR``, one folder per model and
version: they stay there only once the model has loaded from them (``ModelRegistry.checkpoint``), so a corrupt
upload is fetched again, not kept.

The default model is ``GENDEF_DEFAULT_MODEL``; unset, it is ``mnist`` when served, else the first by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.settings import Settings
from core.storage import BlobNotFound, s3_client, s3_errors

log = logging.getLogger(__name__)

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "MODEL_CARD.md"
VERSION_CHARS = 12  # hex digits of the weights' digest kept as the version
FALLBACK_DEFAULT = "mnist"
NAME = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
)  # folder names served (they go into queue names and logs)
S3_SCHEME = "s3://"


class ModelChanged(Exception):
    """A model's files in the bucket were removed or replaced after it was listed."""


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the folder's name
    version: str  # digest of the weights
    location: str  # the checkpoint folder, or s3://bucket/prefix/name/
    resolution: int  # H == W of the canonical image, the fields and the frames
    max_frames: int  # largest num_frames: the model's own limit, capped by GENDEF_MAX_FRAMES
    trained_on: str | None  # config.json's `data`: what the weights were trained on
    classes: tuple[str, ...] = ()  # a conditional model's class names ("0" ... "9"); () unconditional
    labels_per_video: int = 0  # how many distinct classes a video takes (0: unconditional)


def model_info(name: str, version: str, location: str, config: dict[str, Any], frame_cap: int) -> ModelInfo:
    """A model as its config.json describes it (ValueError, KeyError, TypeError when it does not)."""
    canonical = config.get("canonical", {})
    classes = int(canonical.get("classes", 0))
    return ModelInfo(
        name=name,
        version=version,
        location=location,
        resolution=int(config["resolution"]),
        max_frames=min(int(config["max_frames"]), frame_cap),
        trained_on=config.get("data"),
        classes=tuple(str(c) for c in range(classes)),
        labels_per_video=int(canonical.get("labels_per_image", 1)) if classes else 0,
    )


@lru_cache(maxsize=256)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()[:VERSION_CHARS]


def weights_version(path: Path) -> str:
    """The version of a weights file: hashed once per (path, modification time, size)."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def etag_version(etag: str) -> str:
    """The version of a weights object in a bucket: a digest of its ETag (S3's digest of its bytes)."""
    return hashlib.sha256(etag.strip('"').encode()).hexdigest()[:VERSION_CHARS]


class FolderModels:
    """Checkpoint folders under a local folder: a model is loaded from its own folder."""

    def __init__(self, directory: Path, frame_cap: int):
        self.directory = directory
        self.frame_cap = frame_cap

    def models(self) -> list[ModelInfo]:
        found = []
        folders = sorted(self.directory.iterdir()) if self.directory.is_dir() else []
        for folder in folders:
            if not (NAME.fullmatch(folder.name) and (folder / WEIGHTS).is_file()):
                continue
            try:
                config = json.loads((folder / CONFIG).read_text())
                found.append(
                    model_info(
                        folder.name, weights_version(folder / WEIGHTS), str(folder), config, self.frame_cap
                    )
                )
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                log.warning("%s is not a servable checkpoint (%s: %s): skipped", folder, type(e).__name__, e)
        return found

    @contextlib.contextmanager
    def checkpoint(self, info: ModelInfo) -> Iterator[Path]:
        yield Path(info.location)


class BucketModels:
    """Checkpoints under a prefix of an S3 bucket: listed from the bucket's object list (keys, ETags) and the
    models' config.json (read again only when its ETag changes); loaded from a local copy (``checkpoint``)."""

    def __init__(self, settings: Settings, cache_dir: Path):
        bucket, _, prefix = settings.models_dir.removeprefix(S3_SCHEME).partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = s3_client(settings)
        self.frame_cap = settings.max_frames
        self.cache_dir = cache_dir
        self._configs: dict[tuple[str, str], dict[str, Any]] = {}  # (key, ETag) -> parsed config.json

    def _location(self, name: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}{name}/"

    def _objects(self) -> dict[str, dict[str, str]]:
        """name -> {file name: ETag} of the objects one level under each model's prefix."""
        found: dict[str, dict[str, str]] = {}
        with s3_errors():
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            ):
                for item in page.get("Contents", []):
                    name, _, file = item["Key"][len(self.prefix) :].partition("/")
                    if NAME.fullmatch(name) and file in (WEIGHTS, CONFIG, CARD):
                        found.setdefault(name, {})[file] = item["ETag"]
        return found

    def _config(self, name: str, etag: str) -> dict[str, Any]:
        key = f"{self.prefix}{name}/{CONFIG}"
        if (key, etag) not in self._configs:
            with s3_errors(key):
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            self._configs = {k: v for k, v in self._configs.items() if k[0] != key}  # its older versions
            self._configs[key, etag] = json.loads(body)
        return self._configs[key, etag]

    def models(self) -> list[ModelInfo]:
        found = []
        for name, files in sorted(self._objects().items()):
            if len(files) < 3:  # an upload in progress, or an incomplete one: not a model yet
                continue
            try:
                config = self._config(name, files[CONFIG])
                found.append(
                    model_info(
                        name, etag_version(files[WEIGHTS]), self._location(name), config, self.frame_cap
                    )
                )
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                log.warning(
                    "%s is not a servable checkpoint (%s: %s): skipped",
                    self._location(name),
                    type(e).__name__,
                    e,
                )
        return found

    @contextlib.contextmanager
    def checkpoint(self, info: ModelInfo) -> Iterator[Path]:
        """The model's files in the local cache, downloaded first if they are not there. A download is kept only
        when the block that loads it ends without an exception. ModelChanged: its files were removed or replaced
        since the listing."""
        folder = self.cache_dir / info.name / info.version
        if (folder / WEIGHTS).is_file():
            yield folder
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        download = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=f".{info.name}-"))
        try:
            for file in (CONFIG, CARD, WEIGHTS):
                key = f"{self.prefix}{info.name}/{file}"
                try:
                    with s3_errors(key), open(download / file, "wb") as out:
                        answer = self.client.get_object(Bucket=self.bucket, Key=key)
                        shutil.copyfileobj(answer["Body"], out, 1 << 20)
                except BlobNotFound:
                    raise ModelChanged(f"{info.location}{file} has been removed") from None
            if etag_version(answer["ETag"]) != info.version:
                raise ModelChanged(f"the weights in {info.location} have been replaced (another version)")
            yield download
        except BaseException:
            shutil.rmtree(download, ignore_errors=True)
            raise
        folder.parent.mkdir(exist_ok=True)
        try:
            download.rename(folder)
        except OSError:  # another process of this worker cached it meanwhile
            shutil.rmtree(download, ignore_errors=True)
        for old in folder.parent.iterdir():  # its older versions
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)


class ModelRegistry:
    """The served models (``models``, ``get``, ``default_name``) and where a worker loads one from
    (``checkpoint``). ``cache_s``: how long a bucket's list is reused (the API's; the workers list at each job)."""

    def __init__(self, settings: Settings, cache_s: float = 0.0):
        self.default_setting = settings.default_model
        self.cache_s = cache_s
        self.source: FolderModels | BucketModels
        if settings.models_dir.startswith(S3_SCHEME):
            self.source = BucketModels(settings, settings.models_cache_dir)
        else:
            self.source = FolderModels(Path(settings.models_dir), settings.max_frames)
            self.cache_s = 0.0  # reading a folder costs nothing worth saving
        self._listed: tuple[float, list[ModelInfo]] | None = None

    def models(self) -> list[ModelInfo]:
        """The servable models, by name; a checkpoint that cannot be read is skipped (and logged)."""
        now = time.monotonic()
        if self._listed is None or now - self._listed[0] >= self.cache_s:
            self._listed = (now, self.source.models())
        return self._listed[1]

    def get(self, name: str) -> ModelInfo | None:
        return next((m for m in self.models() if m.name == name), None)

    def default_name(self, models: list[ModelInfo]) -> str | None:
        """The default among ``models`` (GENDEF_DEFAULT_MODEL, else mnist, else the first); None when the one
        GENDEF_DEFAULT_MODEL names is not served, or none is."""
        names = [m.name for m in models]
        if self.default_setting:
            return self.default_setting if self.default_setting in names else None
        if FALLBACK_DEFAULT in names:
            return FALLBACK_DEFAULT
        return names[0] if names else None

    def checkpoint(self, info: ModelInfo) -> contextlib.AbstractContextManager[Path]:
        """``with registry.checkpoint(info) as folder:`` the local checkpoint folder to load the model from (from a
        bucket: kept in the cache only if the block ends without an exception)."""
        return self.source.checkpoint(info)
