"""One training step: an optimizer step of the discriminator, then of the generator, each over ``accum``
micro-batches, then the EMA.

Both stages: non-saturating logistic loss, lazy R1 (a mean over frames), the same augmentation on every frame of a
clip. Stage 2 adds the field regularisers and keeps a single-image adversarial term on the canonical images
(``image_weight``) so that the canonical generator stays an image generator; its canonical generator is frozen at
its EMA weights for its first ``canonical_freeze_steps`` steps. A conditional model's discriminator also reads
labels (AC-GAN, ``label_weight``): real images' in its half, the canonical images' in the generator's half.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from model.discriminator import Discriminator
from model.gendef import GenDeF
from model.training import distributed
from model.training.config import TrainConfig
from model.training.draws import Draws, regulariser_weights
from model.training.losses import discriminator_loss, generator_loss, label_loss, r1_penalty

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
METRICS = [*LOSSES, "logit_real", "logit_fake"]  # what a step reports


class Step:
    def __init__(
        self, cfg: TrainConfig, G: GenDeF, G_ema: GenDeF, D: Discriminator, draws: Draws, amp: bool
    ) -> None:
        self.cfg, self.G, self.G_ema, self.D, self.draws, self.amp = cfg, G, G_ema, D, draws, amp

    def __call__(
        self,
        opt_G: torch.optim.Optimizer,
        opt_D: torch.optim.Optimizer,
        stage: int,
        stage_step: int,
        step: int,
        nimg: int,
    ) -> dict[str, float]:
        """The losses and logits of the step on this process, each a mean over its micro-batches: step is the
        run's step, stage_step its stage's, nimg the images seen before it."""
        cfg = self.cfg
        do_r1 = self.r1_due(step)
        # frozen at its EMA weights: the fields learn to move the images the exported model makes, and the EMA
        # does not drift back to the raw weights
        frozen = stage == 2 and stage_step < cfg.canonical_freeze_steps
        sums = self.discriminator(opt_D, stage, do_r1) | self.generator(opt_G, stage, frozen)
        self.update_ema(nimg)
        return {k: sums[k] / cfg.accum for k in METRICS}

    def r1_due(self, step: int) -> bool:
        """Lazy R1: computed at every r1_every-th step."""
        return self.cfg.r1_gamma > 0 and step % self.cfg.r1_every == 0

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.draws.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def discriminator(self, opt: torch.optim.Optimizer, stage: int, do_r1: bool) -> dict[str, float]:
        cfg, draws = self.cfg, self.draws
        image_term = stage == 2 and cfg.image_weight > 0
        frames = 1 if stage == 1 else cfg.frames_per_clip
        sums = dict.fromkeys(("loss_d", "label_d", "r1", "logit_real", "logit_fake"), 0.0)
        zero = torch.zeros((), device=draws.device)
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        for _ in range(cfg.accum):
            real, t_real, c_real = draws.real(frames)  # (B, F, 3, H, W), (B, F), (B, classes) or None
            with torch.no_grad(), self.autocast():
                fake = draws.fake(stage, with_reg=False)
            real_aug = draws.augment(real)
            real_aug.requires_grad_(do_r1)
            with self.autocast():
                logit_real, label_d = self.judge(real_aug, t_real, c_real)  # (B,), its label head's loss
                logit_fake = self.D(draws.augment(fake.clips), fake.times, fake.labels)  # (B,)
                loss_d = discriminator_loss(logit_real, logit_fake)
                r1 = r1_penalty(logit_real, real_aug) if do_r1 else zero
                if image_term:  # real single frames against canonical images
                    real_image, _ = self.judge_images(real[:, 0], c_real, read=False)
                    fake_image, _ = self.judge_images(fake.canonical, fake.labels, read=False)
                    loss_d = loss_d + cfg.image_weight * discriminator_loss(real_image, fake_image)
            (
                (loss_d + cfg.label_weight * label_d + r1 * (cfg.r1_gamma / 2 * cfg.r1_every)) / cfg.accum
            ).backward()
            for k, v in (
                ("loss_d", loss_d),
                ("label_d", label_d),
                ("r1", r1),
                ("logit_real", logit_real),
                ("logit_fake", logit_fake),
            ):
                sums[k] += v.float().mean().item()
        distributed.average_grads(self.D)
        opt.step()
        return sums

    def generator(self, opt: torch.optim.Optimizer, stage: int, frozen: bool) -> dict[str, float]:
        cfg, draws = self.cfg, self.draws
        image_term = stage == 2 and cfg.image_weight > 0 and not frozen
        sums = dict.fromkeys(("loss_g", "loss_img", "label_g", *regulariser_weights(cfg)), 0.0)
        zero = torch.zeros((), device=draws.device)
        self.D.requires_grad_(False)
        self.G.requires_grad_(True)
        if frozen:
            self.G.canonical.load_state_dict(self.G_ema.canonical.state_dict())
            self.G.canonical.requires_grad_(False)
        opt.zero_grad(set_to_none=True)
        weights = regulariser_weights(cfg)
        for _ in range(cfg.accum):
            with self.autocast():
                fake = draws.fake(stage, with_reg=stage == 2)
                # stage 1's clips are the canonical images: the label head reads them; stage 2's, the image term
                logits, label_g = self.judge(
                    draws.augment(fake.clips), fake.times, fake.labels, read=stage == 1
                )
                loss_g, loss_img = generator_loss(logits), zero
                if image_term:
                    logits, label_g = self.judge_images(fake.canonical, fake.labels)
                    loss_img, label_g = generator_loss(logits), label_g * cfg.image_weight
            total = loss_g + cfg.image_weight * loss_img + cfg.label_weight * label_g
            total = total + sum(weights[k] * v for k, v in fake.reg.items())
            (total / cfg.accum).backward()
            for k, v in (("loss_g", loss_g), ("loss_img", loss_img), ("label_g", label_g), *fake.reg.items()):
                sums[k] += v.item()
        distributed.average_grads(self.G)
        opt.step()
        return sums

    def judge(
        self, clips: torch.Tensor, times: torch.Tensor, labels: torch.Tensor | None, read: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's logits (B,) for clips and, for a conditional model asked to read them (label_weight
        > 0), the loss of its label head against labels; else 0."""
        if labels is None or not read or self.cfg.label_weight <= 0:
            return self.D(clips, times, labels), torch.zeros((), device=self.draws.device)
        logits, label_logits = self.D(clips, times, labels, classify=True)
        return logits, label_loss(label_logits, labels)

    def judge_images(
        self, images: torch.Tensor, labels: torch.Tensor | None, read: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """judge on single images (B, 3, H, W), augmented, as clips of one frame at time 0 (stage 2's image term)."""
        still = torch.zeros(images.shape[0], 1, device=self.draws.device)
        return self.judge(self.draws.augment(images[:, None]), still, labels, read)

    @torch.no_grad()
    def update_ema(self, nimg: int) -> None:
        """G_ema moves toward G with a half-life of ema_kimg thousand images, shorter early on (ema_rampup)."""
        half_life = min(self.cfg.ema_kimg * 1000, max(nimg, 1) * self.cfg.ema_rampup)  # in images
        beta = 0.5 ** (self.cfg.batch / half_life)
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.lerp_(p, 1 - beta)
