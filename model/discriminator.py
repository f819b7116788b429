"""Video discriminator (StyleGAN-V / GenDeF): 2-D residual blocks on every frame (with a temporal shift of 1/4
of the channels between neighbouring frames before each block, GenDeF's TSM; optionally each frame's difference
from its clip's mean frame as a second input, ``frame_diff``), features averaged over the
sampled frames at ``fuse_res``, 2-D blocks down to 4x4, minibatch stddev, then a projection on an embedding of
the time gaps between the sampled frames (StyleGAN-V sparse training) and, for a conditional model, one on an
embedding of the class labels (StyleGAN2-ADA's cmap) and a head that reads the labels (AC-GAN's auxiliary
classifier). Also the video-consistent augmentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import DiscriminatorConfig, channels
from model.layers import LABEL_LR_MULT, EqualConv2d, EqualLinear, label_embedding, lrelu


class ResBlock(nn.Module):
    """conv 3x3 -> conv 3x3 -> 2x average-pool down, plus a pooled 1x1 skip; output variance kept by 1/sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C_in, r, r) -> (N, C_out, r / 2, r / 2)
        y = F.avg_pool2d(lrelu(self.conv1(lrelu(self.conv0(x)))), 2)
        return (self.skip(F.avg_pool2d(x, 2)) + y) / math.sqrt(2)


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the mean stddev over groups of samples as one more channel: (N, C, H, W) -> (N, C + 1, H, W)."""
    N, C, H, W = x.shape
    g = max(d for d in range(1, min(group, N) + 1) if N % d == 0)  # the largest group size that divides N
    y = x.reshape(g, N // g, C, H, W)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N / g,)
    y = y.repeat(g)[:, None, None, None].expand(N, 1, H, W)  # sample n belongs to group n mod (N / g)
    return torch.cat([x, y], dim=1)


def fourier_time(gaps: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed Fourier embedding of frame gaps: (B, G) -> (B, G, dim); periods 2 to 256 frames."""
    periods = torch.logspace(1, 8, dim // 2, base=2.0, device=gaps.device)  # (dim / 2,)
    raw = 2 * math.pi * gaps[..., None] / periods  # (B, G, dim / 2)
    return torch.cat([raw.sin(), raw.cos()], dim=-1)


def temporal_shift(x: torch.Tensor, frames: int) -> torch.Tensor:
    """TSM: the first 1/8 of the channels from the previous frame, the next 1/8 from the next frame (zeros past
    the ends), the rest unchanged. x: (B*F, C, H, W), frame-major within each clip -> same shape."""
    if frames == 1:
        return x
    N, C, H, W = x.shape
    x = x.reshape(N // frames, frames, C, H, W)
    k = C // 8
    fwd = F.pad(x[:, :-1, :k], (0, 0, 0, 0, 0, 0, 1, 0))  # (B, F, k, H, W): frame f sees frame f - 1
    bwd = F.pad(x[:, 1:, k : 2 * k], (0, 0, 0, 0, 0, 0, 0, 1))  # (B, F, k, H, W): frame f sees frame f + 1
    return torch.cat([fwd, bwd, x[:, :, 2 * k :]], dim=2).reshape(N, C, H, W)


class Discriminator(nn.Module):
    def __init__(
        self, cfg: DiscriminatorConfig, resolution: int, frames_per_clip: int = 3, classes: int = 0
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.frames_per_clip = (
            frames_per_clip  # clips of more than one frame are conditioned on their time gaps
        )
        ch = {
            r: channels(r, cfg.channel_base, cfg.channel_max)
            for r in (2**i for i in range(2, resolution.bit_length()))
        }
        self.from_rgb = EqualConv2d(3, ch[resolution], 1)
        self.frame_blocks = nn.Sequential(
            *[ResBlock(ch[r], ch[r // 2]) for r in sorted(ch, reverse=True) if r > cfg.fuse_res]
        )
        self.video_blocks = nn.Sequential(
            *[ResBlock(ch[r], ch[r // 2]) for r in sorted(ch, reverse=True) if 4 < r <= cfg.fuse_res]
        )
        self.conv = EqualConv2d(ch[4] + 1, ch[4], 3)
        self.fc = EqualLinear(ch[4] * 16, ch[4], activation=True)
        self.out = EqualLinear(ch[4], 1)
        self.time_embed = (
            EqualLinear((frames_per_clip - 1) * cfg.time_dim, ch[4]) if frames_per_clip > 1 else None
        )
        # registered last, so a saved state without it keeps its parameter order (model.training.state.add_frame_differences)
        self.from_diff = EqualConv2d(3, ch[resolution], 1, bias=False) if cfg.frame_diff else None
        # the projection on the labels starts at zero, as the conditional mapping does (model.layers.MappingNetwork)
        self.label_embed = label_embedding(classes, ch[4]) if classes else None
        # label logits (AC-GAN) from the features entering the last block (8x8), averaged over space (a digit may be
        # anywhere) and standardised over the batch (as AC-GAN's batch-normalised discriminator): those averages
        # differ between images by about a tenth of their size, which a linear head took thousands of steps to scale
        c8 = ch[8 if cfg.fuse_res >= 8 else 4]
        self.classifier = EqualLinear(c8, classes, lr_mult=LABEL_LR_MULT) if classes else None

    def forward(
        self,
        clips: torch.Tensor,
        times: torch.Tensor,
        labels: torch.Tensor | None = None,
        classify: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """clips: (B, F, 3, H, W) in [-1, 1]; times: (B, F) increasing frame times; labels: (B, classes) multi-hot,
        exactly when the discriminator is conditional -> logits (B,); with classify (a conditional discriminator)
        also the logits of each label (B, classes), read from the same features.

        F = 1 (single images, stage 1) has no time condition; F = frames_per_clip adds the projection on the gaps."""
        if (labels is None) != (self.label_embed is None):
            raise ValueError("a conditional discriminator takes labels and an unconditional one none")
        B, Fr = clips.shape[:2]
        x = self.from_rgb(clips.flatten(0, 1))  # (B*F, C, H, W)
        if self.from_diff is not None:  # zero for single images and for clips that do not move
            x = x + self.from_diff((clips - clips.mean(dim=1, keepdim=True)).flatten(0, 1))
        x = lrelu(x)
        for block in self.frame_blocks:
            x = block(temporal_shift(x, Fr) if self.cfg.temporal_shift else x)  # (B*F, C', r / 2, r / 2)
        # x: (B*F, C, fuse_res, fuse_res)
        x = x.reshape(B, Fr, *x.shape[1:]).mean(dim=1)  # (B, C, fuse_res, fuse_res): fused over time
        for block in self.video_blocks[:-1]:
            x = block(x)  # (B, C8, 8, 8) after the last of these
        pooled = x.mean(dim=(2, 3))  # (B, C8): what the label head reads
        if len(self.video_blocks):
            x = self.video_blocks[-1](x)  # (B, C4, 4, 4)
        x = lrelu(self.conv(minibatch_stddev(x, self.cfg.mbstd_group)))  # (B, C4, 4, 4)
        h = self.fc(x.flatten(1))  # (B, C4)
        logits = self.out(h)[:, 0]  # (B,)
        if Fr > 1:
            if Fr != self.frames_per_clip:
                raise ValueError(
                    f"the discriminator takes 1 or {self.frames_per_clip} frames per clip, got {Fr}"
                )
            gaps = fourier_time(times[:, 1:] - times[:, :-1], self.cfg.time_dim)  # (B, F - 1, time_dim)
            cond = self.time_embed(gaps.flatten(1))  # (B, C4)
            logits = logits + (h * cond).sum(dim=1) / math.sqrt(h.shape[1])  # projection discriminator
        if self.label_embed is not None:
            logits = logits + (h * self.label_embed(labels.to(h.dtype))).sum(dim=1) / math.sqrt(h.shape[1])
        if classify:
            if self.classifier is None:
                raise ValueError("only a conditional discriminator reads labels")
            if B < 2:
                raise ValueError("the label head standardises over the batch: give it at least 2 clips")
            standard = (pooled - pooled.mean(dim=0)) / (pooled.std(dim=0) + 1e-4)  # (B, C8)
            return logits, self.classifier(standard)
        return logits


def augment(clips: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Differentiable augmentation, the same for every frame of a clip (so it adds no fake motion).

    Each clip, with probability p per operation: a brightness shift, a contrast scale, and an integer translation
    of up to 1/8 of the image with reflected borders (zero padding drew grey bands that only the augmented
    images had). clips: (B, F, C, H, W) -> same shape. The random draws come from
    generator (on the CPU), whatever the device of clips.
    """
    if p <= 0:
        return clips
    B, _, _, H, W = clips.shape
    dev = clips.device

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    on = (draw(B, 3) < p).float()  # (B, 3): which operations each clip gets
    brightness = (draw(B) - 0.5) * 0.5 * on[:, 0]  # (B,)
    contrast = torch.exp2((draw(B) - 0.5) * on[:, 1])  # (B,) in [2^-0.5, 2^0.5]
    shift = ((draw(B, 2) * 2 - 1) * torch.tensor([W, H], device=dev) / 8).round() * on[
        :, 2:3
    ]  # (B, 2) pixels

    mean = clips.mean(dim=(1, 2, 3, 4), keepdim=True)  # (B, 1, 1, 1, 1)
    x = (clips - mean) * contrast[:, None, None, None, None] + mean + brightness[:, None, None, None, None]
    # translate by whole pixels: sample at (x - dx, y - dy), indices reflected at the borders
    ys, xs = torch.arange(H, device=dev), torch.arange(W, device=dev)
    src_x = _reflect(xs[None, :] - shift[:, 0:1].long(), W)  # (B, W)
    src_y = _reflect(ys[None, :] - shift[:, 1:2].long(), H)  # (B, H)
    idx = (src_y[:, :, None] * W + src_x[:, None, :]).flatten(1)  # (B, H*W)
    flat = x.flatten(3)  # (B, F, C, H*W)
    out = flat.gather(3, idx[:, None, None, :].expand(-1, flat.shape[1], flat.shape[2], -1))  # (B, F, C, H*W)
    return out.reshape(x.shape)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices reflected into [0, n) without repeating the edge (-1 -> 1, n -> n - 2); |shift| < n."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)
