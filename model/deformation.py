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

With ``forward`` the same network predicts where each canonical point goes instead (a displacement in canonical
space, beside the features it is conditioned on), and the field is the inverse of that map (``invert_displacement``):
an object then moves by what its own features say. With ``layers`` (forward only) motion layers add to that
displacement: soft regions of the canonical image (``regions``), each moved rigidly by its own translation, from its
own motion trajectory (``layer_displacement``). docs/TRAINING.md has what they were tried for.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import DeformationConfig, channels
from model.layers import EqualConv2d, EqualLinear, MappingNetwork, SynthesisLayer, ToImage, lrelu, upsample2x
from model.warp import identity_grid

LAYER_LR_MULT = 10.0  # learning-rate multiplier of the motion layers' networks
REGION_SPLIT = 4.0  # the initial regions' logits change by this across half the canvas
BORDER_PX = 4.0  # the motion layers fade out over this many pixels of the frame at the canvas edge


class DeformationGenerator(nn.Module):
    def __init__(
        self, cfg: DeformationConfig, resolution: int, z_dim: int, motion_dim: int, feature_channels: int
    ) -> None:
        super().__init__()
        self.resolution, self.max_offset = resolution, cfg.max_offset
        self.forward_map, self.invert_steps = cfg.forward, cfg.invert_steps
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
        self.layers_count = cfg.layers
        # motion layers: soft regions of the canonical image, each moved by its own translation
        if cfg.layers:
            self.field_res = field_res
            # region logits (a static region and one per layer) from the canonical features at the field's
            # resolution and averaged to 8x8 and 4x4 (what is around), and the position (LAYER_LR_MULT: they start
            # from nothing beside a trained network and would otherwise take thousands of steps to matter)
            self.region_net = nn.ModuleList(
                [
                    EqualConv2d(3 * feature_channels + 2, cfg.cond_dim * 2, 3, lr_mult=LAYER_LR_MULT),
                    EqualConv2d(cfg.cond_dim * 2, cfg.cond_dim * 2, 3, lr_mult=LAYER_LR_MULT),
                    EqualConv2d(cfg.cond_dim * 2, cfg.layers + 1, 1, lr_mult=LAYER_LR_MULT),
                ]
            )
            nn.init.zeros_(self.region_net[-1].weight)
            # the regions start as a split of the canvas by position: layer l owns the side of direction l (two
            # layers: the right half and the left half), the static region neither; training then shapes them
            angles = 2 * math.pi * torch.arange(cfg.layers) / cfg.layers
            directions = torch.stack([angles.cos(), angles.sin()], dim=1)  # (L, 2)
            self.region_prior = nn.Parameter(torch.cat([torch.zeros(1, 2), REGION_SPLIT * directions]))
            # each layer's translation from its motion code and where its region is; starts at zero (the motion
            # is the rest of the network's at first)
            self.translation = nn.ModuleList(
                [
                    EqualLinear(motion_dim + 2, 4 * cfg.cond_dim, activation=True, lr_mult=LAYER_LR_MULT),
                    EqualLinear(4 * cfg.cond_dim, 2, lr_mult=LAYER_LR_MULT),
                ]
            )
            nn.init.zeros_(self.translation[-1].weight)

    def condition(self, features: torch.Tensor) -> list[torch.Tensor | None]:
        """Per-video conditioning of every layer: features (B, C, H, W) -> per layer (B, cond_dim, r, r), then, with
        motion layers, the regions (B, layers + 1, r, r) (regions())."""
        extra = [self.regions(features)] if self.layers_count else []
        if self.cond_proj is None:
            return [None] * len(self.layers) + extra
        resized = {r: F.interpolate(features, size=(r, r), mode="area") for r in set(self.layer_res)}
        return [proj(resized[r]) for proj, r in zip(self.cond_proj, self.layer_res, strict=True)] + extra

    def regions(self, features: torch.Tensor) -> torch.Tensor:
        """Soft regions of the canonical image at the field's resolution, summing to 1 at each point: a static one,
        then one per motion layer. features (B, C, H, W) -> (B, layers + 1, r, r)."""
        r = self.field_res
        here = F.interpolate(features, size=(r, r), mode="area")
        around = [
            F.interpolate(F.interpolate(features, size=(k, k), mode="area"), size=(r, r), mode="bilinear")
            for k in (8, 4)
        ]
        where = (
            identity_grid(r, r, device=features.device)
            .permute(2, 0, 1)[None]
            .expand(len(features), -1, -1, -1)
        )
        x = torch.cat([here, *around, where], dim=1)  # (B, 3C + 2, r, r)
        for i, conv in enumerate(self.region_net):
            x = conv(x) if i == len(self.region_net) - 1 else lrelu(conv(x))
        prior = torch.einsum("lc,bchw->blhw", self.region_prior, where)  # (B, L + 1, r, r)
        return (x + prior).softmax(dim=1)

    def layer_displacement(self, regions: torch.Tensor, layer_motion: torch.Tensor) -> torch.Tensor:
        """What the motion layers add to the displacement: regions (B, L + 1, r, r), motion codes (B, L, T, M) ->
        (B*T, 2, r, r): each layer's region moved by its translation, a function of its code and its centroid."""
        B, L, T = layer_motion.shape[:3]
        r = regions.shape[-1]
        weight = regions[:, 1:]  # (B, L, r, r)
        where = identity_grid(r, r, device=regions.device)  # (r, r, 2)
        centroid = torch.einsum("blhw,hwc->blc", weight, where) / weight.sum(dim=(2, 3))[..., None].clamp_min(
            1e-6
        )
        x = torch.cat([layer_motion, centroid[:, :, None].expand(-1, -1, T, -1)], dim=-1)  # (B, L, T, M + 2)
        translation = self.translation[1](self.translation[0](x))  # (B, L, T, 2)
        d = torch.einsum("blhw,bltc->btchw", weight, translation)  # (B, T, 2, r, r)
        # fading to nothing over the outermost BORDER_PX of the canvas: a layer never reads past the canvas edge
        # (the off-canvas term pulled the layers' translations to zero rather than shape the regions)
        edge = (1 - where.abs().amax(dim=-1)) * (self.resolution / 2) / BORDER_PX  # (r, r): 0 at the edge
        return (d * edge.clamp(0, 1)).reshape(B * T, 2, r, r)

    def forward(
        self,
        w: torch.Tensor,
        conds: list[torch.Tensor | None],
        motion: torch.Tensor,
        layer_motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """w: (B, w_dim) from self.mapping(z); conds: from condition(); motion: (B, T, M) codes; layer_motion: (B, L,
        T, M) the motion layers' codes (with deformation.layers) -> (B, T, H, W, 2)."""
        B, T = motion.shape[
            :2
        ]  # N = B * T samples, video-major; w and conds are per video, as the layers take them
        m = motion.reshape(B * T, -1, 1, 1).expand(-1, -1, 4, 4)  # (N, M, 4, 4)
        x = torch.cat([self.const[None].expand(B * T, -1, -1, -1), m], dim=1)  # (N, C4 + M, 4, 4)
        offset = None
        for i, (layer, c) in enumerate(zip(self.layers, conds[: len(self.layers)], strict=True)):
            x = layer(x, w, cond=c)  # (N, C_r, r, r)
            if i % 2 == 0:  # the last layer of each resolution: add its skip output
                o = self.to_offset[i // 2](x, w)  # (N, 2, r, r)
                offset = o if offset is None else upsample2x(offset) + o
        offset = self.out(offset)  # (N, 2, r, r), r = field_res
        if self.layers_count:
            offset = offset + self.layer_displacement(conds[-1], layer_motion)
        if self.forward_map:  # a displacement of each canonical point, at field_res: the field is its inverse
            if self.max_offset is not None:
                offset = self.max_offset * torch.tanh(offset / self.max_offset)
            offset = invert_displacement(offset, self.resolution, self.invert_steps)  # (N, 2, H, W)
            return offset.permute(0, 2, 3, 1).reshape(B, T, *offset.shape[2:], 2)  # (B, T, H, W, 2)
        if offset.shape[-1] != self.resolution:
            offset = F.interpolate(offset, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)
        if self.max_offset is not None:
            offset = self.max_offset * torch.tanh(
                offset / self.max_offset
            )  # (N, 2, H, W), |offset| < max_offset
        return offset.permute(0, 2, 3, 1).reshape(B, T, *offset.shape[2:], 2)  # (B, T, H, W, 2)


def invert_displacement(displacement: torch.Tensor, resolution: int, steps: int) -> torch.Tensor:
    """The field of a map that moves each canonical point q to q + d(q): displacement d (N, 2, r, r) in field
    units on the canonical grid -> offsets (N, 2, R, R) of the field on the frame grid (R = resolution): the
    canonical point c each frame pixel p shows solves c + d(c) = p, found by the fixed-point iteration
    c <- p - d(c) from c = p (d read bilinearly between its grid points, its edge value beyond them). It converges
    where d changes by less than a pixel per pixel, as it does between objects that do not pass through each other;
    where two objects overlap the map has no inverse, and the iteration ends between them."""
    N = displacement.shape[0]
    p = identity_grid(resolution, resolution, device=displacement.device)  # (R, R, 2)
    p = p[None].expand(N, -1, -1, -1)
    c = p
    for _ in range(steps):
        d = F.grid_sample(displacement, c, mode="bilinear", padding_mode="border", align_corners=False)
        c = p - d.permute(0, 2, 3, 1)  # (N, R, R, 2)
    return (c - p).permute(0, 3, 1, 2)  # (N, 2, R, R)
