"""The training-state format (model.training.state): the version it writes, states saved before the version existed
(they resume exactly), and the widening of a saved run through it."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import save_file

from model.training import state
from model.training.train import Trainer
from model.training.widen import widen_run
from tests.model.training.test_train import tiny_config
from tests.model.training.test_widen import resume, saved_run


def write_unversioned(trainer: Trainer, directory, oldest: bool = False) -> None:
    """The state as the trainer wrote it before the format had a version, key by key (written here, apart from
    model.training.state, so that a change there cannot hide a change of what old states hold). oldest: as the
    first of them, before the convergence counters and the last losses were kept."""
    tensors = {"rng": trainer.rng.get_state()}
    meta = {k: getattr(trainer, k) for k in ("step", "stage", "stage_step", "nimg", "seconds")}
    if not oldest:
        meta |= {"best_fd": trainer.convergence.best_fd, "stale_checks": trainer.convergence.stale_checks}
        meta |= {"fold_checks": trainer.folds.fold_checks, "last": trainer.last}
    for name in ("G", "G_ema", "D"):
        tensors |= {f"{name}.{k}": v for k, v in getattr(trainer, name).state_dict().items()}
    for name in ("opt_G", "opt_D"):
        saved = getattr(trainer, name).state_dict()
        meta[name] = saved["param_groups"]
        for idx, fields in saved["state"].items():
            tensors |= {f"{name}.{idx}.{k}": v for k, v in fields.items()}
    directory.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, directory / "state.safetensors")
    (directory / "state.json").write_text(json.dumps(meta, indent=2) + "\n")


def trained(run_dir, **overrides) -> Trainer:
    """tiny, after its stage-1 steps and the first stage-2 step, its state saved (versioned) in run_dir."""
    trainer = Trainer(tiny_config(stage2_steps=1, **overrides), run_dir)
    trainer.run()
    return trainer


def assert_same_training(a: Trainer, b: Trainer) -> None:
    for name in ("G", "G_ema", "D"):
        x, y = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert all(torch.equal(x[k], y[k]) for k in x), name
    for name in ("opt_G", "opt_D"):
        x, y = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        as_saved = [json.loads(json.dumps(g["param_groups"])) for g in (x, y)]  # betas: a tuple or a list
        assert as_saved[0] == as_saved[1], name
        assert all(torch.equal(v, y["state"][i][f]) for i, s in x["state"].items() for f, v in s.items()), (
            name
        )
    assert torch.equal(a.rng.get_state(), b.rng.get_state())
    assert (a.step, a.stage, a.stage_step, a.nimg) == (b.step, b.stage, b.stage_step, b.nimg)


def test_a_saved_state_records_its_format_version_and_loads_what_was_saved(tmp_path):
    trainer = trained(tmp_path)
    meta = json.loads((tmp_path / "state" / "state.json").read_text())
    assert meta["version"] == state.VERSION == 1
    loaded = Trainer(tiny_config(), tmp_path, resume=True)
    assert_same_training(trainer, loaded)
    assert loaded.last == trainer.last and loaded.convergence == trainer.convergence


@pytest.mark.parametrize("oldest", [False, True])
def test_an_unversioned_state_resumes_exactly_as_the_versioned_one(tmp_path, oldest):
    trainer = trained(tmp_path / "new")
    shutil.copytree(tmp_path / "new", tmp_path / "old", ignore=shutil.ignore_patterns("state"))
    write_unversioned(trainer, tmp_path / "old" / "state", oldest)
    new, old = (Trainer(tiny_config(stage2_steps=3), tmp_path / n, resume=True) for n in ("new", "old"))
    assert_same_training(new, old)
    if oldest:  # counters kept since start from their first values
        assert old.convergence.best_fd == math.inf and old.folds.fold_checks == 0 and old.last == {}
    else:
        assert old.last == new.last and old.convergence == new.convergence
    new.run()
    old.run()
    assert_same_training(new, old)
    assert json.loads((tmp_path / "old" / "state" / "state.json").read_text())["version"] == state.VERSION


def test_a_state_of_a_later_version_is_refused_with_the_versions_named(tmp_path):
    trained(tmp_path)
    path = tmp_path / "state" / "state.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"version": state.VERSION + 1}))
    with pytest.raises(ValueError, match=f"version {state.VERSION + 1}.*up to {state.VERSION}"):
        state.load(tmp_path / "state")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        state.load(tmp_path / "elsewhere")


@pytest.mark.parametrize("stage", [1, 2])
def test_widening_moves_each_parameters_moments_to_its_new_position(tmp_path, stage):
    run = saved_run(tmp_path, stage)
    before = state.load(run / "state")
    wide = state.load(widen_run(run, tmp_path / "wide", canonical_channel_base=512) / "state")
    narrow_model, wide_model = resume(run), resume(tmp_path / "wide")
    for optimizer in state.OPTIMIZERS:
        old = state.moments_by_name(
            before.optimizers[optimizer],
            state.parameter_names(narrow_model.G, narrow_model.D, stage)[optimizer],
        )
        new = state.moments_by_name(
            wide.optimizers[optimizer], state.parameter_names(wide_model.G, wide_model.D, stage)[optimizer]
        )
        assert old.keys() == new.keys()
        for name, fields in old.items():
            for field, value in fields.items():  # the old moments where the old weights went (leading here)
                assert torch.equal(new[name][field][tuple(slice(0, n) for n in value.shape)], value), (
                    name,
                    field,
                )
    assert before.counters == wide.counters and all(
        torch.equal(a, b) for a, b in zip(before.rngs, wide.rngs, strict=True)
    )


def test_widening_an_unversioned_state(tmp_path):
    run = saved_run(tmp_path, 2)
    trainer = resume(run)
    shutil.rmtree(run / "state")
    write_unversioned(trainer, run / "state")
    widened = resume(widen_run(run, tmp_path / "wide", discriminator_channel_base=512))
    assert (
        widened.step == trainer.step
        and widened.D.from_rgb.weight.shape[0] == 2 * trainer.D.from_rgb.weight.shape[0]
    )
    widened.train_step()
