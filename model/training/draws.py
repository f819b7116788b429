"""The random draws of a training step, all from the run's one RNG stream (so a resumed run draws what it would
have): real clips, the generator's fakes (with stage 2's field regularisers) and the augmentations."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from model.config import GenDeFConfig
from model.data import MovingMNIST, VideoClips, sample_offsets
from model.discriminator import augment, motion_maps
from model.fields import distortion, edge_aware_smoothness, fold_hinge, to_pixels
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
    motion: torch.Tensor | None = (
        None  # the motion discriminator's input (B, C, H, W), when it has one (stage 2)
    )


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
        self.motion = G.config.discriminator.motion  # stage 2 also draws the motion discriminator's inputs

    def real_motion(self) -> torch.Tensor:
        """The motion discriminator's input for real clips (B, C, H, W) (model.discriminator.motion_maps): each
        digit's true motion from frame 0 to 1 and to ``motion_gap`` (Moving MNIST knows it), shown on its pixels."""
        if not isinstance(self.data, MovingMNIST):
            raise ValueError("the motion discriminator trains on clips whose motion is known: Moving MNIST")
        gap = self.cfg.motion_gap
        times = torch.tensor([0.0, 1.0, float(gap)]).expand(self.batch, -1)
        frames, _, digits, corners = self.data.draw_tracked(times, self.rng)
        near = F.max_pool2d(
            digits[:, :, 0], 3, stride=1, padding=1
        )  # (B, D, H, W): each digit's pixels, dilated
        owner = near.argmax(dim=1)  # (B, H, W): the digit each pixel of frame 0 shows
        B, D, H, W = near.shape

        def per_pixel(v: torch.Tensor) -> torch.Tensor:  # (B, D, 2) -> (B, H, W, 2): each pixel its digit's
            return (
                v[:, :, None, None]
                .expand(-1, -1, H, W, -1)
                .gather(1, owner[:, None, ..., None].expand(-1, 1, -1, -1, 2))[:, 0]
            )

        v1 = per_pixel(corners[:, :, 1] - corners[:, :, 0])
        vk = per_pixel((corners[:, :, 2] - corners[:, :, 0]) / gap)
        frame = frames[:, 0]
        return motion_maps(frame, content_map(frame), v1, vk).to(self.device)

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
        # frames after the first: t0 + 1 for the flow, t0 + 2 for the acceleration, t0 + motion_gap for the motion
        # discriminator
        after = [1] if smooth or self.motion else []
        after += [2] if accel else []
        after += [cfg.motion_gap] if self.motion else []
        times = torch.cat([times, times[:, :1] + torch.tensor(after, device=dev)], dim=1)  # (B, F + after)
        fields = G.fields(z, features, motion_z, times)  # (B, F + after, H, W, 2)
        clips = warp(canonical, fields[:, :Fr])  # (B, F, 3, H, W)
        motion = None
        if (
            self.motion
        ):  # where frame t0's content goes: minus the change of the canonical point each pixel reads

            def velocity(later: torch.Tensor, frames: int) -> torch.Tensor:  # (B, H, W, 2), px a frame
                return -to_pixels(later - fields[:, 0]) / frames

            v1, vk = velocity(fields[:, Fr], 1), velocity(fields[:, -1], cfg.motion_gap)
            motion = motion_maps(clips[:, 0], content_map(clips[:, 0]), v1, vk)
        if not with_reg:
            return Fakes(clips, times[:, :Fr], canonical, labels, {}, motion)
        f = fields[:, :Fr]
        reg = {
            "offset": offset_magnitude(f),
            "off_canvas_loss": off_canvas_hinge(f),
            "offset_smooth": offset_smoothness(f.flatten(0, 1), clips.flatten(0, 1)),
            "fold_loss": fold_hinge(
                f.flatten(0, 1), cfg.fold_margin, clips.flatten(0, 1), cfg.fold_background_margin
            ),
            "distortion": distortion(f.flatten(0, 1), clips.flatten(0, 1)),
        }
        if smooth:
            flow = fields[:, Fr] - fields[:, 0]  # (B, H, W, 2): flow from frame t0 to t0 + 1
            reg["smooth"] = edge_aware_smoothness(flow, clips[:, 0], normalize=cfg.smooth_normalize)
        if accel:
            reg["accel"] = acceleration(fields[:, [0, Fr, Fr + 1]])  # frames t0, t0 + 1, t0 + 2
        return Fakes(clips, times[:, :Fr], canonical, labels, reg, motion)


def content_map(frame: torch.Tensor) -> torch.Tensor:
    """Where a frame (B, 3, H, W) in [-1, 1] shows something, for the motion discriminator: its grey level in
    [0, 1], dilated by a pixel (B, H, W) (Moving MNIST's strokes on black)."""
    grey = ((frame.mean(dim=1, keepdim=True) + 1) / 2).clamp(0, 1)
    return F.max_pool2d(grey, 3, stride=1, padding=1)[:, 0]
