"""What a user judges in a decomposition beyond its PSNR: whether the fields are a motion and whether paint rides on
the content. Used by the tests and benchmarks/decompose.py.

- ``fold_share``: the share of frame pixels where the map pixel -> canonical point folds (det J <= 0).
- ``affine_rms``: the RMS distance, in canonical pixels, of each frame's field from the affine map that fits it
  best (least squares); a camera filming a flat photo moves it by exactly such a map, so on such clips this is the
  motion a fit invented.
- ``overlap``: paint carried by the fields against the clip's own motion. M_t is the painted mask in frame t
  (``render_mask``); M_{t+1} carried back to frame t by the original clip's DIS optical flow
  (M_{t+1}(p + flow_{t -> t+1}(p))); the overlap is their IoU, averaged over frame pairs. Paint that stays on the
  screen while the scene slides scores near 0, paint that rides on the content near an ideal edit's score.
- ``dot_like_share``: of the blobs the painted dots make in the frames, the share that are still dots: elongated no
  more than 2:1 (square root of the ratio of the pixel covariance's eigenvalues) and 0.4 to 2.5 times the dot's area.
  A mosaic smears dots into streaks or splits them into shards.
- ``film``: a synthetic camera filming a photo (pan, zoom, roll), with its true maps: the ground truth for the above.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from model.decomposition.camera import grey
from model.warp import warp


def to_canonical_px(fields: torch.Tensor, canonical_hw: tuple[int, int]) -> torch.Tensor:
    """fields (..., H, W, 2) in grid_sample units -> canonical pixel coordinates (centres at integers)."""
    Hc, Wc = canonical_hw
    return (fields + 1) * fields.new_tensor([Wc / 2, Hc / 2]) - 0.5


def fold_share(fields: torch.Tensor) -> float:
    """Share of frame pixels (quads of neighbours) where fields (T, H, W, 2) fold: det J <= 0."""
    c = fields.double()
    dx = c[:, :-1, 1:] - c[:, :-1, :-1]  # (T, H-1, W-1, 2)
    dy = c[:, 1:, :-1] - c[:, :-1, :-1]
    det = dx[..., 0] * dy[..., 1] - dy[..., 0] * dx[..., 1]
    return float((det <= 0).double().mean())


def affine_rms(fields: torch.Tensor, canonical_hw: tuple[int, int]) -> float:
    """RMS distance in canonical pixels of fields (T, H, W, 2) from the best affine map of each frame."""
    c = to_canonical_px(fields.double(), canonical_hw)  # (T, H, W, 2)
    T, H, W, _ = c.shape
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    design = torch.stack(
        [xs.flatten(), ys.flatten(), torch.ones(H * W, dtype=torch.float64)], dim=1
    )  # (HW, 3)
    target = c.reshape(T, H * W, 2)
    solution = torch.linalg.lstsq(design.expand(T, -1, -1), target).solution  # (T, 3, 2)
    residual = target - design @ solution
    return float(residual.square().sum(dim=-1).mean().sqrt())


def clip_flow(frames: torch.Tensor) -> np.ndarray:
    """DIS optical flow (OpenCV, medium preset) from each frame (T, 3, H, W) in [-1, 1] to the next: (T-1, H, W, 2)
    in pixels."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    images = grey(frames)
    return np.stack([dis.calc(a, b, None) for a, b in zip(images[:-1], images[1:], strict=True)])


def render_mask(mask: torch.Tensor, fields: torch.Tensor) -> np.ndarray:
    """Where frames show a canonical mask (Hc, Wc) in [0, 1] through fields (T, H, W, 2): (T, H, W) bool (bilinear
    coverage >= 0.5)."""
    shown = warp(mask[None, None].float(), fields[None].float(), "bilinear")[0, :, 0]  # (T, H, W)
    return (shown >= 0.5).numpy()


def overlap(masks: np.ndarray, flow: np.ndarray) -> float:
    """Mean IoU of each frame's mask (T, H, W) bool with the next frame's carried back by flow (T-1, H, W, 2),
    over the pairs where either has paint."""
    T, H, W = masks.shape
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    scores = []
    for t in range(T - 1):
        carried = cv2.remap(
            masks[t + 1].astype(np.float32),
            xs + flow[t, ..., 0],
            ys + flow[t, ..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
        )
        a, b = masks[t], carried >= 0.5
        union = (a | b).sum()
        if union:
            scores.append((a & b).sum() / union)
    return float(np.mean(scores)) if scores else math.nan


def blobs(mask: np.ndarray) -> list[tuple[int, float]]:
    """The connected blobs of one frame's mask (H, W) bool that do not touch its edge: [(area, elongation)],
    elongation the square root of the ratio of the pixel covariance's eigenvalues (1 for a disc)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    H, W = mask.shape
    out = []
    for c in range(1, count):
        x, y, w, h, area = stats[c]
        if x == 0 or y == 0 or x + w == W or y + h == H:
            continue
        ys, xs = np.nonzero(labels == c)
        if area < 2:
            out.append((int(area), math.inf))
            continue
        eig = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)) + 1e-3 * np.eye(2))
        out.append((int(area), float(math.sqrt(eig[1] / eig[0]))))
    return out


def dot_like_share(masks: np.ndarray, dot_area: float) -> float:
    """Share of the blobs in all frames' masks (T, H, W) that are dot-like: elongated <= 2:1 and 0.4-2.5x
    dot_area (frame pixels)."""
    found = [b for mask in masks for b in blobs(mask)]
    good = [a for a, e in found if e <= 2.0 and 0.4 * dot_area <= a <= 2.5 * dot_area]
    return len(good) / len(found) if found else math.nan


def discs(shape: tuple[int, int], centres: list[tuple[float, float]], radius: float) -> torch.Tensor:
    """A mask (H, W) float of discs at centres [(x, y)] in pixels."""
    H, W = shape
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij"
    )
    out = torch.zeros(H, W)
    for x, y in centres:
        out = torch.maximum(out, (((xs - x) ** 2 + (ys - y) ** 2) <= radius**2).float())
    return out


def moving_points(
    frames: torch.Tensor,
    fields: torch.Tensor,
    canonical_hw: tuple[int, int],
    count: int,
    spacing: float,
    min_speed: float = 0.5,
) -> list[tuple[float, float]]:
    """Up to `count` canonical points (x, y) where the clip moves: pixels of the frame whose DIS flow to the next one
    moves most (its 95th percentile of speed; frames (T, 3, H, W)) moving at least min_speed px a frame, fastest
    first, read through that frame's field into the canonical image, at least `spacing` canonical pixels apart and
    from the frame's edge."""
    flow = clip_flow(frames)  # (T-1, H, W, 2)
    speeds = np.hypot(flow[..., 0], flow[..., 1])  # (T-1, H, W)
    t = int(np.argmax(np.percentile(speeds.reshape(len(speeds), -1), 95, axis=1)))
    speed = speeds[t].copy()
    H, W = speed.shape
    margin = int(spacing)
    speed[:margin], speed[-margin:], speed[:, :margin], speed[:, -margin:] = 0, 0, 0, 0
    where = to_canonical_px(fields[t], canonical_hw).numpy()  # (H, W, 2)
    picked: list[tuple[float, float]] = []
    for index in np.argsort(-speed, axis=None, kind="stable"):
        y, x = divmod(int(index), W)
        if speed[y, x] < min_speed or len(picked) == count:
            break
        point = (float(where[y, x, 0]), float(where[y, x, 1]))
        if all(math.hypot(point[0] - a, point[1] - b) >= spacing for a, b in picked):
            picked.append(point)
    return picked


def film(
    photo: np.ndarray,
    num_frames: int,
    size: tuple[int, int],
    pan: float = 1.0,
    zoom: float = 1.3,
    roll_deg: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A camera filming a photo (h, w, 3) uint8: frames (T, H, W, 3) uint8 of `size` (H, W), panning left to right
    by `pan` frame widths while it zooms in from 1 to `zoom` and rolls by roll_deg, centred on the photo's middle.
    Returns the frames and each frame's map from its pixels to the photo's (T, 3, 3) (pixel centres at integers).
    Needs a photo about (1 + pan) frame widths wide and 1.1 frame heights high."""
    H, W = size
    h, w = photo.shape[:2]
    frames, maps = [], []
    for t in range(num_frames):
        s = t / max(1, num_frames - 1)
        scale = 1 / (1 + (zoom - 1) * s)  # photo pixels per frame pixel
        angle = math.radians(roll_deg * s)
        cx = w / 2 + (s - 0.5) * pan * W
        cy = h / 2
        c, n = math.cos(angle) * scale, math.sin(angle) * scale
        # frame pixel p -> photo: centre + R S (p - frame centre)
        m = np.array([[c, -n, 0.0], [n, c, 0.0], [0.0, 0.0, 1.0]])
        m[:2, 2] = [cx, cy] - m[:2, :2] @ [(W - 1) / 2, (H - 1) / 2]
        frames.append(
            cv2.warpAffine(
                photo,
                m[:2],
                (W, H),
                flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT,
            )
        )
        maps.append(m)
    return np.stack(frames), np.stack(maps)


def photo_points(
    maps: np.ndarray, frame_points: list[tuple[float, float]], t: int
) -> list[tuple[float, float]]:
    """Where frame t's pixels frame_points [(x, y)] are in the photo a camera filmed by maps (T, 3, 3) (film)."""
    out = []
    for x, y in frame_points:
        p = maps[t] @ np.array([x, y, 1.0])
        out.append((float(p[0] / p[2]), float(p[1] / p[2])))
    return out


def canonical_points(
    fields: torch.Tensor, canonical_hw: tuple[int, int], frame_points: list[tuple[float, float]], t: int
) -> list[tuple[float, float]]:
    """Where frame t's pixels frame_points [(x, y)] are in the canonical image, read from fields (T, H, W, 2)."""
    where = to_canonical_px(fields[t], canonical_hw)  # (H, W, 2)
    return [tuple(float(v) for v in where[round(y), round(x)]) for x, y in frame_points]


def photo_psnr(
    canonical: torch.Tensor, fields: torch.Tensor, photo: np.ndarray, maps: np.ndarray, t: int
) -> float:
    """PSNR (dB) of a canonical image (3, Hc, Wc) in [-1, 1] against the photo a camera filmed by maps (film),
    brought into the canonical image by the map through frame t: the photo's point of frame t's pixel p against
    the canonical point fields[t] gives p (each frame's best affine map, so only where the frames look). Compared
    over the canonical pixels some frame reads."""
    Hc, Wc = canonical.shape[1:]
    c = to_canonical_px(fields[t].double(), (Hc, Wc)).reshape(-1, 2).numpy()  # frame t's canonical points
    H, W = fields.shape[1:3]
    ys, xs = np.mgrid[0:H, 0:W]
    frame_px = np.stack([xs.ravel(), ys.ravel(), np.ones(H * W)], axis=1)
    to_frame = np.linalg.lstsq(np.concatenate([c, np.ones((H * W, 1))], axis=1), frame_px, rcond=None)[0].T
    to_photo = maps[t] @ to_frame  # canonical px -> photo px (3, 3)
    probe = torch.ones(1, 1, Hc, Wc, requires_grad=True)
    with torch.enable_grad():
        warp(probe, fields[None].float(), "bilinear").sum().backward()
    used = (probe.grad[0, 0] > 0.5).numpy()
    truth = cv2.warpPerspective(
        photo, to_photo, (Wc, Hc), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
    mine = ((canonical.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    mse = float(np.mean((mine[used] - truth[used].astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else math.inf
