"""Motion codes as in StyleGAN-V: a continuous, non-periodic code for any (fractional) time t.

A trajectory of i.i.d. Gaussian codes, one every K frames, is smoothed by two padding-free Conv1d layers into
codes u_k. For time t with k = floor(t / K) and alpha = t / K - k, the code of the left knot predicts the
periods and phases of Fourier features; the features are "aligned" so the embedding is continuous across knots:

    emb(t) = pos(t) - lerp(pos(kK), pos((k+1)K), alpha) + lerp(align(u_k), align(u_{k+1}), alpha)
    pos(s) = [sin(f * p * s + phi * a), cos(f * p * s + phi * a)],   p = tanh(FC(u_k)) + 1,   phi = FC(u_k)

with StyleGAN-V's phase scaling a = max_period / period (per frequency) and both FC layers without bias
(``stylegan_v_phases``; the first recipe had a biased period layer and a = 1). At a knot the Fourier part
vanishes and emb = align(u_k) from both sides.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import MotionConfig
from model.layers import EqualLinear, lrelu


class EqualConv1d(nn.Module):
    """Padding-free Conv1d with equalized learning rate (and StyleGAN-V's lr_mult 0.01)."""

    def __init__(self, channels: int, kernel_size: int, lr_mult: float = 0.01) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, channels, kernel_size) / lr_mult)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_gain = lr_mult / math.sqrt(channels * kernel_size)
        self.lr_mult = lr_mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, L) -> (B, C, L - kernel_size + 1)
        return F.conv1d(x, self.weight * self.weight_gain, self.bias * self.lr_mult)


class MotionEncoder(nn.Module):
    def __init__(self, cfg: MotionConfig, max_frames: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_frames = max_frames
        self.num_codes = (
            max_frames - 1
        ) // cfg.code_distance + 2  # knots k and k+1 exist for every t < max_frames
        self.num_raw_codes = self.num_codes + 2 * (cfg.kernel_size - 1)  # before the two padding-free convs
        self.conv1 = EqualConv1d(cfg.z_dim, cfg.kernel_size)
        self.conv2 = EqualConv1d(cfg.z_dim, cfg.kernel_size)
        self.period_fc = EqualLinear(cfg.z_dim, cfg.num_freqs, bias=not cfg.stylegan_v_phases)
        self.phase_fc = EqualLinear(
            cfg.z_dim, cfg.num_freqs, bias=False
        )  # no bias: avoids phase mode collapse
        self.align_fc = EqualLinear(cfg.z_dim, cfg.code_dim)
        periods = torch.logspace(
            math.log2(cfg.min_period), math.log2(cfg.max_period), cfg.num_freqs, base=2.0
        )
        self.register_buffer("freqs", 2 * math.pi / periods)  # (F,) radians per frame
        scales = cfg.max_period / periods if cfg.stylegan_v_phases else torch.ones_like(periods)
        self.register_buffer("phase_scales", scales, persistent=False)  # (F,), from the config

    def raw_code_shape(self) -> tuple[int, int]:
        """Shape of one video's trajectory noise (drawn from its motion seed)."""
        return (self.num_raw_codes, self.cfg.z_dim)

    def forward(self, motion_z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """motion_z: (B, R, Z) trajectory noise; t: (B, T) frame times in [0, max_frames - 1] -> (B, T, 2F).

        Always float32, also under autocast: the phases grow with t (up to max_frames), which bf16 would round
        by whole radians; this part is a small share of the compute."""
        with torch.autocast(motion_z.device.type, enabled=False):
            return self._embed(motion_z.float(), t.float())

    def _embed(self, motion_z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        u = lrelu(self.conv1(motion_z.transpose(1, 2)))  # (B, Z, R - k + 1)
        u = self.conv2(u).transpose(1, 2)  # (B, num_codes, Z)
        pos = t / self.cfg.code_distance  # (B, T)
        left = pos.floor().clamp(0, self.num_codes - 2)  # (B, T)
        alpha = (pos - left)[..., None]  # (B, T, 1)
        idx = left.long()[..., None].expand(-1, -1, u.shape[2])  # (B, T, Z)
        u_left, u_right = u.gather(1, idx), u.gather(1, idx + 1)  # (B, T, Z) each
        periods = torch.tanh(self.period_fc(u_left)) + 1  # (B, T, F)
        phases = self.phase_fc(u_left) * self.phase_scales  # (B, T, F)

        def fourier(time: torch.Tensor) -> torch.Tensor:  # time: (B, T, 1) -> (B, T, 2F)
            raw = self.freqs * periods * time + phases
            return torch.cat([raw.sin(), raw.cos()], dim=-1)

        t_left = left[..., None] * self.cfg.code_distance  # (B, T, 1)
        t_right = t_left + self.cfg.code_distance
        aligned = fourier(t[..., None]) - torch.lerp(fourier(t_left), fourier(t_right), alpha)
        return aligned + torch.lerp(self.align_fc(u_left), self.align_fc(u_right), alpha)  # (B, T, 2F)
