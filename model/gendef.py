"""GenDeF: a canonical image + per-frame deformation fields; frames = canonical warped by the fields.

Inference (what the worker calls) is ``sample`` / ``sample_motion`` (and ``model.warp.warp`` for the edit
path). Training uses the same pieces with its own random draws: ``canonical``, ``fields``; it sees the raw
synthesis output (as StyleGAN2), which ``sample`` clamps to [-1, 1] (so the warped frames stay in range too).

Determinism: every random draw of a video comes from CPU ``torch.Generator``s seeded from its ``seed`` (content
code z and the canonical noise maps) and its ``motion_seed`` (the motion trajectory), then moves to the model's
device. By default each video is computed on its own (its frames batched, in chunks of ``frame_chunk``), so a
video's output never depends on the other videos of the call: ``sample([a, b])`` is ``sample([a])`` and
``sample([b])`` stacked, bit for bit. ``stack=True`` runs the videos of a call in one forward pass instead (what
the worker's batches do: several times the throughput on a GPU, more on a CPU too); batched kernels may sum in
another order, so a stacked video equals its own pass within ``STACK_TOLERANCE`` (a video alone is the same
either way). All of this holds per device and per inference setting: ``precision`` (float32, or bf16/fp16
autocast, set by ``model.inference.prepare`` within its documented tolerance of float32), channels_last and
torch.compile each change the kernels that run, so they may change the last bits (outputs are always float32).

A conditional model (``canonical.classes`` > 0) draws each video's class labels from its seed, after z and the
noise maps; ``labels`` (one entry per video: its class indices, or None for the seed's) asks for others instead.
Asked labels change only what the labels decide: z, the noise maps and the motion still come from the seeds, and a
video whose labels are None is the same, bit for bit, as without ``labels``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from model.canonical import CanonicalGenerator
from model.config import GenDeFConfig
from model.deformation import DeformationGenerator
from model.layers import multi_hot
from model.motion import MotionEncoder
from model.objects import Objects
from model.warp import identity_grid, warp

SEED_RANGE = 2**32  # torch's CPU generator keeps only the low 32 bits of a seed: larger seeds would collide
_MOTION_STREAM = 0x9E3779B9  # xor-ed into motion seeds so that seed == motion_seed draws unrelated numbers
# Largest |difference| of a stacked video (sample(..., stack=True)) from the same video sampled alone: fields in
# grid_sample's normalised coordinates (a pixel of a 64 px image is 2 / 64 = 0.03), canonical images in [-1, 1]
# (2 / 255 is one level of the 8-bit PNG: the stored canonical image differs by at most one level).
STACK_TOLERANCE = {"fields": 1e-4, "canonical": 2 / 255}

Seeds = Sequence[int]  # one per video
Labels = Sequence[int] | None  # one video's class labels, asked; None: drawn from its seed
Asked = Sequence[Labels] | None  # each video's Labels; None: every video's from its seed


@dataclass
class Sample:
    canonical: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    fields: torch.Tensor  # (B, T, H, W, 2) sampling coordinates, model.warp convention
    frames: torch.Tensor  # (B, T, 3, H, W) in [-1, 1] == warp(canonical, fields).clamp(-1, 1)


class GenDeF(nn.Module):
    def __init__(self, config: GenDeFConfig) -> None:
        super().__init__()
        self.config = config
        self.precision = torch.float32  # of sample/sample_motion: float32, or the dtype of their autocast
        self.canonical = CanonicalGenerator(config.canonical, config.resolution)
        if self.moves_objects:  # fields from each object's own path (model.objects)
            self.objects = Objects(config.objects, config.resolution, config.canonical.classes)
            return
        self.motion = MotionEncoder(config.motion, config.max_frames)
        self.deformation = DeformationGenerator(
            config.deformation,
            config.resolution,
            z_dim=config.canonical.z_dim,
            motion_dim=config.motion.code_dim,
            feature_channels=self.canonical.feature_channels,
        )

    @property
    def moves_objects(self) -> bool:
        """Whether the fields come from model.objects (each object on its own path) rather than the deformation
        generator."""
        return self.config.objects.count > 0

    @property
    def max_frames(self) -> int:
        return self.config.max_frames

    @property
    def device(self) -> torch.device:
        return self.canonical.const.device

    # ---- the generator, as training calls it -------------------------------------------------------------------

    def fields(
        self, z: torch.Tensor, features: torch.Tensor, motion_z: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """z: (B, z_dim), features: (B, C, H, W) from self.canonical, motion_z: (B, R, Zm), t: (B, T) frame times
        -> fields (B, T, H, W, 2) = identity + offset."""
        offset = self.deformation(
            self.deformation.mapping(z), self.deformation.condition(features), self.motion(motion_z, t)
        )
        return identity_grid(*offset.shape[2:4], device=offset.device) + offset  # (B, T, H, W, 2)

    # ---- inference -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self, seeds: Seeds, motion_seeds: Seeds, num_frames: int, stack: bool = False, labels: Asked = None
    ) -> Sample:
        """B videos of num_frames frames: canonical (B, 3, H, W), fields (B, T, H, W, 2), frames (B, T, 3, H, W).
        stack: the B videos in one forward pass (faster; each video within STACK_TOLERANCE of its own pass).
        labels: a conditional model's labels per video (see the module doc); None: every video's from its seed."""
        videos = self._check(seeds, motion_seeds, num_frames, labels)
        canonical, fields = self._videos(videos, torch.arange(num_frames, dtype=torch.float32), True, stack)
        return Sample(canonical=canonical, fields=fields, frames=warp(canonical, fields).clamp(-1, 1))

    @torch.no_grad()
    def sample_motion(
        self, seeds: Seeds, motion_seeds: Seeds, num_frames: int, stack: bool = False, labels: Asked = None
    ) -> torch.Tensor:
        """Motion resampling: the fields (B, T, H, W, 2) that sample() gives for these seeds (and labels), without
        making the canonical image (only the canonical features that condition the fields; a model that moves
        objects makes the image, where it finds them)."""
        videos = self._check(seeds, motion_seeds, num_frames, labels)
        return self._videos(videos, torch.arange(num_frames, dtype=torch.float32), False, stack)[1]

    @torch.no_grad()
    def motion_at(
        self, seed: int, motion_seed: int, times: Sequence[float], labels: Labels = None
    ) -> torch.Tensor:
        """The fields (T, H, W, 2) of one video at frame times that may fall between frames (0 <= t <=
        max_frames - 1): the motion codes are continuous in time, so t = k is sample()'s frame k."""
        videos = self._check([seed], [motion_seed], 1, [labels])
        if not times or not all(0 <= t <= self.max_frames - 1 for t in times):
            raise ValueError(f"times must be in [0, {self.max_frames - 1}], got {list(times)!r}")
        t = torch.tensor(list(times), dtype=torch.float32)
        return self._videos(videos, t, False, True)[1][0]

    def _check(
        self, seeds: Seeds, motion_seeds: Seeds, num_frames: int, labels: Asked = None
    ) -> list[tuple[int, int, Labels]]:
        """(seed, motion_seed, labels) of each video, or ValueError saying what is wrong."""
        seeds, motion_seeds = list(seeds), list(motion_seeds)
        if not seeds or len(seeds) != len(motion_seeds):
            raise ValueError(
                f"pass one motion seed per seed (at least one video); got {len(seeds)} seeds and "
                f"{len(motion_seeds)} motion seeds"
            )
        for s in seeds + motion_seeds:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_RANGE:
                raise ValueError(f"seeds must be integers in [0, {SEED_RANGE - 1}], got {s!r}")
        if (
            isinstance(num_frames, bool)
            or not isinstance(num_frames, int)
            or not 1 <= num_frames <= self.max_frames
        ):
            raise ValueError(f"num_frames must be an integer in [1, {self.max_frames}], got {num_frames!r}")
        labels = [None] * len(seeds) if labels is None else [self._check_labels(x) for x in labels]
        if len(labels) != len(seeds):
            raise ValueError(f"pass one entry of labels per video; got {len(labels)} for {len(seeds)} videos")
        return list(zip(seeds, motion_seeds, labels, strict=True))

    def _check_labels(self, labels: Labels) -> Labels:
        """One video's asked labels as a sorted list (None stays None), or ValueError naming the classes."""
        if labels is None:
            return None
        classes, count = self.canonical.classes, self.canonical.labels_per_image
        if not classes:
            raise ValueError(f"this model is unconditional: it takes no labels, got {list(labels)!r}")
        labels = list(labels)
        if (
            len(labels) != count
            or len(set(labels)) != count
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < classes for x in labels)
        ):
            raise ValueError(
                f"labels must be {count} distinct class indices in [0, {classes - 1}], got {labels!r}"
            )
        return sorted(labels)

    def _videos(
        self, videos: list[tuple[int, int, Labels]], times: torch.Tensor, with_image: bool, stack: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Canonical images (B, 3, H, W) clamped to [-1, 1] (None without image) and fields (B, T, H, W, 2) at
        frame times (T,), one forward pass per video, or one for all when stacked."""
        if not stack and len(videos) > 1:
            outs = [self._videos([video], times, with_image, True) for video in videos]
            images = [image for image, _ in outs]
            return (torch.cat(images) if with_image else None), torch.cat([f for _, f in outs])
        z, noise, labels, motion_z = self._draws(videos)
        if self.moves_objects:  # the objects are found in the canonical image, which their motion needs
            with self._autocast():
                image = self.canonical(z, noise, labels, with_image=True)[0].float().clamp(-1, 1)
            fields = self.objects(image, labels, motion_z, times.to(self.device))
            return (image if with_image else None), fields
        with self._autocast():
            image, features = self.canonical(
                z, noise, labels, with_image=with_image
            )  # (B, 3, H, W), (B, C, H, W)
            t = times.to(self.device)[None].expand(len(videos), -1)  # (B, T)
            num_frames = t.shape[1]
            chunk = max(
                1, self.config.deformation.frame_chunk // len(videos)
            )  # frames of each video per pass
            fields = torch.cat(
                [
                    self.fields(z, features, motion_z, t[:, i : i + chunk]).float()
                    for i in range(0, num_frames, chunk)
                ],
                dim=1,
            )  # (B, T, H, W, 2)
        return (image.float().clamp(-1, 1) if image is not None else None), fields

    def labels(self, seeds: Seeds, labels: Asked = None) -> torch.Tensor | None:
        """The class labels each seed's canonical image is conditioned on (the asked ones where labels has them):
        (B, classes) multi-hot on the CPU, None for an unconditional model."""
        videos = self._check(list(seeds), list(seeds), 1, labels)
        if not self.canonical.classes:
            return None
        return torch.cat([self._content(seed, asked)[2] for seed, _, asked in videos])

    def _content(
        self, seed: int, labels: Labels = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """One video's content draws from its seed, on the CPU: z (1, z_dim), noise maps (per layer (1, 1, r, r))
        and, for a conditional model, its labels (1, classes): the asked ones, else drawn last, so that neither an
        unconditional model's draws nor z and the noise maps depend on them."""
        content = torch.Generator("cpu").manual_seed(seed)  # CPU draws (whatever torch's default device)
        z = torch.randn(1, self.canonical.z_dim, generator=content, device="cpu")
        noise = [torch.randn(1, *shape, generator=content) for shape in self.canonical.noise_shapes()]
        if labels is not None:
            return z, noise, multi_hot(torch.tensor([labels]), self.canonical.classes)
        return z, noise, self.canonical.random_labels(1, content)

    def _draws(
        self, videos: list[tuple[int, int, Labels]]
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
        """Each video's random draws from its own seeds, stacked on the model's device: z (B, z_dim), noise maps
        (per layer (B, 1, r, r)), labels (B, classes) or None (see _content), motion trajectory (B, R, Zm)."""
        contents, motion_zs = [self._content(seed, labels) for seed, _, labels in videos], []
        for _, motion_seed, _ in videos:
            motion = torch.Generator("cpu").manual_seed(motion_seed ^ _MOTION_STREAM)
            shape = (
                self.objects.noise_shape(self.max_frames)
                if self.moves_objects
                else self.motion.raw_code_shape()
            )
            motion_zs.append(torch.randn(1, *shape, generator=motion, device="cpu"))
        zs, noises, labels = zip(*contents, strict=True)
        noise = [torch.cat(layer).to(self.device) for layer in zip(*noises, strict=True)]
        label = torch.cat(labels).to(self.device) if self.canonical.classes else None
        return torch.cat(zs).to(self.device), noise, label, torch.cat(motion_zs).to(self.device)

    @contextmanager
    def _autocast(self) -> Iterator[None]:
        with torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision != torch.float32):
            yield
