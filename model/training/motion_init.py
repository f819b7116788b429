"""Where stage 2's motion starts: the identity warp (the deformation generator and motion encoder as initialised)
or the motion of another checkpoint (``motion_init``), whose content does not come with it."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint
from model.config import GenDeFConfig
from model.gendef import GenDeF

log = logging.getLogger(__name__)

MOTION_PARTS = ("deformation", "motion")
# tensors of the motion parts whose shapes follow the canonical generator: the projections of the canonical
# features (their shape follows its width at full resolution) and the first layer of the deformation mapping
# (which takes its z)
FOLLOW_CANONICAL = ("cond_proj.", "mapping.layers.0.")


def reset_motion(generators: tuple[GenDeF, ...], config: GenDeFConfig, seed: int) -> None:
    """Give the generators' motion parts the initial weights of a run of config and seed: the identity warp."""
    torch.manual_seed(seed)  # the weights a run of this config starts from
    fresh = GenDeF(config)
    for G in generators:
        for part in MOTION_PARTS:
            getattr(G, part).load_state_dict(getattr(fresh, part).state_dict())


def transplant_motion(path: Path, generators: tuple[GenDeF, ...]) -> None:
    """Copy the deformation generator and the motion encoder of the checkpoint at path into the generators. The
    tensors that follow the canonical generator (FOLLOW_CANONICAL), which the donor does not lend, keep the
    generators' own weights where their shapes differ from the donor's; every other tensor must fit."""
    source = load_checkpoint(path)
    for part in MOTION_PARTS:
        weights = getattr(source, part).state_dict()
        own = getattr(generators[0], part).state_dict()
        other = {
            k
            for k, v in own.items()
            if k.startswith(FOLLOW_CANONICAL) and k in weights and v.shape != weights[k].shape
        }
        if other:
            log.info("motion_init: %s keep this run's init (another canonical generator)", sorted(other))
        for G in generators:
            mine = getattr(G, part).state_dict()
            try:
                getattr(G, part).load_state_dict(weights | {k: mine[k] for k in other})
            except RuntimeError as e:
                raise ValueError(
                    f"motion_init {path}: its {part} does not fit this run's model config; use a checkpoint "
                    f"of the same preset ({str(e).splitlines()[0]})"
                ) from None
    log.info("stage 2 starts from the deformation generator and motion encoder of %s", path)
