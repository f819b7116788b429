"""Weight-free quality measures of generated videos (pure functions; model.evaluation.evaluate runs them on a checkpoint).

Distribution distances (no pretrained network needed):
- ``frechet_distance`` of feature sets, used on the features of ``RandomFeatures``: a randomly initialised conv
  net with a fixed seed (an FID surrogate: the same formula, a feature space nobody trained);
- ``sliced_wasserstein``: Progressive GAN's SWD on 7x7 patches of a Laplacian pyramid. Each descriptor set is
  normalised by its own per-channel mean and std (as Progressive GAN does), so SWD ignores global colour shifts;
  the Fréchet distance sees them.

Motion and field statistics, on fields (B, T, H, W, 2) in the ``model.warp`` convention, reported in pixels of
the frame (a field unit is W / 2 pixels in x, H / 2 in y):
- ``motion_magnitude``: mean ||c_{t+1} - c_t|| (0 = a static video), ``jitter``: mean ||c_{t+2} - 2 c_{t+1} + c_t||;
- ``off_canvas_fraction``: sample points outside the canonical image (they read its edge pixels);
- ``fold_fraction``: points where the map pixel -> canonical point folds over (Jacobian determinant <= 0);
- ``warping_error``: how well frame t+1, warped back along the motion the fields imply, matches frame t.

Pixel values are frames in [-1, 1]; every pixel error below is reported on the [0, 1] scale (half the raw value).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.fields import field_offsets, jacobian_determinant, to_pixels, velocity_change
from model.warp import identity_grid


class RandomFeatures:
    """A fixed random conv net: images (N, 3, H, W) in [-1, 1] -> features (N, D).

    Four 3x3 stride-2 convolutions (He-initialised from ``seed``, leaky ReLU); the feature vector is the spatial
    mean of every layer's output, concatenated (D = sum of the widths). Images are first resized to ``size``.
    """

    def __init__(self, seed: int = 0, widths: tuple[int, ...] = (32, 64, 128, 128), size: int = 64) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.size = size
        self.weights, self.biases = [], []
        c_in = 3
        for c_out in widths:
            fan_in = c_in * 9
            self.weights.append(torch.randn(c_out, c_in, 3, 3, generator=gen) * math.sqrt(2 / fan_in))
            self.biases.append(torch.randn(c_out, generator=gen) * 0.1)
            c_in = c_out
        self.dim = sum(widths)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        out = [self._features(images[i : i + batch].float().cpu()) for i in range(0, images.shape[0], batch)]
        return torch.cat(out)  # (N, D)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
        )
        pooled = []
        for w, b in zip(self.weights, self.biases, strict=True):
            x = F.leaky_relu(F.conv2d(x, w, b, stride=2, padding=1), 0.2)  # (n, C, h / 2, w / 2)
            pooled.append(x.mean(dim=(2, 3)))  # (n, C)
        return torch.cat(pooled, dim=1)  # (n, D)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of feature sets a (N, D) and b (M, D)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)  # (D,)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (D, D)
    root_a = _psd_sqrt(cov_a)
    cross = _psd_sqrt(root_a @ cov_b @ root_a)  # same trace as (S_a S_b)^1/2, and symmetric: eigh applies
    value = (mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * torch.trace(cross)
    return max(float(value), 0.0)


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)  # (D,), (D, D)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


# ---- sliced Wasserstein distance (Progressive GAN) ------------------------------------------------------------

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
_KERNEL = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).view(1, 1, 5, 5)  # 5x5 binomial low-pass


def blur(x: torch.Tensor, passes: int = 1) -> torch.Tensor:
    """Images (N, C, H, W) low-passed by the 5x5 binomial kernel, passes times (reflected borders)."""
    for _ in range(passes):
        x = _blur(x)
    return x


def _blur(x: torch.Tensor) -> torch.Tensor:
    # (N, C, H, W) -> same shape: every channel filtered by the 5x5 binomial kernel, reflected borders
    N, C, H, W = x.shape
    y = F.conv2d(
        F.pad(x.reshape(N * C, 1, H, W), (2, 2, 2, 2), mode="reflect"), _KERNEL.to(x)
    )  # (N*C, 1, H, W)
    return y.reshape(N, C, H, W)


def laplacian_pyramid(images: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """(N, C, H, W) -> band-pass levels [(N, C, H, W), (N, C, H/2, W/2), ...] ending with the low-pass image of
    side min_size (the coarsest level)."""
    levels, x = [], images
    while x.shape[-1] > min_size:
        down = _blur(x)[..., ::2, ::2]  # (N, C, H/2, W/2)
        up = F.interpolate(down, scale_factor=2, mode="bilinear", align_corners=False)  # (N, C, H, W)
        levels.append(x - _blur(up))
        x = down
    return levels + [x]


def _descriptors(level: torch.Tensor, per_image: int, patch: int, gen: torch.Generator) -> torch.Tensor:
    """per_image random patch x patch windows of every image (N, C, h, w), normalised per channel over the set:
    (N * per_image, C * patch * patch)."""
    N, C, h, w = level.shape
    ys = torch.randint(0, h - patch + 1, (N, per_image), generator=gen)  # (N, P)
    xs = torch.randint(0, w - patch + 1, (N, per_image), generator=gen)  # (N, P)
    d = torch.arange(patch)
    rows = (ys[..., None, None] + d[:, None]).expand(-1, -1, patch, patch)  # (N, P, patch, patch)
    cols = (xs[..., None, None] + d[None, :]).expand(-1, -1, patch, patch)  # (N, P, patch, patch)
    idx = torch.arange(N)[:, None, None, None].expand_as(rows)
    desc = level.permute(0, 2, 3, 1)[idx, rows, cols]  # (N, P, patch, patch, C)
    desc = desc.reshape(-1, patch * patch, C)  # (N * P, patch^2, C)
    desc = (desc - desc.mean(dim=(0, 1))) / (desc.std(dim=(0, 1)) + 1e-8)
    return desc.reshape(desc.shape[0], -1)  # (N * P, patch^2 * C)


def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    seed: int = 0,
    per_image: int = 64,
    patch: int = 7,
    directions: int = 512,
    min_size: int = 16,
) -> list[float]:
    """SWD between image sets a (N, 3, H, W) and b (M, 3, H, W), one value per pyramid level (finest first),
    times 1e3 as Progressive GAN reports it. Patch positions and projection directions come from ``seed``: the
    same seed on the same set gives the same descriptors, so identical sets are at distance 0."""
    values = []
    for level_a, level_b in zip(
        laplacian_pyramid(a.float().cpu(), min_size),
        laplacian_pyramid(b.float().cpu(), min_size),
        strict=True,
    ):
        gen = torch.Generator().manual_seed(seed)
        da = _descriptors(level_a, per_image, patch, gen)  # (Na, D)
        gen = torch.Generator().manual_seed(seed)
        db = _descriptors(level_b, per_image, patch, gen)  # (Nb, D)
        n = min(
            da.shape[0], db.shape[0]
        )  # both sets the same size: the first n descriptors (random positions)
        dirs = torch.randn(da.shape[1], directions, generator=gen)  # (D, K)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa = (dirs.T @ da[:n].T).sort(dim=1).values  # (K, n)
        pb = (dirs.T @ db[:n].T).sort(dim=1).values  # (K, n)
        values.append(float((pa - pb).abs().mean()) * 1e3)
    return values


# ---- motion and field statistics -----------------------------------------------------------------------------


def motion_magnitude(fields: torch.Tensor) -> float:
    """Mean length in pixels of c_{t+1} - c_t over every pixel and frame pair; fields (B, T, H, W, 2), T >= 2."""
    step = to_pixels(fields[:, 1:] - fields[:, :-1])  # (B, T-1, H, W, 2)
    return float(step.norm(dim=-1).mean())


def jitter(fields: torch.Tensor) -> float:
    """Mean length in pixels of c_{t+2} - 2 c_{t+1} + c_t (0 for motion at constant velocity); T >= 3."""
    return float(velocity_change(fields).mean())


def off_canvas_fraction(fields: torch.Tensor) -> float:
    """Fraction of sample points outside the canonical image (|u| > 1 or |v| > 1); fields (..., H, W, 2)."""
    return float((fields.abs() > 1).any(dim=-1).float().mean())


def fold_fraction(fields: torch.Tensor) -> float:
    """Fraction of points where the map folds over (Jacobian determinant <= 0); fields (..., H, W, 2)."""
    return float((jacobian_determinant(fields) <= 0).float().mean())


def field_health(fields: torch.Tensor) -> dict[str, float]:
    """What the training log and the evaluation report of a model's fields (B, T, H, W, 2), T >= 2:

    folds and off_canvas (fractions), mean_offset (pixels from the identity), static_share (share of the offset
    energy fixed over time: 1 = a fixed lens, 0 = no fixed part), frame0_offset (mean offset of the first frame,
    pixels) and motion (pixels per frame)."""
    offset = field_offsets(fields)  # (B, T, H, W, 2)
    energy = offset.square().sum(dim=(1, 2, 3, 4))  # (B,)
    static = offset.mean(dim=1).square().sum(dim=(1, 2, 3)) * offset.shape[1]  # (B,)
    return {
        "folds": fold_fraction(fields),
        "off_canvas": off_canvas_fraction(fields),
        "mean_offset": float(offset.norm(dim=-1).mean()),
        "static_share": float((static / energy.clamp(min=1e-12)).mean()),
        "frame0_offset": float(offset[:, 0].norm(dim=-1).mean()),
        "motion": motion_magnitude(fields),
    }


def frame_difference(frames: torch.Tensor) -> float:
    """Mean |f_{t+1} - f_t| on the [0, 1] scale; frames (B, T, C, H, W) in [-1, 1]. Applies to real video too."""
    return float((frames[:, 1:] - frames[:, :-1]).abs().mean() / 2)


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean |x_i - x_j| (per pixel, [0, 1] scale) over all pairs i != j of images (N, ...) in [-1, 1], N >= 2: how
    unlike each other the samples are (0 = all the same image)."""
    flat = images.flatten(1).float()  # (N, P)
    N = flat.shape[0]
    total = sum(float((flat[i + 1 :] - flat[i]).abs().mean(dim=1).sum()) for i in range(N - 1))
    return total / (N * (N - 1) / 2) / 2


def warping_error(frames: torch.Tensor, fields: torch.Tensor, iterations: int = 5) -> tuple[float, float]:
    """Temporal warping error of consecutive frames along the motion the fields imply.

    Pixel p of frame t shows canonical point c_t(p); the same point shows in frame t+1 at q with c_{t+1}(q) =
    c_t(p), found by Newton steps on c_{t+1} from q = p. The error is the mean |f_t(p) - f_{t+1}(q)| ([0, 1]
    scale) over the valid pixels: q inside the frame, c_t(p) on the canvas and the point found (residual under
    half a pixel); pixels with no match (disocclusions, folds) are left out, as in Lai et al.'s E_warp.
    frames (B, T, C, H, W) in [-1, 1], fields (B, T, H, W, 2). Returns (error, fraction of valid pixels).
    """
    B, T, C, H, W = frames.shape
    pixel = torch.tensor([2 / W, 2 / H], dtype=fields.dtype, device=fields.device)  # one pixel in field units
    grid = identity_grid(H, W, device=fields.device).expand(B, H, W, 2)  # (B, H, W, 2)
    err_sum, valid_sum = 0.0, 0.0
    for t in range(T - 1):
        target = fields[:, t]  # (B, H, W, 2): c_t(p)
        c1 = fields[:, t + 1].permute(0, 3, 1, 2)  # (B, 2, H, W)
        # Jacobian of c_{t+1} with respect to the frame position, both in field units: (B, 4, H, W)
        du_dy, du_dx = torch.gradient(c1[:, 0], dim=(1, 2))
        dv_dy, dv_dx = torch.gradient(c1[:, 1], dim=(1, 2))
        jac = torch.stack([du_dx / pixel[0], du_dy / pixel[1], dv_dx / pixel[0], dv_dy / pixel[1]], dim=1)
        q = grid.clone()  # (B, H, W, 2)
        for _ in range(iterations):
            r = target - _sample(c1, q)  # (B, H, W, 2)
            a, b, c, d = _sample(jac, q).unbind(-1)  # (B, H, W) each
            det = a * d - b * c
            ok = det.abs() > 1e-6
            safe = torch.where(ok, det, torch.ones_like(det))
            step = (
                torch.stack([d * r[..., 0] - b * r[..., 1], a * r[..., 1] - c * r[..., 0]], dim=-1)
                / safe[..., None]
            )
            q = q + torch.where(ok[..., None], step, torch.zeros_like(step))
        residual = ((target - _sample(c1, q)) / pixel).norm(dim=-1)  # (B, H, W), canonical pixels
        valid = (residual < 0.5) & (q.abs() <= 1).all(-1) & (target.abs() <= 1).all(-1)  # (B, H, W)
        warped = F.grid_sample(
            frames[:, t + 1], q, mode="bilinear", padding_mode="border", align_corners=False
        )
        diff = (frames[:, t] - warped).abs().mean(dim=1) / 2  # (B, H, W)
        err_sum += float((diff * valid).sum())
        valid_sum += float(valid.sum())
    total = B * (T - 1) * H * W
    return (err_sum / valid_sum if valid_sum else float("nan")), valid_sum / total


def _sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of maps (B, K, H, W) at points (B, H, W, 2) (field units, clamped to the border):
    (B, H, W, K)."""
    return F.grid_sample(maps, points, mode="bilinear", padding_mode="border", align_corners=False).permute(
        0, 2, 3, 1
    )
