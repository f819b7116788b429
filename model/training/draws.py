"""The random draws of a training step, all from the run's one RNG stream (so a resumed run draws what it would
have): real clips, the generator's fakes (with stage 2's field regularisers) and the augmentations."""

from __future__ import annotations

from typing import NamedTuple

import torch

from model.config import GenDeFConfig
from model.data import MovingMNIST, VideoClips, sample_offsets
from model.discriminator import augment
from model.fields import distortion, edge_aware_smoothness, fold_hinge
from model.gendef import GenDeF
from model.training.config import TrainConfig
from model.training.losses import acceleration, off_canvas_hinge, offset_magnitude, offset_smoothness
from model.warp import warp


class Fakes(NamedTuple):
    clips: torch.Tensor  # (B, F, 3, H, W): stage 1's are the canonical images
    times: torch.Tensor  # (B, F)
    canonical: torch.Tensor  # (B, 3, H, W)
    labels: torch.Tensor | None  # (B, classes) for a conditional model
    reg: dict[str, torch.Tensor]  # the unweighted field regularisers, when asked for (stage 2)


def regulariser_weights(cfg: TrainConfig) -> dict[str, float]:
    """The weight of each of Fakes.reg's terms."""
    return {
        "smooth": cfg.smooth_weight,
        "offset": cfg.offset_weight,
        "off_canvas_loss": cfg.off_canvas_weight,
        "offset_smooth": cfg.offset_smooth_weight,
        "fold_loss": cfg.fold_weight,
        "distortion": cfg.distortion_weight,
        "accel": cfg.accel_weight,
    }


def require_labels(model_cfg: GenDeFConfig, data: VideoClips | MovingMNIST) -> None:
    """A conditional model draws labels and reads real ones: it trains on labelled data, whose labels it takes."""
    labels = (model_cfg.canonical.classes, model_cfg.canonical.labels_per_image)
    mnist = (MovingMNIST.CLASSES, data.digits) if isinstance(data, MovingMNIST) else None
    if labels[0] and labels != mnist:
        raise ValueError(
            f"a conditional model (canonical.classes {labels[0]}, labels_per_image {labels[1]}) trains on "
            f"labelled data: Moving MNIST (--data mnist) with classes {MovingMNIST.CLASSES} and "
            "labels_per_image 2 (its two digits)"
        )


class Draws:
    def __init__(
        self,
        cfg: TrainConfig,
        data: VideoClips | MovingMNIST,
        G: GenDeF,
        batch: int,
        rng: torch.Generator,
        device: torch.device,
    ) -> None:
        self.cfg, self.data, self.G, self.batch, self.rng, self.device = cfg, data, G, batch, rng, device

    def augment(self, clips: torch.Tensor) -> torch.Tensor:
        """The same augmentation on every frame of each clip (B, F, 3, H, W)."""
        return augment(clips, self.cfg.aug_p, self.rng)

    def real(self, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Real clips (B, F, 3, H, W), their times (B, F) and, for a conditional model, their labels (B, classes)."""
        args = (self.batch, frames, self.cfg.max_gap, self.rng)
        if self.G.canonical.classes:
            real, times, labels = self.data.sample_labelled(*args)
            return real.to(self.device), times.to(self.device), labels.to(self.device)
        real, times = self.data.sample(*args)
        return real.to(self.device), times.to(self.device), None

    def fake(self, stage: int, with_reg: bool) -> Fakes:
        """The generator's clips: single canonical images in stage 1, sparse clips in stage 2 (with the field
        regularisers if with_reg; see model.training.losses)."""
        B, G, dev, cfg = self.batch, self.G, self.device, self.cfg
        z = torch.randn(B, G.canonical.z_dim, generator=self.rng).to(dev)  # (B, z_dim)
        noise = [torch.randn(B, *s, generator=self.rng).to(dev) for s in G.canonical.noise_shapes()]
        labels = G.canonical.random_labels(B, self.rng)
        labels = None if labels is None else labels.to(dev)
        canonical, features = G.canonical(z, noise, labels)  # (B, 3, H, W), (B, C, H, W)
        if stage == 1:
            return Fakes(canonical[:, None], torch.zeros(B, 1, device=dev), canonical, labels, {})
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
            return Fakes(clips, times[:, :Fr], canonical, labels, {})
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
        return Fakes(clips, times[:, :Fr], canonical, labels, reg)
