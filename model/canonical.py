"""Canonical image generator: z (and, for a conditional model, class labels) -> w -> StyleGAN2 synthesis (learned
4x4 constant, modulated convs, per-layer noise, skip toRGB) -> the canonical image and the last full-resolution
feature map (conditions the fields)."""

from __future__ import annotations

import torch
from torch import nn

from model.config import CanonicalConfig, channels
from model.layers import MappingNetwork, SynthesisLayer, ToImage, multi_hot, upsample2x


class CanonicalGenerator(nn.Module):
    def __init__(self, cfg: CanonicalConfig, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.z_dim = cfg.z_dim
        self.classes, self.labels_per_image = cfg.classes, cfg.labels_per_image
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.mapping_layers, c_dim=cfg.classes)
        self.resolutions = [2**i for i in range(2, resolution.bit_length())]  # 4, 8, ..., resolution
        ch = {r: channels(r, cfg.channel_base, cfg.channel_max) for r in self.resolutions}
        self.feature_channels = ch[resolution]
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        # layer i runs at self.layer_res[i]; the first resolution has one layer, every later one two (up, same)
        layers, self.layer_res = [SynthesisLayer(ch[4], ch[4], cfg.w_dim, up=False)], [4]
        for r in self.resolutions[1:]:
            layers += [
                SynthesisLayer(ch[r // 2], ch[r], cfg.w_dim, up=True),
                SynthesisLayer(ch[r], ch[r], cfg.w_dim, up=False),
            ]
            self.layer_res += [r, r]
        self.layers = nn.ModuleList(layers)
        self.to_rgb = nn.ModuleList([ToImage(ch[r], 3, cfg.w_dim) for r in self.resolutions])

    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """Shape of one video's noise map for each layer, in the order forward() consumes them."""
        return [(1, r, r) for r in self.layer_res]

    def random_labels(self, batch: int, generator: torch.Generator) -> torch.Tensor | None:
        """Labels to condition batch images on, from generator (CPU): (batch, classes) multi-hot with
        labels_per_image distinct classes each, uniformly; None for an unconditional generator (draws nothing)."""
        if not self.classes:
            return None
        picks = torch.rand(batch, self.classes, generator=generator).argsort(dim=1)[
            :, : self.labels_per_image
        ]
        return multi_hot(picks, self.classes)

    def forward(
        self,
        z: torch.Tensor,
        noise: list[torch.Tensor],
        labels: torch.Tensor | None = None,
        with_image: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """z: (B, z_dim); noise: per layer (B, 1, r, r); labels: (B, classes) multi-hot, for a conditional model.

        Returns the image (B, 3, H, W) (None when with_image is False: only the features are needed) and the
        penultimate full-resolution features (B, C, H, W). The image is the raw synthesis output, roughly in
        [-1, 1]; GenDeF.sample clamps it.
        """
        w = self.mapping(z, labels)  # (B, w_dim)
        x = self.const[None].expand(z.shape[0], -1, -1, -1)  # (B, C4, 4, 4)
        img = None
        for i, (layer, n) in enumerate(zip(self.layers, noise, strict=True)):
            x = layer(x, w, noise=n)  # (B, C_r, r, r)
            if with_image and i % 2 == 0:  # the last layer of each resolution: add its RGB skip
                rgb = self.to_rgb[i // 2](x, w)  # (B, 3, r, r)
                img = rgb if img is None else upsample2x(img) + rgb
        return img, x
