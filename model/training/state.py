"""The training state: the one format of a run's ``state/`` folder. The trainer saves and loads it to resume a run
exactly; model.training.widen and model.training.ablation rewrite it through load and save.

``state/state.safetensors`` holds every tensor, by key:

- ``{module}.{name}``: the state_dict of each of MODULES (the generator, its EMA copy, the discriminator);
- ``{optimizer}.{index}.{field}``: the Adam state (``step``, ``exp_avg``, ``exp_avg_sq``) of each of OPTIMIZERS,
  by the position of its parameter in the optimizer's groups (parameter_groups says which parameter that is);
- ``rng``: process 0's random generator state; ``rng.{rank}``: another process's (data-parallel runs).

``state/state.json`` holds ``version`` (VERSION), the COUNTERS, ``last`` (the last logged losses) and each
optimizer's ``param_groups``.

Versions. States saved before the format had a number (read as version 0) hold the same keys, but the oldest
of them lack the convergence counters (``best_fd``, ``stale_checks``, ``fold_checks``) and ``last``: migrate
gives those their starting values. Version 1 writes its number. A change of the format is a new version and a step
in migrate, so every saved state still loads.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.discriminator import Discriminator
from model.gendef import GenDeF

log = logging.getLogger(__name__)

VERSION = 1
MODULES = ("G", "G_ema", "D")
OPTIMIZERS = ("opt_G", "opt_D")
COUNTERS = ("step", "stage", "stage_step", "nimg", "seconds", "best_fd", "stale_checks", "fold_checks")
# what a state saved before these were kept starts them from: no convergence check yet, no logged losses
FIRST_VALUES: dict[str, Any] = {"best_fd": math.inf, "stale_checks": 0, "fold_checks": 0, "last": {}}

Groups = list[list[str]]  # an optimizer's parameter names, group by group


@dataclass
class TrainingState:
    counters: dict[str, Any]  # COUNTERS and "last"
    modules: dict[str, dict[str, torch.Tensor]]  # each of MODULES' state_dict
    # each of OPTIMIZERS' state_dict: {"state": {index: {field: tensor}}, "param_groups": [...]}
    optimizers: dict[str, dict[str, Any]]
    rngs: list[torch.Tensor]  # each process's random generator state, by rank


def generator_parts(stage: int) -> list[tuple[str, ...]]:
    """The generator optimizer's groups, by part of GenDeF: stage 1 trains the canonical generator; stage 2 all of G
    in two groups, each at its own rate (the canonical generator; the deformation generator and motion encoder)."""
    return [("canonical",)] if stage == 1 else [("canonical",), ("deformation", "motion")]


def parameter_groups(
    G: GenDeF, D: Discriminator, stage: int
) -> dict[str, list[list[tuple[str, torch.nn.Parameter]]]]:
    """Each optimizer's parameters in a stage, group by group, named as in their module's state_dict: what an
    optimizer's parameter positions stand for."""
    generator = [
        [(f"{part}.{n}", p) for part in parts for n, p in getattr(G, part).named_parameters()]
        for parts in generator_parts(stage)
    ]
    return {"opt_G": generator, "opt_D": [list(D.named_parameters())]}


def parameter_names(G: GenDeF, D: Discriminator, stage: int) -> dict[str, Groups]:
    return {k: [[n for n, _ in group] for group in v] for k, v in parameter_groups(G, D, stage).items()}


def moments_by_name(optimizer: dict[str, Any], names: Groups) -> dict[str, dict[str, torch.Tensor]]:
    """An optimizer state_dict's per-parameter state, keyed by parameter name instead of position."""
    order = [n for group in names for n in group]
    return {order[index]: fields for index, fields in optimizer["state"].items()}


def moments_by_position(
    moments: dict[str, dict[str, torch.Tensor]], names: Groups, param_groups: list[dict[str, Any]]
) -> dict[str, Any]:
    """The inverse of moments_by_name for the groups names (which may list new parameters: they have no state):
    an optimizer state_dict, param_groups' settings kept and their positions renumbered."""
    order = [n for group in names for n in group]
    groups = [
        g | {"params": [order.index(n) for n in group]} for g, group in zip(param_groups, names, strict=True)
    ]
    return {"state": {order.index(n): fields for n, fields in moments.items()}, "param_groups": groups}


def save(state: TrainingState, directory: Path) -> None:
    """Write the state to directory atomically: a new folder swapped in for the old one."""
    tensors: dict[str, torch.Tensor] = {"rng": state.rngs[0]} | {
        f"rng.{r}": s for r, s in enumerate(state.rngs) if r
    }
    meta: dict[str, Any] = {"version": VERSION} | state.counters
    for name in MODULES:
        tensors |= {f"{name}.{k}": v for k, v in state.modules[name].items()}
    for name in OPTIMIZERS:
        optimizer = state.optimizers[name]
        meta[name] = optimizer["param_groups"]
        for index, fields in optimizer["state"].items():
            tensors |= {f"{name}.{index}.{k}": v for k, v in fields.items()}
    tmp, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / "state.safetensors")
    (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load(directory: Path) -> TrainingState:
    """Read the state saved in directory, of any version."""
    if not (directory / "state.json").is_file():
        raise FileNotFoundError(f"nothing to resume: {directory} has no saved training state")
    meta = migrate(json.loads((directory / "state.json").read_text()))
    tensors = load_file(directory / "state.safetensors")
    rngs = [tensors["rng"]]
    while f"rng.{len(rngs)}" in tensors:
        rngs.append(tensors[f"rng.{len(rngs)}"])
    modules = {name: _under(tensors, name) for name in MODULES}
    optimizers = {}
    for name in OPTIMIZERS:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in _under(tensors, name).items():
            index, field = key.split(".", 1)
            state.setdefault(int(index), {})[field] = value
        optimizers[name] = {"state": state, "param_groups": meta[name]}
    counters = {k: meta[k] for k in (*COUNTERS, "last")}
    return TrainingState(counters, modules, optimizers, rngs)


def migrate(meta: dict[str, Any]) -> dict[str, Any]:
    """state.json of any version -> this version's."""
    if meta.get("version", 0) > VERSION:
        raise ValueError(
            f"a training state of version {meta['version']}: this code reads versions up to {VERSION}"
        )
    if meta.get("version", 0) == 0:
        meta = FIRST_VALUES | meta | {"version": 1}
    return meta


def add_frame_differences(state: TrainingState, D: Discriminator) -> None:
    """A discriminator with frame differences (discriminator.frame_diff) resuming a state saved without them: the
    new input starts at zero weight, so the discriminator first computes what was saved and learns to use the
    differences from there. Its parameters follow the saved ones, so they join the optimizer's last group."""
    weights = state.modules["D"]
    if D.from_diff is None or "from_diff.weight" in weights:
        return
    log.info("the discriminator gains its frame-difference input (zero weights)")
    weights["from_diff.weight"] = torch.zeros_like(D.from_diff.weight)
    groups = state.optimizers["opt_D"]["param_groups"]
    saved = sum(len(g["params"]) for g in groups)
    groups[-1]["params"] += list(range(saved, len(list(D.parameters()))))


def _under(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
