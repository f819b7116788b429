"""The models a deployment serves: every subfolder of ``GENDEF_MODELS_DIR`` that holds a checkpoint
(model.safetensors + config.json, with its MODEL_CARD.md) is one model, named by its folder.

Read without torch, so the API lists models and checks requests with them: the architecture's resolution and
frame limit come from config.json, what the model was trained on from its card, and its ``version`` is a digest of
its weights file (the first hex digits of its SHA-256; computed once per file path, modification time and size).
The folder is read again at each call: a model added, removed or retrained is seen without a restart.

The default model is ``GENDEF_DEFAULT_MODEL``; unset, it is ``mnist`` when served, else the first by name. ``mnist``
is the shipped model that meets the field-health targets (docs/EVALUATION.md); ``small`` does not yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.settings import Settings

log = logging.getLogger(__name__)

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "MODEL_CARD.md"
VERSION_CHARS = 12  # hex digits of the weights' SHA-256 kept as the version
FALLBACK_DEFAULT = "mnist"
NAME = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
)  # folder names served (they go into queue names and logs)


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the folder's name
    version: str  # digest of the weights file
    path: Path  # the checkpoint folder
    resolution: int  # H == W of the canonical image, the fields and the frames
    max_frames: int  # largest num_frames: the model's own limit, capped by GENDEF_MAX_FRAMES
    trained_on: str | None  # from the card: its `- data:` line or its `## Data` section


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


def trained_on(card: str) -> str | None:
    """What a model card says the model was trained on: its ``- data:`` line (model.training.train writes one), else the
    first paragraph of its ``## Data`` section; None when it says neither."""
    line = re.search(r"^- data: *(.+)$", card, re.MULTILINE)
    if line:
        return line.group(1).strip()
    section = re.search(r"^## Data[^\n]*\n+(.+?)(?:\n\s*\n|\n#|\Z)", card, re.MULTILINE | re.DOTALL)
    return " ".join(section.group(1).split()) if section else None


def read_model(folder: Path, frame_cap: int) -> ModelInfo:
    """One checkpoint folder's model (OSError, ValueError, KeyError when it is not a readable checkpoint)."""
    config = json.loads((folder / CONFIG).read_text())
    card = folder / CARD
    return ModelInfo(
        name=folder.name,
        version=weights_version(folder / WEIGHTS),
        path=folder,
        resolution=int(config["resolution"]),
        max_frames=min(int(config["max_frames"]), frame_cap),
        trained_on=trained_on(card.read_text()) if card.is_file() else None,
    )


class ModelRegistry:
    def __init__(self, settings: Settings):
        self.directory = settings.models_dir
        self.default_setting = settings.default_model
        self.frame_cap = settings.max_frames

    def models(self) -> list[ModelInfo]:
        """The servable models, by name; a folder that is not a readable checkpoint is skipped (and logged)."""
        found = []
        folders = sorted(self.directory.iterdir()) if self.directory.is_dir() else []
        for folder in folders:
            if not (NAME.fullmatch(folder.name) and (folder / WEIGHTS).is_file()):
                continue
            try:
                found.append(read_model(folder, self.frame_cap))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("%s is not a servable checkpoint (%s: %s): skipped", folder, type(e).__name__, e)
        return found

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
