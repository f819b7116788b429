"""Widen the canonical generator of a saved run without changing what it computes (``python -m model.widen``).

A new run folder is written beside the saved one: the same state (discriminator, fields, motion, optimizers,
counters, metrics.csv) with the canonical generator at a larger ``channel_base``, so it resumes with more
channels at the resolutions the old width capped (``channels(res) = min(channel_max, channel_base // res)``).
The wider generator and its EMA copy make the same images and features as before, to float rounding, as in
Net2Net with zero fan-in: every new channel gets fresh initial weights into it, and zero weights out of it into
the old channels, the RGB skips and the deformation generator's projections of the canonical features. So the
new channels change nothing until training gives them a use, and the run keeps every step it had.

- A modulated convolution's demodulation divides out the fan-in gain, so its old weights carry over unchanged;
  the RGB skips are not demodulated, and their old weights are scaled by sqrt(new fan-in / old fan-in) to undo
  the smaller equalized-learning-rate gain.
- The optimizer's moments of a widened tensor are its old moments, zero for the new entries.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.config import GenDeFConfig
from model.gendef import GenDeF

WIDENED = ("canonical.", "deformation.cond_proj.")  # what the canonical generator's width reaches


def widen_tensor(name: str, old: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """The wider tensor (fresh's shape) that computes what old did: old in the leading slice, fresh initial
    values for new outputs, zero weights from new inputs (dim 1 of a convolution)."""
    if fresh.shape == old.shape:
        return old
    if old.dim() != fresh.dim() or any(o > f for o, f in zip(old.shape, fresh.shape, strict=True)):
        raise ValueError(f"{name}: cannot widen {tuple(old.shape)} to {tuple(fresh.shape)}")
    new = fresh.clone()
    if old.dim() == 4:  # (out, in, k, k)
        new[:, old.shape[1] :] = 0
        gain = math.sqrt(fresh.shape[1] / old.shape[1]) if ".to_rgb." in f".{name}" else 1.0
        old = old * gain
    new[tuple(slice(0, s) for s in old.shape)] = old
    return new


def widen_state(
    tensors: dict[str, torch.Tensor], model: GenDeF, opt_g_names: list[str]
) -> dict[str, torch.Tensor]:
    """A saved training state's tensors with G and G_ema widened to model's (freshly initialised) shapes, and
    the generator optimizer's moments (parameter i is opt_g_names[i]) padded with zeros."""
    fresh = model.state_dict()
    out = dict(tensors)
    for key, value in tensors.items():
        prefix, _, name = key.partition(".")
        if prefix in ("G", "G_ema") and name.startswith(WIDENED):
            out[key] = widen_tensor(name, value, fresh[name])
        elif prefix == "opt_G":
            idx, _, field = name.partition(".")
            shape = fresh[opt_g_names[int(idx)]].shape
            if field in ("exp_avg", "exp_avg_sq") and value.shape != shape:
                out[key] = torch.zeros(shape, dtype=value.dtype)
                out[key][tuple(slice(0, s) for s in value.shape)] = value
    return out


def widen_run(source: Path, out: Path, channel_base: int, seed: int = 0) -> Path:
    """Write out/ (a new run folder) from the saved run source/ with the canonical generator's channel_base."""
    if out.exists():
        raise FileExistsError(f"{out} exists: give a new run folder")
    config = json.loads((source / "train_config.json").read_text())
    old_base = config["model"]["canonical"]["channel_base"]
    if channel_base <= old_base:
        raise ValueError(f"channel_base {channel_base} is not wider than the run's {old_base}")
    meta = json.loads((source / "state" / "state.json").read_text())
    config["model"]["canonical"]["channel_base"] = channel_base
    torch.manual_seed(seed)  # the new channels' initial weights
    model = GenDeF(GenDeFConfig.from_dict(config["model"]))
    # the generator optimizer's parameter order: stage 1 the canonical generator's, stage 2 then the fields'
    parts = ("canonical",) if meta["stage"] == 1 else ("canonical", "deformation", "motion")
    names = [f"{p}.{n}" for p in parts for n, _ in getattr(model, p).named_parameters()]
    tensors = widen_state(load_file(source / "state" / "state.safetensors"), model, names)
    # the exported checkpoint is the narrow model until the resumed run saves again
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("checkpoint"))
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / "state" / "state.safetensors")
    (out / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.widen", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder with a saved state (python -m model.train --out)")
    p.add_argument("--out", type=Path, required=True, help="the new run folder; resume it with model.train")
    p.add_argument("--canonical-channel-base", type=int, required=True)
    args = p.parse_args(argv)
    out = widen_run(args.run, args.out, args.canonical_channel_base)
    print(json.dumps({"out": str(out), "canonical_channel_base": args.canonical_channel_base}))


if __name__ == "__main__":
    main()
