"""Widening a saved run's canonical generator and discriminator, or giving it class labels: the same networks to
float rounding, then they train on."""

import json

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.training.train import TrainConfig, Trainer
from model.training.widen import main as widen_main
from model.training.widen import widen_run
from tests.model.training.test_train import CARPHONE, enter_stage2


def saved_run(tmp_path, stage: int, data: str = CARPHONE):
    """A run folder saved after 2 image steps (stage 1) or 2 more video steps (stage 2)."""
    config = TrainConfig(model="tiny", data=data, batch=4, stage1_steps=2, stage2_steps=2,
                         canonical_freeze_steps=0, device="cpu")  # fmt: skip
    run = tmp_path / "run"
    trainer = Trainer(config, run)
    for _ in range(2):
        trainer.train_step()
    if stage == 2:
        enter_stage2(trainer)
        for _ in range(2):
            trainer.train_step()
    trainer.save_config()
    trainer.save_state()
    return run


def outputs(run):
    model = load_checkpoint(run / "checkpoint")
    sample = model.sample([1, 2], [3, 4], num_frames=4)
    return model, sample


def logits(trainer: Trainer) -> list[torch.Tensor]:
    """The discriminator's logits for fixed single images and 3-frame clips (the temporal shift at work)."""
    gen = torch.Generator().manual_seed(5)
    images, clips = torch.rand(4, 1, 3, 32, 32, generator=gen), torch.rand(4, 3, 3, 32, 32, generator=gen)
    times = torch.tensor([[0.0, 3.0, 7.0]]).expand(4, -1)
    labels = trainer.G.canonical.random_labels(4, gen)  # None for an unconditional run
    with torch.no_grad():
        return [trainer.D(images * 2 - 1, times[:, :1], labels), trainer.D(clips * 2 - 1, times, labels)]


def resume(run) -> Trainer:
    return Trainer(TrainConfig(**json.loads((run / "train_config.json").read_text())), run, resume=True)


# saved in stage 1 the generator optimizer holds the canonical generator; in stage 2 all of G
@pytest.mark.parametrize("stage", [1, 2])
def test_a_widened_run_computes_what_it_did_and_trains_its_new_channels(tmp_path, stage):
    run = saved_run(tmp_path, stage)
    narrow, before = outputs(run)
    before_logits = logits(resume(run))
    # tiny: 256 each, so the canonical generator's 16x16 and 32x32 layers double, and the discriminator's
    wide_run = widen_run(run, tmp_path / "wide", canonical_channel_base=512, discriminator_channel_base=512)
    trainer = resume(wide_run)
    trainer.export()
    wide, after = outputs(wide_run)

    def size(module):
        return sum(p.numel() for p in module.parameters())

    assert size(wide.canonical) > size(narrow.canonical)
    assert trainer.D.from_rgb.weight.shape[0] == 2 * resume(run).D.from_rgb.weight.shape[0]
    for field in ("canonical", "fields", "frames"):
        torch.testing.assert_close(getattr(after, field), getattr(before, field), rtol=0, atol=1e-5)
    for b, a in zip(before_logits, logits(trainer), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    new_out = trainer.G.canonical.to_rgb[-1].conv.weight[:, narrow.canonical.feature_channels :].clone()
    assert torch.equal(new_out, torch.zeros_like(new_out))  # no use yet...
    trainer.train_step()
    assert trainer.G.canonical.to_rgb[-1].conv.weight[:, narrow.canonical.feature_channels :].abs().sum() > 0


@pytest.mark.parametrize("stage", [1, 2])
def test_a_run_given_labels_computes_what_it_did_then_learns_them(tmp_path, stage):
    run = saved_run(tmp_path, stage, data="mnist")
    _, before = outputs(run)
    before_logits = logits(resume(run))
    trainer = resume(widen_run(run, tmp_path / "labelled", classes=(10, 2)))
    trainer.export()
    model, after = outputs(tmp_path / "labelled")
    assert model.labels([1]).sum() == 2
    for field in ("canonical", "fields", "frames"):
        torch.testing.assert_close(getattr(after, field), getattr(before, field), rtol=0, atol=1e-5)
    for b, a in zip(before_logits, logits(trainer), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    step = trainer.step
    trainer.train_step()  # the optimizers' states were moved to the parameters' new positions
    assert trainer.step == step + 1
    assert (
        trainer.G.canonical.mapping.embed.weight.abs().sum() > 0
        and trainer.D.label_embed.weight.abs().sum() > 0
    )
    with pytest.raises(ValueError, match="already conditioned"):
        widen_run(tmp_path / "labelled", tmp_path / "again", classes=(10, 2))


def test_widening_refuses_a_narrower_width_and_an_existing_folder(tmp_path, capsys):
    run = saved_run(tmp_path, 1)
    with pytest.raises(ValueError, match="not wider"):
        widen_run(run, tmp_path / "wide", canonical_channel_base=128)
    widen_main([str(run), "--out", str(tmp_path / "wide"), "--discriminator-channel-base", "512"])
    assert json.loads(capsys.readouterr().out)["discriminator_channel_base"] == 512
    with pytest.raises(FileExistsError):
        widen_run(run, tmp_path / "wide", canonical_channel_base=512)
