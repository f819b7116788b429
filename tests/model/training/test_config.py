"""The training command line: one option per TrainConfig field, with its default in --help."""

import dataclasses

from model.training.config import TrainConfig, parser


def test_every_training_setting_is_an_option_whose_help_shows_its_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option in --help
    p = parser()
    text = p.format_help()
    for f in dataclasses.fields(TrainConfig):
        if f.name != "model":  # --preset or --config
            flag = "--" + f.name.replace("_", "-")
            assert flag in text and f"(default: {f.default})" in text, flag
    args = p.parse_args(
        ["--out", "run", "--amp", "false", "--minutes", "1.5", "--motion-init", "ckpt", "--g-lr", "1e-3"]
    )
    assert (args.amp, args.minutes, args.motion_init, args.g_lr) == (False, 1.5, "ckpt", 0.001)
    assert not hasattr(args, "batch")  # not given: the saved or default config's value stands
    assert "2 % better" in text
