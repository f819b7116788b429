"""Building blocks shared by the generators and the discriminator (StyleGAN2 math, our own code).

Equalized learning rate: weights are stored as N(0, 1) / lr_mult and scaled at run time by
lr_mult / sqrt(fan_in), so every layer learns at the same pace whatever its fan-in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)  # keeps the activation variance of leaky ReLU(0.2) close to 1
# learning-rate multiplier of the label layers (the mapping's embedding, the discriminator's projection and label
# head): they start at zero when a trained run is given labels, and at the base rate they move too slowly to catch
# up with layers that have long been trained
LABEL_LR_MULT = 30.0


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    # (N, C, H, W) -> (N, C, 2H, 2W)
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


class EqualLinear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mult: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mult)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_mult)) if bias else None
        self.weight_gain = lr_mult / math.sqrt(in_features)
        self.lr_mult = lr_mult
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in_features) -> (..., out_features)
        bias = self.bias * self.lr_mult if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, bias)
        return lrelu(x) if self.activation else x


class EqualConv2d(nn.Module):
    """Plain (unmodulated) convolution with equalized learning rate, 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C_in, H, W) -> (N, C_out, H, W)
        return F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.weight.shape[-1] // 2)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    # x: (N, D) -> (N, D) with mean(x^2) = 1 per row
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def label_embedding(classes: int, out_features: int) -> EqualLinear:
    """A linear embedding of multi-hot labels at LABEL_LR_MULT that starts at zero: added to a trained network,
    it changes nothing until training gives the labels a use."""
    layer = EqualLinear(classes, out_features, bias=False, lr_mult=LABEL_LR_MULT)
    nn.init.zeros_(layer.weight)
    return layer


class MappingNetwork(nn.Module):
    """z (and class labels) -> w: an MLP with a 100x lower learning rate (StyleGAN's lr_mult 0.01). With c_dim,
    w gains a learnt offset per label, ``embed(c)`` at the full rate, starting at zero: a conditional mapping that
    first computes what the unconditional one did (so a trained network can take labels on, model.training.widen)."""

    def __init__(
        self, z_dim: int, w_dim: int, num_layers: int, lr_mult: float = 0.01, c_dim: int = 0
    ) -> None:
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(
            *[
                EqualLinear(a, b, lr_mult=lr_mult, activation=True)
                for a, b in zip(dims[:-1], dims[1:], strict=True)
            ]
        )
        self.embed = label_embedding(c_dim, w_dim) if c_dim else None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # z: (N, z_dim), labels: (N, c_dim) multi-hot (given exactly when c_dim > 0) -> w: (N, w_dim)
        if (labels is None) != (self.embed is None):
            raise ValueError("a conditional mapping takes labels and an unconditional one none")
        w = self.layers(normalize_2nd_moment(z))
        return w if self.embed is None else w + self.embed(labels.to(w.dtype))


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution: per-sample input scaling by the style, then (optionally) demodulation.

    Computed as scale-input / shared conv / scale-output, which equals the per-sample-weight formulation and
    keeps one ordinary convolution for the whole batch.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, demodulate: bool
    ) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # style starts at 1: an unmodulated conv
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # x: (N, C_in, H, W), w: (N, w_dim) -> (N, C_out, H, W)
        styles = self.affine(w)  # (N, C_in)
        weight = self.weight * self.weight_gain  # (C_out, C_in, k, k)
        x = x * styles[:, :, None, None]
        x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            # per-sample norm of the modulated weight: (N, C_out)
            dcoefs = (weight.square().sum(dim=[2, 3])[None] * styles.square()[:, None, :]).sum(dim=2)
            x = x * (dcoefs + 1e-8).rsqrt()[:, :, None, None]
        return x

    def fused_weights(self, w: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """w: (G, w_dim) -> each style's modulated (and demodulated) weight times gain: (G, C_out, C_in, k, k)."""
        styles = self.affine(w)  # (G, C_in)
        weight = self.weight[None] * (self.weight_gain * styles[:, None, :, None, None])
        if self.demodulate:
            weight = weight * (weight.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
        return weight * gain


def grouped_conv(x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x: (G * T, C_in, H, W) of G groups of T consecutive samples, weights: (G, C_out, C_in, k, k) of each group
    -> (G * T, C_out, H, W): each group convolved with its own weight ('same' padding)."""
    G, T, k = weights.shape[0], x.shape[0] // weights.shape[0], weights.shape[-1]
    if G == 1:
        return F.conv2d(x, weights[0], bias, padding=k // 2)
    if T == 1:  # one convolution of G groups over the channels
        out = F.conv2d(x.reshape(1, -1, *x.shape[2:]), weights.flatten(0, 1), None, padding=k // 2, groups=G)
        out = out.reshape(G, -1, *out.shape[2:])
        return out if bias is None else out + bias[None, :, None, None]
    return torch.cat([F.conv2d(x[g * T : (g + 1) * T], weights[g], bias, padding=k // 2) for g in range(G)])


def per_group(t: torch.Tensor | None, samples: int) -> torch.Tensor | None:
    """A tensor of one row per group (G, ...) -> one row per sample (G * T, ...), consecutive samples per group."""
    return t if t is None or t.shape[0] == samples else t.repeat_interleave(samples // t.shape[0], dim=0)


class SynthesisLayer(nn.Module):
    """[2x bilinear up] -> [concat conditioning channels] -> modulated 3x3 conv -> [+ noise] -> bias -> lrelu.

    w and cond may come one per group of consecutive samples (the frames of a video: (G, ...) for x (G * T, ...)).
    Without autograd (inference) the layer runs fused: the style, demodulation, bias and gain folded into one
    weight per group, the conditioning convolved once per group and added to its T samples; the same function
    within float rounding, in 2 passes over the activations instead of 7."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        up: bool,
        cond_channels: int = 0,
        noise: bool = True,
    ) -> None:
        super().__init__()
        self.up = up
        self.conv = ModulatedConv2d(in_channels + cond_channels, out_channels, 3, w_dim, demodulate=True)
        self.noise_strength = nn.Parameter(torch.zeros([])) if noise else None
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # x: (N, C_in, h, w) [h, w doubled if up]; w: (N or G, w_dim); noise: (N, 1, H, W); cond: (N or G, C_cond, H, W)
        if self.up:
            x = upsample2x(x)  # (N, C_in, H, W)
        if not torch.is_grad_enabled():
            return self._fused(x, w, noise, cond)
        w, cond = per_group(w, x.shape[0]), per_group(cond, x.shape[0])
        if cond is not None:
            x = torch.cat([x, cond], dim=1)  # (N, C_in + C_cond, H, W)
        x = self.conv(x, w)  # (N, C_out, H, W)
        if self.noise_strength is not None:
            x = x + noise * self.noise_strength
        return lrelu(x + self.bias[None, :, None, None])

    def _fused(
        self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None, cond: torch.Tensor | None
    ) -> torch.Tensor:
        weights = self.conv.fused_weights(w, LRELU_GAIN)  # (G, C_out, C_in + C_cond, 3, 3)
        c_in, G = x.shape[1], weights.shape[0]
        x = grouped_conv(x, weights[:, :, :c_in], self.bias * LRELU_GAIN)  # (N, C_out, H, W)
        if cond is not None:
            c = grouped_conv(per_group(cond, G), weights[:, :, c_in:])  # (G, C_out, H, W)
            x = (x.unflatten(0, (G, -1)) + c[:, None]).flatten(0, 1)
        if self.noise_strength is not None:
            x = x.add_(noise * (self.noise_strength * LRELU_GAIN))
        return F.leaky_relu_(x, 0.2)


class ToImage(nn.Module):
    """1x1 modulated conv without demodulation (StyleGAN2's toRGB); out_channels = 3 for RGB, 2 for offsets."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W), w: (N or G, w_dim) (one per group of consecutive samples) -> (N, out_channels, H, W)
        if not torch.is_grad_enabled():
            return grouped_conv(x, self.conv.fused_weights(w), self.bias)
        return self.conv(x, per_group(w, x.shape[0])) + self.bias[None, :, None, None]


def multi_hot(indices: torch.Tensor, classes: int) -> torch.Tensor:
    """Class indices (B, k) -> (B, classes) float with a 1 at each: the labels a conditional model takes."""
    return torch.zeros(len(indices), classes).scatter_(1, indices, 1.0)
