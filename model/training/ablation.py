"""The GenDeF ablation at our scale: stage 2 from one stage-1 training state, three ways, the same budget each.

    python -m model.training.ablation --run runs/small --state runs/ablation/stage1_state --out runs/ablation \\
        --stage2-steps 300 --minutes 20 [--arms full no_field_reg first_recipe] [--train]

Arms (each a run folder under --out that ``python -m model.training.train --out DIR --resume`` trains):
- ``full``: the run's own training config;
- ``no_field_reg``: the same without the field regularisers (offset magnitude, off-canvas, offset smoothness and
  fold weights 0);
- ``first_recipe``: the recipe before the field work: no field regularisers, unbounded offsets predicted at full
  resolution, one learning rate for the whole generator, the canonical generator neither frozen nor slowed nor
  kept an image generator, no temporal shift in the discriminator, StyleGAN-V phase scaling off. (The first
  recipe's zero-padded augmentation, grey outside the canvas, and R1 summed over frames are not options any
  more: this arm keeps today's. Its discriminator keeps today's fusion resolution, so the stage-1 state fits.)
- ``no_smooth``: the full recipe without the edge-aware smoothness loss of the flow (``smooth_weight`` 0);
- ``no_canonical_cond``: a deformation generator that does not see the canonical features
  (``deformation.canonical_cond`` false). Stage 1 never trains the deformation generator, so its weights in
  the stage-1 state are the initial ones: this arm takes every tensor of the state whose shape it shares and
  its own initial weights (same seed) for the layers that lose the conditioning inputs.

Every arm stops after --stage2-steps steps or --minutes minutes of step time, whichever comes first. With
``--train`` the arms are trained here, all at once, one thread each (otherwise only prepared).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from model.config import FIRST_RECIPE, GenDeFConfig, preset
from model.gendef import GenDeF
from model.training import state
from model.training.config import TrainConfig

log = logging.getLogger(__name__)

ARMS = ("full", "no_field_reg", "first_recipe", "no_smooth", "no_canonical_cond")
NO_FIELD_REG = {
    "offset_weight": 0.0,
    "off_canvas_weight": 0.0,
    "offset_smooth_weight": 0.0,
    "fold_weight": 0.0,
    "distortion_weight": 0.0,
}
FIRST_RECIPE_TRAINING = NO_FIELD_REG | {
    "deform_lr_mult": 1.0,
    "canonical_lr_mult": 1.0,
    "canonical_freeze_steps": 0,
    "image_weight": 0.0,
}


def arm_config(
    base: dict[str, Any], arm: str, stage1: dict[str, Any], steps: int, minutes: float
) -> dict[str, Any]:
    """The training config of an arm: base (a run's train_config.json) resumed from the stage-1 state whose
    counters are stage1, switching to stage 2 at once, for steps steps or minutes of step time."""
    cfg = json.loads(json.dumps(base))  # a deep copy
    if isinstance(cfg["model"], str):  # a preset name (runs started before configs were resolved): resolve it
        cfg["model"] = preset(cfg["model"]).to_dict()
    cfg |= {
        "stage1_steps": stage1["stage_step"],  # stage 1 is over where the state was saved
        "stage2_steps": steps,
        "minutes": stage1["seconds"] / 60 + minutes,  # the budget counts the stage-1 seconds too
    }
    if arm == "no_smooth":
        cfg["smooth_weight"] = 0.0
    elif arm == "no_field_reg":
        cfg |= NO_FIELD_REG
    elif arm == "first_recipe":
        cfg |= FIRST_RECIPE_TRAINING
        for part, values in FIRST_RECIPE.items():
            cfg["model"][part] |= values
    elif arm == "no_canonical_cond":
        cfg["model"]["deformation"]["canonical_cond"] = False
    elif arm != "full":
        raise ValueError(f"unknown arm {arm!r}; choose one of {ARMS}")
    return cfg


def adapt_generators(saved: state.TrainingState, model_config: dict[str, Any], seed: int) -> None:
    """Fit a training state to another generator architecture: generator tensors (of G and G_ema) whose name and
    shape the new architecture shares are kept, the others come from its initial weights (seed)."""
    torch.manual_seed(seed)  # as Trainer does before building the generator
    fresh = GenDeF(GenDeFConfig.from_dict(model_config)).state_dict()
    for name in ("G", "G_ema"):
        weights = saved.modules[name]
        saved.modules[name] = {
            k: weights[k] if k in weights and weights[k].shape == init.shape else init.clone()
            for k, init in fresh.items()
        }


def prepare(
    run: Path, state_dir: Path, out: Path, steps: int, minutes: float, arms: tuple[str, ...] = ARMS
) -> list[Path]:
    """Write one run folder per arm (train_config.json + state/) under out; return them."""
    base = json.loads((run / "train_config.json").read_text())
    stage1 = state.load(state_dir)
    if stage1.counters["stage"] != 1:
        raise ValueError(
            f"{state_dir} is a stage-{stage1.counters['stage']} state; the ablation starts from a stage-1 state"
        )
    dirs = []
    for arm in arms:
        directory = out / arm
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(state_dir, directory / "state")
        cfg = arm_config(base, arm, stage1.counters, steps, minutes)
        (directory / "train_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        if cfg["model"] != TrainConfig(**base).model_config().to_dict():
            adapted = state.load(state_dir)
            adapt_generators(adapted, cfg["model"], cfg["seed"])
            state.save(adapted, directory / "state")
        dirs.append(directory)
        log.info("prepared %s", directory)
    return dirs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.training.ablation", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="the run whose train_config.json the arms share")
    p.add_argument("--state", type=Path, required=True, help="a stage-1 state/ folder of that run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage2-steps", type=int, required=True)
    p.add_argument("--minutes", type=float, required=True, help="step-time budget of each arm")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="default: all")
    p.add_argument("--train", action="store_true", help="train the arms now, in parallel, one thread each")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dirs = prepare(args.run, args.state, args.out, args.stage2_steps, args.minutes, tuple(args.arms))
    if args.train:
        env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        procs = []
        for d in dirs:
            with (d / "train.log").open("w") as logfile:
                cmd = [sys.executable, "-m", "model.training.train", "--out", str(d), "--resume"]
                procs.append(subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env))
        failed = [str(d) for d, proc in zip(dirs, procs, strict=True) if proc.wait() != 0]
        if failed:
            raise SystemExit(f"training failed in {', '.join(failed)} (see train.log there)")


if __name__ == "__main__":
    main()
