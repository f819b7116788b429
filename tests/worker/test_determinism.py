"""Same seeds, same fields on workers with different core counts: the shipped model (model/weights/small), loaded
by the worker's runtime in subprocesses whose OpenMP and torch thread defaults differ, gives bit-identical fields,
because the worker pins its torch threads (GENDEF_TORCH_THREADS)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.settings import DEFAULT_MODELS_DIR

SHIPPED = DEFAULT_MODELS_DIR / "small"

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]

# argv: output .npy, "worker" (the worker's runtime, threads pinned) or "unpinned" (torch's default threads)
SAMPLE = """
import sys
import numpy as np
import torch
from core.settings import Settings
from model.checkpoint import load_checkpoint
from worker.runtime import Runtime

out, how, path = sys.argv[1:]
if how == "worker":
    runtime = Runtime(Settings(device="cpu", default_model="small"))
    model = runtime.model(runtime.served(None))
else:
    model = load_checkpoint(path, device="cpu")
np.save(out, model.sample([5], [7], 16).fields.numpy())
print(torch.get_num_threads())
"""


def sample(tmp_path: Path, threads: int, how: str) -> tuple[np.ndarray, int]:
    """Fields of seed 5 / motion 7 in a process whose thread defaults are ``threads`` (as on a machine with that
    many cores); the threads torch used."""
    out = tmp_path / f"{how}-{threads}.npy"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")}
    env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-c", SAMPLE, str(out), how, str(SHIPPED)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return np.load(out), int(done.stdout.split()[-1])


def test_the_shipped_model_gives_identical_fields_whatever_the_thread_default(tmp_path: Path):
    assert (SHIPPED / "model.safetensors").is_file()
    one, threads_one = sample(tmp_path, 1, "worker")
    two, threads_two = sample(tmp_path, 2, "worker")
    assert threads_one == threads_two == 1  # GENDEF_TORCH_THREADS' default
    assert np.array_equal(one, two)
    unpinned, threads = sample(tmp_path, 2, "unpinned")
    log.info(
        "unpinned (%d threads) vs pinned: fields differ by at most %.3g",
        threads,
        np.abs(unpinned - one).max(),
    )
