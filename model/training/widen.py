"""Widen the canonical generator or the discriminator of a saved run, or give both class labels, without changing
what they compute (``python -m model.training.widen``).

A new run folder is written beside the saved one: the same state (fields, motion, optimizers, counters,
metrics.csv) with a larger ``channel_base`` for the canonical generator and/or the discriminator, so the run
resumes with more channels at the resolutions the old width capped (``channels(res) = min(channel_max,
channel_base // res)``) and keeps every step it had. As in Net2Net with zero fan-in: every new channel gets fresh
initial weights into it and zero weights out of it, so the widened networks compute what they did, to float
rounding, until training gives the new channels a use.

- Equalized learning rate scales a weight by 1/sqrt(fan-in), which widening lowers. A modulated convolution's
  demodulation divides that gain out, so its weights carry over as they are; every other weight (the canonical
  generator's RGB skips, every discriminator convolution) is scaled by sqrt(new fan-in / old fan-in).
- The discriminator's temporal shift moves its first 1/8 of the channels from the previous frame and the next
  1/8 from the next frame (model.discriminator.temporal_shift). Widening moves those boundaries, so the old
  channels are laid out in the wider tensors where the same shift moves the same channels.
- The optimizers' moments of a widened tensor are its old moments where the old weights went, zero elsewhere.
- ``classes``: an unconditional run becomes a conditional one (model.config.CanonicalConfig.classes): the label
  embeddings of the mapping and of the discriminator's projection are new tensors that start at zero, so the run
  first computes what it did and learns to use the labels as it trains. Their optimizer state starts empty.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from model.config import GenDeFConfig
from model.discriminator import Discriminator
from model.gendef import GenDeF
from model.training import state

Index = tuple[torch.Tensor | None, torch.Tensor | None]  # where a tensor's old outputs and old inputs go


def widen_tensor(
    old: torch.Tensor, fresh: torch.Tensor, index: Index = (None, None), gain: float = 1.0
) -> torch.Tensor:
    """The wider tensor (fresh's shape, fresh's initial values for new outputs) that computes what old did: old
    (times gain) at index (per dimension, out and in; None: the leading positions), zero from new inputs."""
    if fresh.shape == old.shape and index[0] is None and index[1] is None:
        return old
    if old.dim() != fresh.dim() or any(o > f for o, f in zip(old.shape, fresh.shape, strict=True)):
        raise ValueError(f"cannot widen {tuple(old.shape)} to {tuple(fresh.shape)}")
    out_index = torch.arange(old.shape[0]) if index[0] is None else index[0]
    new = fresh.clone()
    if old.dim() == 1:
        new[out_index] = old
        return new
    in_index = torch.arange(old.shape[1]) if index[1] is None else index[1]
    new_inputs = torch.ones(fresh.shape[1], dtype=torch.bool)
    new_inputs[in_index] = False
    new[:, new_inputs] = 0
    new[out_index[:, None], in_index[None, :]] = old * gain
    return new


def shift_order(old: int, new: int) -> torch.Tensor:
    """Where each of old channels goes among new, so that the temporal shift moves the same channels."""
    j, k, k_new = torch.arange(old), old // 8, new // 8
    return torch.where(j < k, j, torch.where(j < 2 * k, j - k + k_new, j - 2 * k + 2 * k_new))


def discriminator_index(old: Discriminator, new: Discriminator) -> dict[str, Index]:
    """The layout of the old channels in the wider discriminator's tensors, by parameter name (others: leading)."""
    blocks = len(old.frame_blocks)
    if not old.cfg.temporal_shift or blocks == 0:
        return {}

    def shifted(i: int) -> torch.Tensor:  # the channels that enter frame block i, which shifts them
        return shift_order(
            old.frame_blocks[i].conv0.weight.shape[1], new.frame_blocks[i].conv0.weight.shape[1]
        )

    index: dict[str, Index] = {
        "from_rgb.weight": (shifted(0), None),
        "from_rgb.bias": (shifted(0), None),
        "from_diff.weight": (shifted(0), None),
    }
    for i in range(blocks):
        out = shifted(i + 1) if i + 1 < blocks else None
        index[f"frame_blocks.{i}.conv0.weight"] = (None, shifted(i))
        index[f"frame_blocks.{i}.skip.weight"] = (out, shifted(i))
        index[f"frame_blocks.{i}.conv1.weight"] = (out, None)
        index[f"frame_blocks.{i}.conv1.bias"] = (out, None)
    return index


def widen_run(
    source: Path,
    out: Path,
    canonical_channel_base: int | None = None,
    discriminator_channel_base: int | None = None,
    seed: int = 0,
    classes: tuple[int, int] | None = None,
) -> Path:
    """Write out/ (a new run folder) from the saved run source/ with the wider channel_base(s) given and, with
    classes = (classes, labels_per_image), conditioned on class labels."""
    if out.exists():
        raise FileExistsError(f"{out} exists: give a new run folder")
    config = json.loads((source / "train_config.json").read_text())
    old_cfg = GenDeFConfig.from_dict(config["model"])
    for part, base in (("canonical", canonical_channel_base), ("discriminator", discriminator_channel_base)):
        if base is not None:
            if base <= config["model"][part]["channel_base"]:
                raise ValueError(
                    f"{part} channel_base {base} is not wider than the run's {config['model'][part]['channel_base']}"
                )
            config["model"][part]["channel_base"] = base
    if classes is not None:
        if old_cfg.canonical.classes:
            raise ValueError(f"the run is already conditioned on {old_cfg.canonical.classes} classes")
        config["model"]["canonical"] |= {"classes": classes[0], "labels_per_image": classes[1]}
    new_cfg = GenDeFConfig.from_dict(config["model"])
    saved = state.load(source / "state")
    frames = config.get("frames_per_clip", 3)
    torch.manual_seed(seed)  # the new channels' initial weights
    G = GenDeF(new_cfg)
    D = Discriminator(new_cfg.discriminator, new_cfg.resolution, frames, new_cfg.canonical.classes)
    old_G = GenDeF(old_cfg)
    old_D = Discriminator(old_cfg.discriminator, old_cfg.resolution, frames, old_cfg.canonical.classes)
    if D.fc.weight.shape != old_D.fc.weight.shape:
        raise ValueError(
            "this would widen the discriminator's 4x4 layers (its channel_base / 4 is below its channel_max), "
            "which model.training.widen does not do"
        )
    d_index = discriminator_index(old_D, D)
    fresh = {"G": G.state_dict(), "G_ema": G.state_dict(), "D": D.state_dict()}

    def widened(module: str, name: str, value: torch.Tensor) -> torch.Tensor:
        like = fresh[module][name]
        if module == "D":
            return widen_tensor(value, like, d_index.get(name, (None, None)), _gain(value, like))
        if name.startswith(("canonical.", "deformation.cond_proj.")):
            gain = _gain(value, like) if ".to_rgb." in name else 1.0  # the others demodulate
            return widen_tensor(value, like, gain=gain)
        return value

    for module in state.MODULES:  # tensors new to the run take their initial values
        weights = {k: widened(module, k, v) for k, v in saved.modules[module].items()}
        saved.modules[module] = weights | {k: v.clone() for k, v in fresh[module].items() if k not in weights}
    # the optimizers' moments by parameter name: a widened tensor's are its old moments where the old weights went
    stage = saved.counters["stage"]
    old_names, new_names = state.parameter_names(old_G, old_D, stage), state.parameter_names(G, D, stage)
    for optimizer, module in (("opt_G", "G"), ("opt_D", "D")):
        moments = state.moments_by_name(saved.optimizers[optimizer], old_names[optimizer])
        for name, fields in moments.items():
            like = fresh[module][name]
            index = d_index.get(name, (None, None)) if module == "D" else (None, None)
            for field in ("exp_avg", "exp_avg_sq"):
                if fields[field].shape != like.shape:
                    fields[field] = widen_tensor(fields[field], torch.zeros_like(like), index)
        param_groups = saved.optimizers[optimizer]["param_groups"]
        saved.optimizers[optimizer] = state.moments_by_position(moments, new_names[optimizer], param_groups)
    # the exported checkpoint is the old model until the resumed run saves again
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("checkpoint"))
    state.save(saved, out / "state")
    (out / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _gain(old: torch.Tensor, fresh: torch.Tensor) -> float:
    """An equalized-learning-rate weight (out, in, ...) keeps its effective value: sqrt(new fan-in / old)."""
    return math.sqrt(fresh.shape[1] / old.shape[1]) if old.dim() > 1 else 1.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.training.widen", description=__doc__.splitlines()[0])
    p.add_argument(
        "run", type=Path, help="a run folder with a saved state (python -m model.training.train --out)"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="the new run folder; resume it with model.training.train"
    )
    p.add_argument("--canonical-channel-base", type=int)
    p.add_argument("--discriminator-channel-base", type=int)
    p.add_argument(
        "--classes", type=int, help="condition the run on this many class labels (Moving MNIST: 10)"
    )
    p.add_argument("--labels-per-image", type=int, default=2, help="with --classes (default 2: two digits)")
    args = p.parse_args(argv)
    if (
        args.canonical_channel_base is None
        and args.discriminator_channel_base is None
        and args.classes is None
    ):
        p.error("give --canonical-channel-base, --discriminator-channel-base, --classes or several")
    classes = None if args.classes is None else (args.classes, args.labels_per_image)
    out = widen_run(
        args.run, args.out, args.canonical_channel_base, args.discriminator_channel_base, 0, classes
    )
    report: dict[str, Any] = {"out": str(out)}
    report |= {
        k: v for k, v in vars(args).items() if k.endswith(("channel_base", "classes")) and v is not None
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
