"""The camera's motion over a shot: for every frame, the map from its pixels to a reference frame's (3x3, acting on
homogeneous pixel coordinates, pixel centres at integers), estimated with OpenCV.

- Pairs of frames are matched with ORB features (brute-force Hamming matching, Lowe's ratio test) and the map
  between them fitted robustly (RANSAC, then least squares on the inliers): an affine map by default (six degrees
  of freedom: pan, zoom, roll and the slight shear of a rolling shutter), a homography on request. Moving objects are
  outliers of the fit as long as the background has most of the features.
- A pair with too few features (flat cartoon backgrounds, blur) falls back to DIS optical flow sampled on a grid of
  textured points, fitted the same way; a pair with no reliable fit at all is taken as a still camera.
- Chaining: each frame is matched to its keyframe (every ``keyframe_stride`` frames) and the keyframes to each
  other, so the error of one pair reaches at most the frames up to the next keyframe and grows with the number of
  keyframes, not of frames. Where a frame's match to its keyframe fails, its match to the previous frame is used.
- The reference is the shot's middle frame: the panorama (model/decomposition/panorama.py) is drawn at its scale,
  which halves the zoom any frame is away from it.

Deterministic: ORB, the matcher and OpenCV's RANSAC (seeded by OpenCV's own fixed RNG state, reset per call) give
the same maps for the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from model.pixels import to_uint8


@dataclass(frozen=True)
class CameraConfig:
    model: str = "affine"  # "affine" or "homography": what one frame's map to another may be
    keyframe_stride: int = 6  # frames between keyframes (each frame is matched to its keyframe)
    features: int = 1500  # ORB features per frame
    min_inliers: int = 24  # fewer inliers than this: the pair's features do not fit, try flow
    ransac_px: float = 2.0  # a match is an inlier when the map puts it within this many pixels
    max_scale_step: float = (
        1.5  # a fit that zooms or stretches by more than this between two frames is refused
    )
    flow_rounds: int = 2  # at most this many refinements of a pair's map by the flow left after it


def grey(frames: torch.Tensor) -> list[np.ndarray]:
    """(T, 3, H, W) in [-1, 1] -> T uint8 (H, W) grey images."""
    rgb = to_uint8(frames.float()).permute(0, 2, 3, 1).numpy()  # (T, H, W, 3)
    return [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in rgb]


def _fit(src: np.ndarray, dst: np.ndarray, config: CameraConfig) -> tuple[np.ndarray | None, int]:
    """The map (3x3) taking points src (N, 2) to dst (N, 2), fitted robustly, and its inlier count."""
    if len(src) < config.min_inliers:
        return None, 0
    cv2.setRNGSeed(0)
    if config.model == "homography":
        matrix, inliers = cv2.findHomography(src, dst, cv2.RANSAC, config.ransac_px, maxIters=2000)
    else:
        matrix, inliers = cv2.estimateAffine2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=config.ransac_px, maxIters=2000, refineIters=20
        )
        if matrix is not None:
            matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
    if matrix is None or inliers is None:
        return None, 0
    count = int(inliers.sum())
    singular = np.linalg.svd(matrix[:2, :2], compute_uv=False)
    if count < config.min_inliers or singular[0] / max(singular[1], 1e-9) > config.max_scale_step:
        return None, count
    if not 1 / config.max_scale_step < abs(np.linalg.det(matrix[:2, :2])) ** 0.5 < config.max_scale_step:
        return None, count
    return matrix, count


class Matcher:
    """Pairwise maps between the frames of one shot, each frame's features computed once."""

    def __init__(self, images: list[np.ndarray], config: CameraConfig):
        self.images, self.config = images, config
        # ORB's default 31 px patches leave out a 31 px border: most of a small frame
        patch = 31 if min(images[0].shape) >= 256 else 15
        orb = cv2.ORB_create(
            nfeatures=config.features, fastThreshold=10, edgeThreshold=patch, patchSize=patch
        )
        self.features = [orb.detectAndCompute(image, None) for image in images]
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def map(
        self, a: int, b: int, guess: np.ndarray | None = None, rounds: int | None = None
    ) -> np.ndarray | None:
        """The map (3x3) from frame a's pixels to frame b's, or None when neither features nor flow fit one: a
        start (`guess`, else the features' fit, else the identity) refined by the flow between frame a warped by it
        and frame b (ORB's corners are found to a pixel or so, DIS flow to a fraction of one on texture)."""
        best = guess if guess is not None else self.map_by_features(a, b)
        # each round starts from a closer map: smaller flow, finer fit
        for _ in range(self.config.flow_rounds if rounds is None else rounds):
            fine = self.map_by_flow(a, b, np.eye(3) if best is None else best)
            if fine is None:
                break
            change = np.abs(fine - (np.eye(3) if best is None else best))[:2].max()
            best = fine
            if change < 1e-3:
                break
        return best

    def map_by_features(self, a: int, b: int) -> np.ndarray | None:
        (ka, da), (kb, db) = self.features[a], self.features[b]
        if da is None or db is None or len(ka) < 2 or len(kb) < 2:
            return None
        pairs = self.matcher.knnMatch(da, db, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
        src = np.float32([ka[m.queryIdx].pt for m in good]).reshape(-1, 2)
        dst = np.float32([kb[m.trainIdx].pt for m in good]).reshape(-1, 2)
        return _fit(src, dst, self.config)[0]

    def map_by_flow(self, a: int, b: int, start: np.ndarray) -> np.ndarray | None:
        """The map from frame a to b: `start` (3x3) corrected by the DIS flow from frame b to frame a warped by
        start, at textured points of a grid (every 4th pixel) where the forward and backward flows agree within
        a pixel."""
        B = self.images[b]
        H, W = B.shape
        A = cv2.warpPerspective(
            self.images[a], start, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        seen = cv2.warpPerspective(np.ones_like(B), start, (W, H), flags=cv2.INTER_NEAREST)
        forward = self.flow.calc(B, A, None)  # (H, W, 2): b's pixel p shows what warped a shows at p + flow
        backward = self.flow.calc(A, B, None)
        ys, xs = np.mgrid[2:H:4, 2:W:4]
        xs, ys = xs.ravel(), ys.ravel()
        texture = np.hypot(cv2.Sobel(B, cv2.CV_32F, 1, 0), cv2.Sobel(B, cv2.CV_32F, 0, 1))[ys, xs]
        f = forward[ys, xs]
        x2, y2 = (xs + f[:, 0]).astype(np.float32), (ys + f[:, 1]).astype(np.float32)
        inside = (x2 >= 0) & (x2 <= W - 1) & (y2 >= 0) & (y2 <= H - 1)
        back = cv2.remap(backward, x2[None], y2[None], cv2.INTER_LINEAR)[0]  # (N, 2)
        consistent = np.hypot(*(f + back).T) < 1.0
        keep = inside & consistent & (texture > 20) & (seen[ys, xs] > 0)
        # b's pixel p and warped a's p + f show one point: a's pixel start^-1 (p + f) -> b's pixel p.
        dst = np.stack([xs, ys], axis=1)[keep].astype(np.float64)
        moved = np.concatenate([dst + f[keep], np.ones((len(dst), 1))], axis=1) @ np.linalg.inv(start).T
        src = moved[:, :2] / moved[:, 2:]
        return _fit(src.astype(np.float32), dst.astype(np.float32), self.config)[0]


def estimate(frames: torch.Tensor, config: CameraConfig = CameraConfig()) -> torch.Tensor:
    """Each frame's map to the middle frame: frames (T, 3, H, W) in [-1, 1] -> (T, 3, 3) float64, acting on
    homogeneous pixel coordinates (x, y, 1) with pixel centres at integers; the middle frame's is the identity."""
    images = grey(frames)
    T = len(images)
    matcher = Matcher(images, config)
    stride = max(1, config.keyframe_stride)
    keys = list(range(0, T, stride))
    ref = T // 2
    # Each frame to the one before (small motions: flow finds them from the identity, or from the features).
    steps = [np.eye(3)] + [matcher.map(t, t - 1, rounds=1) for t in range(1, T)]
    steps = [np.eye(3) if m is None else m for m in steps]
    chained = [np.eye(3)]  # frame t -> frame 0 through every frame between: a guess that drifts
    for t in range(1, T):
        chained.append(chained[-1] @ steps[t])

    def guess(a: int, b: int) -> np.ndarray:
        return np.linalg.inv(chained[b]) @ chained[a]

    # Keyframes matched to each other from that guess, chained outward from the keyframe nearest the reference.
    to_key0: dict[int, np.ndarray] = {}
    anchor = min(keys, key=lambda k: abs(k - ref))
    to_key0[anchor] = np.eye(3)
    for direction in (1, -1):
        index = keys.index(anchor)
        while 0 <= index + direction < len(keys):
            here, there = keys[index + direction], keys[index]
            step = matcher.map(here, there, guess(here, there))
            to_key0[here] = to_key0[there] @ (step if step is not None else guess(here, there))
            index += direction
    maps = [np.eye(3)] * T
    for k in keys:
        maps[k] = to_key0[k]
    # Every other frame matched to its nearest keyframe, from the guess.
    for t in range(T):
        if t not in to_key0:
            key = min(keys, key=lambda k: (abs(k - t), k))
            step = matcher.map(t, key, guess(t, key))
            maps[t] = to_key0[key] @ (step if step is not None else guess(t, key))
    # The keyframe nearest the middle is the identity; move the reference to the middle frame itself.
    to_ref = np.linalg.inv(maps[ref])
    out = np.stack([to_ref @ m for m in maps])
    return torch.from_numpy(out / out[:, 2:3, 2:3])


def apply(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """maps (T, 3, 3) applied to points (..., 2) -> (T, ..., 2) (projective division included)."""
    m = maps.to(points.dtype)
    flat = points.reshape(-1, 2)  # (N, 2)
    homogeneous = torch.cat([flat, torch.ones_like(flat[:, :1])], dim=1)  # (N, 3)
    out = torch.einsum("tij,nj->tni", m, homogeneous)  # (T, N, 3)
    out = out[..., :2] / out[..., 2:3]
    return out.reshape(m.shape[0], *points.shape)
