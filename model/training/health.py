"""Health checks of a training run, every ``health_every`` steps on the EMA generator, and their thresholds.

- Stage 1, convergence: the Fréchet distance of the canonical images to real frames (ImageDistance). Stage 1 ends
  once it has not improved by IMPROVEMENT for ``stage1_patience`` checks (Convergence).
- Stage 2, folds: the field health of sampled videos (model.evaluation.metrics.field_health). A run whose folds
  pass ``max_folds`` at FOLD_CHECKS_TO_STOP checks in a row stops (FoldStop).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from model.data import MovingMNIST, VideoClips
from model.evaluation.digits import digit_coverage, load_digit_classifier
from model.evaluation.metrics import RandomFeatures, field_health, frechet_distance
from model.gendef import GenDeF

log = logging.getLogger(__name__)

# every check samples the same seeds, so checks of a run compare; they start above the sample grids' 0, 1, ...
CHECK_SEED = 10_000
CHECK_IMAGES = 128  # stage 1: canonical images (and as many real frames) in the Fréchet distance
CHECK_VIDEOS, CHECK_FRAMES = 8, 16  # stage 2: videos of this many frames whose fields are checked
SAMPLE_CHUNK = 32  # canonical images sampled at a time
REAL_SEED = 1  # the real frames: the same ones at every check
IMPROVEMENT = 0.02  # a check counts as progress when the distance falls by this fraction of the best so far
FOLD_CHECKS_TO_STOP = 2

# what the checks report (stage 1: fd_image, and digit_coverage on Moving MNIST; stage 2: field_health's)
HEALTH = [
    "fd_image",
    "folds",
    "off_canvas",
    "mean_offset",
    "static_share",
    "frame0_offset",
    "motion",
    "digit_coverage",
]


class FoldsExceeded(RuntimeError):
    """Raised when a run's fields fold past TrainConfig.max_folds at FOLD_CHECKS_TO_STOP health checks in a row."""


@dataclass
class Convergence:
    """Stage 1's progress: the best Fréchet distance so far and the checks since it improved."""

    best_fd: float = math.inf
    stale_checks: int = 0

    def record(self, fd: float, stage_step: int, min_steps: int, every: int) -> None:
        """Count the check at stage_step. Only checks from min_steps on count: early images (e.g. all black for
        Moving MNIST) can score deceptively well; the first counted check sets the best."""
        if stage_step < min_steps:
            return
        if stage_step < min_steps + every or fd < (1 - IMPROVEMENT) * self.best_fd:
            self.best_fd, self.stale_checks = fd, 0
        else:
            self.stale_checks += 1

    def converged(self, stage_step: int, min_steps: int, patience: int) -> bool:
        return stage_step >= min_steps and self.stale_checks >= patience


@dataclass
class FoldStop:
    """Stage 2's fold watch: checks in a row whose fields fold past max_folds."""

    fold_checks: int = 0

    def record(self, folds: float, max_folds: float, step: int) -> bool:
        """Count a check's folds (a share of field points); True when the run must stop."""
        if folds <= max_folds:
            self.fold_checks = 0
            return False
        self.fold_checks += 1
        log.warning(
            "step %d: %.1f %% of field points fold (limit %.1f %%)", step, 100 * folds, 100 * max_folds
        )
        return self.fold_checks >= FOLD_CHECKS_TO_STOP


class ImageDistance:
    """The Fréchet distance of a generator's canonical images to real frames. On Moving MNIST it is measured in the
    digit classifier's features (random conv features plateau there while the images are still not digits),
    loaded once, and the images' digit coverage comes with it (mode collapse shows there first); elsewhere in
    random conv features."""

    def __init__(self, data: VideoClips | MovingMNIST) -> None:
        self.data = data
        self.classifier = load_digit_classifier() if isinstance(data, MovingMNIST) else None
        self.random_features = RandomFeatures()

    def features(self, images: torch.Tensor) -> torch.Tensor:  # (N, D)
        if self.classifier is None:
            return self.random_features(images)
        return self.classifier.features(images.cpu())

    @torch.no_grad()
    def __call__(self, G: GenDeF, max_gap: int, images: int = CHECK_IMAGES) -> dict[str, float]:
        real = self.data.sample(images, 1, max_gap, torch.Generator().manual_seed(REAL_SEED))[0][:, 0]
        seeds = list(range(CHECK_SEED, CHECK_SEED + images))
        chunks = [seeds[i : i + SAMPLE_CHUNK] for i in range(0, images, SAMPLE_CHUNK)]
        fake = torch.cat([G.sample(s, s, 1).canonical for s in chunks])  # (images, 3, H, W)
        fd = frechet_distance(self.features(fake), self.features(real))
        if self.classifier is None:
            return {"fd_image": fd}
        return {"fd_image": fd, "digit_coverage": digit_coverage(self.classifier, fake.cpu())}


@torch.no_grad()
def video_health(G: GenDeF, videos: int = CHECK_VIDEOS, frames: int = CHECK_FRAMES) -> dict[str, float]:
    """The field health of G's videos at the check seeds (model.evaluation.metrics.field_health)."""
    seeds = list(range(CHECK_SEED, CHECK_SEED + videos))
    return field_health(G.sample(seeds, seeds, frames).fields)
