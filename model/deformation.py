"""Deformation generator: (z, motion code of frame t, canonical features) -> offset (B, T, H, W, 2) of the field.

A StyleGAN2 synthesis network with its own mapping network (z -> w_deform). Its 4x4 input is a learned constant
concatenated with the frame's motion code (broadcast over space). At every layer the canonical feature map,
resized to the layer's resolution and projected by a 1x1 conv, is concatenated to the layer input
(``canonical_cond``). The skip outputs (2 channels each) are summed and passed through a 1x1 conv (initialised
to the identity map). The skip layers start with zero weights, as in the official code, so every offset is
exactly 0 at initialisation and training starts from the identity warp; each skip layer's gradient is its
(full-size) features times the loss's gradient, so the fields start moving at once. (A zero output conv after
random skips would instead pass no gradient to any layer before it, and the fields would barely move.) The network
stops at ``field_res`` (the field is bilinearly upsampled to the image) and the offsets are bounded by a scaled tanh,
``max_offset * tanh(x / max_offset)``: a field can neither tear the image apart at pixel scale nor send points
arbitrarily far off the canvas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import DeformationConfig, channels
from model.layers import MappingNetwork, SynthesisLayer, ToImage, upsample2x


class DeformationGenerator(nn.Module):
    def __init__(
        self, cfg: DeformationConfig, resolution: int, z_dim: int, motion_dim: int, feature_channels: int
    ) -> None:
        super().__init__()
        self.resolution, self.max_offset = resolution, cfg.max_offset
        self.mapping = MappingNetwork(z_dim, cfg.w_dim, cfg.mapping_layers)
        field_res = cfg.field_res or resolution
        resolutions = [2**i for i in range(2, field_res.bit_length())]  # 4, 8, ..., field_res
        ch = {r: channels(r, cfg.channel_base, cfg.channel_max) for r in resolutions}
        cond = cfg.cond_dim if cfg.canonical_cond else 0
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        layers, self.layer_res = (
            [SynthesisLayer(ch[4] + motion_dim, ch[4], cfg.w_dim, False, cond, noise=False)],
            [4],
        )
        for r in resolutions[1:]:
            layers += [
                SynthesisLayer(ch[r // 2], ch[r], cfg.w_dim, up=True, cond_channels=cond, noise=False),
                SynthesisLayer(ch[r], ch[r], cfg.w_dim, up=False, cond_channels=cond, noise=False),
            ]
            self.layer_res += [r, r]
        self.layers = nn.ModuleList(layers)
        self.to_offset = nn.ModuleList([ToImage(ch[r], 2, cfg.w_dim) for r in resolutions])
        self.cond_proj = (
            nn.ModuleList([nn.Conv2d(feature_channels, cfg.cond_dim, 1) for _ in layers])
            if cfg.canonical_cond
            else None
        )
        for skip in self.to_offset:
            nn.init.zeros_(skip.conv.weight)
        self.out = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.out.weight.copy_(torch.eye(2)[:, :, None, None])
            self.out.bias.zero_()

    def condition(self, features: torch.Tensor) -> list[torch.Tensor | None]:
        """Per-video conditioning of every layer: features (B, C, H, W) -> per layer (B, cond_dim, r, r)."""
        if self.cond_proj is None:
            return [None] * len(self.layers)
        resized = {r: F.interpolate(features, size=(r, r), mode="area") for r in set(self.layer_res)}
        return [proj(resized[r]) for proj, r in zip(self.cond_proj, self.layer_res, strict=True)]

    def forward(
        self, w: torch.Tensor, conds: list[torch.Tensor | None], motion: torch.Tensor
    ) -> torch.Tensor:
        """w: (B, w_dim) from self.mapping(z); conds: from condition(); motion: (B, T, M) codes -> (B, T, H, W, 2)."""
        B, T = motion.shape[
            :2
        ]  # N = B * T samples, video-major; w and conds are per video, as the layers take them
        m = motion.reshape(B * T, -1, 1, 1).expand(-1, -1, 4, 4)  # (N, M, 4, 4)
        x = torch.cat([self.const[None].expand(B * T, -1, -1, -1), m], dim=1)  # (N, C4 + M, 4, 4)
        offset = None
        for i, (layer, c) in enumerate(zip(self.layers, conds, strict=True)):
            x = layer(x, w, cond=c)  # (N, C_r, r, r)
            if i % 2 == 0:  # the last layer of each resolution: add its skip output
                o = self.to_offset[i // 2](x, w)  # (N, 2, r, r)
                offset = o if offset is None else upsample2x(offset) + o
        offset = self.out(offset)  # (N, 2, r, r), r = field_res
        if offset.shape[-1] != self.resolution:
            offset = F.interpolate(offset, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)
        if self.max_offset is not None:
            offset = self.max_offset * torch.tanh(
                offset / self.max_offset
            )  # (N, 2, H, W), |offset| < max_offset
        return offset.permute(0, 2, 3, 1).reshape(B, T, *offset.shape[2:], 2)  # (B, T, H, W, 2)
