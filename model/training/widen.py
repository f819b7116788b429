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
from safetensors.torch import load_file, save_file

from model.config import GenDeFConfig
from model.discriminator import Discriminator
from model.gendef import GenDeF

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
    meta = json.loads((source / "state" / "state.json").read_text())
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
    # the optimizers' parameters by name, in their order before and after: stage 1 trains the canonical
    # generator, stage 2 all of G (in two groups: the canonical generator, then the fields and motion)
    parts = [("canonical",)] if meta["stage"] == 1 else [("canonical",), ("deformation", "motion")]
    groups = {  # each optimizer's parameter names, group by group: (before, after)
        "opt_G": (_groups(old_G, parts), _groups(G, parts)),
        "opt_D": ([[n for n, _ in old_D.named_parameters()]], [[n for n, _ in D.named_parameters()]]),
    }
    orders = {k: tuple([n for g in side for n in g] for side in v) for k, v in groups.items()}
    fresh = {"G": G.state_dict(), "D": D.state_dict()}
    tensors, renamed = load_file(source / "state" / "state.safetensors"), {}
    for key, value in tensors.items():
        prefix, _, name = key.partition(".")
        if prefix in ("G", "G_ema") and name.startswith(("canonical.", "deformation.cond_proj.")):
            gain = _gain(value, fresh["G"][name]) if ".to_rgb." in name else 1.0  # the others demodulate
            value = widen_tensor(value, fresh["G"][name], gain=gain)
        elif prefix == "D":
            like = fresh["D"][name]
            value = widen_tensor(value, like, d_index.get(name, (None, None)), _gain(value, like))
        elif prefix in orders:
            idx, _, field = name.partition(".")
            old_order, new_order = orders[prefix]
            param = old_order[int(idx)]
            like = fresh["G" if prefix == "opt_G" else "D"][param]
            if field in ("exp_avg", "exp_avg_sq") and value.shape != like.shape:
                index = d_index.get(param, (None, None)) if prefix == "opt_D" else (None, None)
                value = widen_tensor(value, torch.zeros_like(like), index)
            key = f"{prefix}.{new_order.index(param)}.{field}"
        renamed[key] = value
    for prefix, model in (("G", "G"), ("G_ema", "G"), ("D", "D")):  # tensors new to the run: their init
        renamed |= {
            f"{prefix}.{n}": v.clone() for n, v in fresh[model].items() if f"{prefix}.{n}" not in renamed
        }
    # the optimizers' parameter groups list their parameters' positions, which new tensors move
    for name, (_, new_groups) in groups.items():
        order = orders[name][1]
        for group, names in zip(meta[name], new_groups, strict=True):
            group["params"] = [order.index(n) for n in names]
    # the exported checkpoint is the old model until the resumed run saves again
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("checkpoint"))
    save_file({k: v.contiguous() for k, v in renamed.items()}, out / "state" / "state.safetensors")
    (out / "state" / "state.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _groups(G: GenDeF, parts: list[tuple[str, ...]]) -> list[list[str]]:
    """The names of G's parameters in each optimizer group (one group per tuple of parts), in their order."""
    return [[f"{p}.{n}" for p in group for n, _ in getattr(G, p).named_parameters()] for group in parts]


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
