"""Checkpoints: save -> load is bit-identical, across processes too; the shipped weights load."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import load_checkpoint, main, save_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_save_then_load_gives_bit_identical_outputs(tmp_path, tiny):
    save_checkpoint(tiny, tmp_path / "ckpt", card={"data": "none", "steps": 0})
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {
        "model.safetensors",
        "config.json",
        "MODEL_CARD.md",
    }
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["resolution"] == 32 and config["max_frames"] == 256 and "deformation" in config
    assert config["data"] == "none"  # what it was trained on, for a reader of the config (GET /models)
    loaded = load_checkpoint(tmp_path / "ckpt", device="cpu")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    a, b = tiny.sample([1, 2], [3, 4], 6), loaded.sample([1, 2], [3, 4], 6)
    assert (
        torch.equal(a.canonical, b.canonical)
        and torch.equal(a.fields, b.fields)
        and torch.equal(a.frames, b.frames)
    )
    assert "- steps: 0" in (tmp_path / "ckpt" / "MODEL_CARD.md").read_text()
    del config["data"]  # a config written before it said what the weights were trained on
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    assert torch.equal(load_checkpoint(tmp_path / "ckpt").sample([1, 2], [3, 4], 6).fields, a.fields)


def test_same_seeds_are_bit_identical_across_processes(tmp_path, tiny):
    save_checkpoint(tiny, tmp_path / "ckpt")
    script = (
        "import sys, torch; from safetensors.torch import save_file; from model.checkpoint import load_checkpoint;"
        "torch.manual_seed(99); m = load_checkpoint(sys.argv[1]); o = m.sample([5, 6], [7, 8], 10);"
        "save_file({'canonical': o.canonical, 'fields': o.fields}, sys.argv[2])"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ckpt"), str(tmp_path / "out.safetensors")],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    other = load_file(tmp_path / "out.safetensors")
    here = tiny.sample([5, 6], [7, 8], 10)
    assert torch.equal(other["canonical"], here.canonical) and torch.equal(other["fields"], here.fields)


def test_loading_a_folder_without_a_checkpoint_says_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        load_checkpoint(tmp_path)


def test_loading_weights_of_another_architecture_fails(tmp_path, tiny):
    save_checkpoint(tiny, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["deformation.out.bias"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="deformation.out.bias"):
        load_checkpoint(tmp_path)


def test_init_cli_writes_an_untrained_checkpoint_marked_as_such(tmp_path):
    main(["init", "--preset", "tiny", "--out", str(tmp_path / "init")])
    model = load_checkpoint(tmp_path / "init")
    assert "untrained" in (tmp_path / "init" / "MODEL_CARD.md").read_text()
    out = model.sample([1], [2], 3)
    assert torch.equal(
        out.frames[:, 2], out.frames[:, 0]
    )  # untrained: zero offsets, every frame the canonical


def test_shipped_small_checkpoint_loads_and_samples():
    model = load_checkpoint(REPO / "model" / "weights" / "small")
    assert model.config.resolution == 64 and model.max_frames >= 128
    out = model.sample([0], [0], 16)
    assert out.frames.shape == (1, 16, 3, 64, 64)
    assert (REPO / "model" / "weights" / "small" / "model.safetensors").stat().st_size < 50 * 2**20
