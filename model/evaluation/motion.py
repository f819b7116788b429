"""How things move: per-object trajectories on Moving MNIST, and how much of natural footage's motion one affine
map per frame explains. Every other measure of model.evaluation is per frame or per pair of frames, so a model whose
two digits slide together like one sticker passes them all; these do not.

Moving MNIST, the same measure for generated and real clips, on each digit's own picture in every frame:

- a real clip's digits are drawn alone by the data (``MovingMNIST.draw_tracked``);
- a generated video's digits are found in its canonical image (``digit_masks``: its two largest connected
  components of ink, every other stroke joined to the nearer one, one blob split in two along its long axis), and
  each mask is carried into every frame by that frame's field (``follow``: the pixels whose field reads the mask),
  so a digit is where the fields put it, whatever the frames look like.

From each digit's picture in each frame (``tracks``: its ink's centroid and bounding box):

- ``relative displacement``: how far the two digits' offset from each other changes from the first frame to the
  last, ||(a_T - b_T) - (a_0 - b_0)|| in pixels: 0 for two digits that move as one picture;
- ``common displacement``: how far their midpoint moves over the clip;
- ``speed``: each digit's mean ||c_{t+1} - c_t|| in pixels a frame;
- ``bounce share``: the share of videos in which a digit turns back off a wall (``bounces``).

Natural footage (``affine_share``): the share of the motion energy that one affine map per frame pair does not
explain, in optical flow from frame t to t + ``gap`` (OpenCV's DIS on the frames, weighted by their texture: flat
regions have no reliable flow), for generated and real clips alike; for generated videos also in the fields' own
motion. A model that sways the whole picture scores near 0; real footage, with objects that move on their own,
well above.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.fields import to_pixels
from model.pixels import to_uint8
from model.warp import identity_grid

INK = 0.25  # a pixel is ink when its grey level in [0, 1] is above this
WALL_PX = 12.0  # a turn counts as a bounce when the digit's ink is this close to the wall (real turns: 99 % within 12 px)
TURN_PX = 0.5  # ... and it moved at least this many px a frame towards the wall before and away after


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:  # an evaluation extra, not a dependency of the service
        raise ImportError(
            "model.evaluation.motion needs OpenCV: pip install opencv-python-headless (in the dev extras)"
        ) from e
    return cv2


# ---- Moving MNIST: digits and their trajectories ---------------------------------------------------------------


def digit_masks(canonical: torch.Tensor, digits: int = 2) -> torch.Tensor:
    """Each digit's ink in canonical images (B, C, H, W) in [-1, 1] -> (B, digits, H, W) in [0, 1] (the grey level
    where the pixel belongs to that digit, 0 elsewhere), digits ordered by their centroid's x."""
    cv2 = _cv2()
    grey = ((canonical.float().mean(dim=1) + 1) / 2).clamp(0, 1)  # (B, H, W)
    out = torch.zeros(canonical.shape[0], digits, *grey.shape[1:])
    for b, image in enumerate(grey.numpy()):
        ink = (image > INK).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
        order = np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1  # components, largest first
        owner = np.zeros(image.shape, dtype=np.int64) - 1  # which digit each pixel belongs to
        if count - 1 >= digits:
            seeds = [labels == c for c in order[:digits]]
            # every other ink pixel joins the nearest seed (distance to its nearest pixel)
            dist = np.stack([cv2.distanceTransform((~s).astype(np.uint8), cv2.DIST_L2, 3) for s in seeds])
            owner = np.where(ink > 0, dist.argmin(axis=0), -1)
        elif (
            count - 1 >= 1
        ):  # one blob: two digits touching or drawn over each other, split along its long axis
            ys, xs = np.nonzero(ink)
            pts = np.stack([xs, ys], axis=1).astype(np.float64)
            centred = pts - pts.mean(axis=0)
            axis = np.linalg.svd(centred, full_matrices=False)[2][0]
            proj = centred @ axis
            cuts = np.quantile(proj, np.linspace(0, 1, digits + 1)[1:-1])
            owner[ys, xs] = np.searchsorted(cuts, proj)
        for d in range(digits):
            out[b, d] = torch.from_numpy(np.where(owner == d, image, 0.0))
    # a stable order: by the centroid's x (ties of empty masks keep their index)
    centre = _centroids(out)[..., 0].nan_to_num(float("inf"))  # (B, digits)
    return out.gather(1, centre.argsort(dim=1)[..., None, None].expand_as(out))


def follow(masks: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
    """Canonical masks (B, D, H, W) carried into the frames by fields (B, T, H, W, 2) (model.warp's convention:
    each pixel shows the canonical point its field reads) -> (B, D, T, H, W): each digit drawn alone in each frame.
    Points read outside the canonical image show nothing (zeros), not its edge."""
    B, D = masks.shape[:2]
    T = fields.shape[1]
    src = masks[:, None].expand(-1, T, -1, -1, -1).flatten(0, 1)  # (B*T, D, H, W)
    moved = F.grid_sample(
        src, fields.flatten(0, 1).float(), mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (B*T, D, h, w)
    return moved.unflatten(0, (B, T)).transpose(1, 2)  # (B, D, T, h, w)


def _centroids(pictures: torch.Tensor) -> torch.Tensor:
    """(..., H, W) non-negative pictures -> (..., 2) the (x, y) centroid of each, in pixels (NaN when empty)."""
    H, W = pictures.shape[-2:]
    ys, xs = torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32)
    mass = pictures.sum(dim=(-2, -1))
    x = (pictures.sum(dim=-2) * xs).sum(dim=-1) / mass
    y = (pictures.sum(dim=-1) * ys).sum(dim=-1) / mass
    return torch.stack([x, y], dim=-1)


def tracks(digits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each digit drawn alone in each frame, (B, D, T, H, W) in [0, 1] -> its ink's centroid (B, D, T, 2) and
    bounding box (B, D, T, 4) as (x0, y0, x1, y1), in pixels (NaN where a digit shows no ink)."""
    ink = digits > INK  # (B, D, T, H, W)
    H, W = digits.shape[-2:]
    cols, rows = ink.any(dim=-2), ink.any(dim=-1)  # (B, D, T, W), (B, D, T, H)

    def extent(present: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(n, dtype=torch.float32)
        lo = torch.where(present, idx, float("inf")).amin(dim=-1)
        hi = torch.where(present, idx + 1, -float("inf")).amax(dim=-1)
        empty = ~present.any(dim=-1)
        return lo.masked_fill(empty, float("nan")), hi.masked_fill(empty, float("nan"))

    (x0, x1), (y0, y1) = extent(cols, W), extent(rows, H)
    return _centroids(digits * ink), torch.stack([x0, y0, x1, y1], dim=-1)


def bounces(centroids: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Whether each digit turns back off a wall: centroids (..., T, 2), boxes (..., T, 4), size (H, W) -> (...,)
    bool. A turn at frame t: over the 2 frames before it the digit moved towards a wall by at least TURN_PX a frame
    (in x or y), over the 2 frames after it away from that wall as fast, and at t its ink was within WALL_PX of it."""
    H, W = size
    c = centroids
    before = (c[..., 2:-2, :] - c[..., :-4, :]) / 2  # (..., T - 4, 2): velocity into frame t = 2 .. T - 3
    after = (c[..., 4:, :] - c[..., 2:-2, :]) / 2  # (..., T - 4, 2): velocity out of it
    box = boxes[..., 2:-2, :]  # (..., T - 4, 4)
    near_low = box[..., :2] <= WALL_PX  # left / top wall
    near_high = box[..., 2:] >= torch.tensor([W, H], dtype=box.dtype) - WALL_PX  # right / bottom
    off_low = near_low & (before <= -TURN_PX) & (after >= TURN_PX)
    off_high = near_high & (before >= TURN_PX) & (after <= -TURN_PX)
    return (off_low | off_high).flatten(-2).any(dim=-1)


def _displacements(centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two digits' centroids (B, 2, T, 2) -> how far their offset from each other changes from the first frame to the
    last, and how far their midpoint moves, (B,) each in pixels."""
    a, b = centroids[:, 0], centroids[:, 1]  # (B, T, 2)
    relative = ((a[:, -1] - b[:, -1]) - (a[:, 0] - b[:, 0])).norm(dim=-1)
    mid = (a + b) / 2
    return relative, (mid[:, -1] - mid[:, 0]).norm(dim=-1)


def relative_displacement(digits: torch.Tensor) -> torch.Tensor:
    """Two digits each drawn alone in each frame (B, 2, T, H, W) -> how far their offset from each other changes
    from the first frame to the last (B,) in pixels (NaN where a digit shows no ink in some frame)."""
    return _displacements(tracks(digits)[0])[0]


def trajectory_stats(digits: torch.Tensor) -> dict[str, Any]:
    """The motion of two digits, each drawn alone in each frame: (B, 2, T, H, W) in [0, 1] -> numbers (JSON-able):
    relative and common displacement from the first frame to the last, speed, bounce share, and how many videos
    had a digit that was lost (no ink in some frame: left out of the means)."""
    centroids, boxes = tracks(digits)  # (B, 2, T, 2), (B, 2, T, 4)
    seen = ~centroids.isnan().flatten(1).any(dim=1)  # (B,)
    c, box = centroids[seen], boxes[seen]
    relative, common = _displacements(c)  # (n,) each
    speed = (c[:, :, 1:] - c[:, :, :-1]).norm(dim=-1).mean(dim=-1)  # (n, 2)
    bounced = bounces(c, box, tuple(digits.shape[-2:])).any(dim=1)  # (n,)

    def summary(x: torch.Tensor) -> dict[str, float]:
        return {"mean": float(x.mean()), "median": float(x.median()), "std": float(x.std(correction=0))}

    return {
        "videos": int(seen.sum()),
        "lost": int((~seen).sum()),
        "relative_displacement_px": summary(relative),
        "common_displacement_px": summary(common),
        "speed_px_per_frame": summary(speed.flatten()),
        "bounce_share": float(bounced.float().mean()),
    }


def generated_digits(canonical: torch.Tensor, fields: torch.Tensor, digits: int = 2) -> torch.Tensor:
    """A generated video's digits, each drawn alone in each frame: canonical (B, C, H, W), fields (B, T, H, W, 2)
    -> (B, digits, T, H, W) in [0, 1]."""
    return follow(digit_masks(canonical, digits), fields)


# ---- natural footage: the share of motion one affine map does not explain ------------------------------------------


def _grey_uint8(frames: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W) uint8 grey."""
    return to_uint8(frames.float().mean(dim=-3)).cpu().numpy()


def dis_flow(frames: torch.Tensor, gap: int) -> torch.Tensor:
    """OpenCV DIS optical flow (its "medium" preset) from frame t to frame t + gap of videos (B, T, 3, H, W) in
    [-1, 1] -> (B, T - gap, H, W, 2) in pixels: frame t's pixel p is at p + flow in frame t + gap."""
    cv2 = _cv2()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grey = _grey_uint8(frames)  # (B, T, H, W)
    B, T = grey.shape[:2]
    flows = [[dis.calc(grey[b, t], grey[b, t + gap], None) for t in range(T - gap)] for b in range(B)]
    return torch.from_numpy(np.asarray(flows, dtype=np.float32))  # (B, T - gap, H, W, 2)


def field_flow(fields: torch.Tensor, gap: int) -> torch.Tensor:
    """The motion the fields (B, T, H, W, 2) imply from frame t to t + gap, in pixels, (B, T - gap, H, W, 2): minus
    the change of the canonical point each pixel reads (exact for a field that translates: content read at q - d
    from pixel p appears at p + d), model.warp's flow turned into the frame's direction."""
    return -to_pixels(fields[:, gap:] - fields[:, :-gap])


def texture_weights(frames: torch.Tensor) -> torch.Tensor:
    """How reliable flow is at each pixel of frames (..., 3, H, W) in [-1, 1] -> (..., H, W): the local gradient
    magnitude of the grey image (central differences, box-averaged over 5x5), 0 on flat regions."""
    grey = frames.float().mean(dim=-3)  # (..., H, W)
    lead, (H, W) = grey.shape[:-2], grey.shape[-2:]
    g = grey.reshape(-1, 1, H, W)
    gx = F.pad(g[..., :, 2:] - g[..., :, :-2], (1, 1, 0, 0), mode="replicate") / 2
    gy = F.pad(g[..., 2:, :] - g[..., :-2, :], (0, 0, 1, 1), mode="replicate") / 2
    mag = F.avg_pool2d(F.pad((gx.square() + gy.square()).sqrt(), (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    return mag.reshape(*lead, H, W)


def affine_share(flow: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit one affine map per flow field by weighted least squares: flow (N, H, W, 2) in pixels, weights (N, H, W)
    -> the share of the weighted flow energy the fit leaves (N,) (0: one affine map explains the motion; 1: none
    of it) and the weighted mean flow length (N,) in pixels."""
    N, H, W = weights.shape
    p = identity_grid(H, W).reshape(-1, 2)  # (HW, 2), any coordinates do: the fit is affine
    X = torch.cat([p, torch.ones(H * W, 1)], dim=1).double()  # (HW, 3)
    f = flow.reshape(N, -1, 2).double()  # (N, HW, 2)
    w = weights.reshape(N, -1, 1).double()  # (N, HW, 1)
    A = X.T @ (w * X)  # (N, 3, 3)
    coef = torch.linalg.solve(A + 1e-9 * torch.eye(3, dtype=A.dtype), X.T @ (w * f))  # (N, 3, 2)
    residual = f - X @ coef  # (N, HW, 2)
    energy = (w * f.square()).sum(dim=(1, 2))
    share = (w * residual.square()).sum(dim=(1, 2)) / energy.clamp_min(1e-12)
    magnitude = (w[..., 0] * f.norm(dim=-1)).sum(dim=1) / w.sum(dim=(1, 2)).clamp_min(1e-12)
    return share.float(), magnitude.float()


def independent_motion(flow: torch.Tensor, frames: torch.Tensor) -> dict[str, float]:
    """flow (B, T', H, W, 2) in pixels from frames[:, t] (B, T, 3, H, W) -> the texture-weighted share of the
    motion not explained by one affine map per frame pair (pooled over pairs: the energy left over the energy), and
    the mean flow length in pixels."""
    weights = texture_weights(frames[:, : flow.shape[1]]).flatten(0, 1)  # (N, H, W)
    f = flow.flatten(0, 1)
    share, magnitude = affine_share(f, weights)
    energy = (weights[..., None] * f.square()).sum(dim=(1, 2, 3))  # (N,): pool the pairs by their motion
    pooled = float((share * energy).sum() / energy.sum().clamp_min(1e-12))
    return {"non_affine_share": pooled, "flow_px": float(magnitude.mean())}
