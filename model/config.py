"""Configuration of the GenDeF networks: one dataclass per network plus the whole model.

The config travels with the weights (config.json next to model.safetensors) and is all that is needed to
rebuild the architecture. Channel widths follow StyleGAN2: ``channels(res) = min(channel_max, channel_base // res)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MIN_MAX_FRAMES = 128  # the contract: every model samples at least this many frames


@dataclass
class CanonicalConfig:
    """StyleGAN2-style image generator: z -> w -> canonical image (B, 3, H, W) + its last full-res features."""

    z_dim: int = 512  # content code size; the deformation generator's own mapping reads the same z
    w_dim: int = 512  # style vector size
    mapping_layers: int = 8  # depth of the z -> w MLP
    channel_base: int = (
        16384  # channels(res) = min(channel_max, channel_base // res); 16384 = the paper's fmaps 0.5
    )
    channel_max: int = 512
    # class labels the image is conditioned on (StyleGAN2-ADA's conditional generator and projection discriminator):
    # 0 = unconditional; Moving MNIST: 10, the digits, ``labels_per_image`` distinct ones in each image. A video's
    # labels are drawn from its seed like z (model.canonical.random_labels).
    classes: int = 0
    labels_per_image: int = 1


@dataclass
class MotionConfig:
    """StyleGAN-V motion codes: a smoothed trajectory of Gaussian codes + aligned Fourier time features."""

    z_dim: int = 512  # size of one trajectory code
    code_distance: int = 16  # frames between two consecutive trajectory codes (StyleGAN-V's K)
    kernel_size: int = 11  # of the two padding-free Conv1d layers that smooth the trajectory
    num_freqs: int = 256  # Fourier frequencies; the motion code of a frame has 2 * num_freqs values
    min_period: float = 16.0  # shortest period, in frames
    max_period: float = 1024.0  # longest period, in frames
    # StyleGAN-V's time encoder: period and phase layers without bias, phases scaled by max_period / period so a
    # short-period feature can shift by whole periods (False: the first recipe, a biased period layer, raw phases)
    stylegan_v_phases: bool = True

    @property
    def code_dim(self) -> int:
        return 2 * self.num_freqs


@dataclass
class DeformationConfig:
    """StyleGAN2-style field generator: (z, motion code of frame t, canonical features) -> 2-channel offset."""

    w_dim: int = 512  # style size of its own mapping network (z -> w_deform)
    mapping_layers: int = 8
    channel_base: int = 16384
    channel_max: int = 512
    canonical_cond: bool = True  # concat projected canonical features at every layer (False: the ablation)
    cond_dim: int = 64  # channels of the projected canonical features concatenated to each layer input
    frame_chunk: int = 64  # frames per forward pass at inference: bounds memory for long videos
    # offsets bounded by a scaled tanh, max_offset * tanh(x / max_offset) (slope 1 at 0, so the zero-initialised
    # field still starts at the identity), in field units (1 = half the image); None: unbounded (first recipe)
    max_offset: float | None = 0.5
    # resolution the field is predicted at, bilinearly upsampled to the image's (coarser = smoother fields, and
    # cheaper: the generator stops there); None: the image's resolution
    field_res: int | None = None


@dataclass
class DiscriminatorConfig:
    """Per-frame 2-D residual discriminator, fused over time by a mean over frames, conditioned on time gaps."""

    channel_base: int = 16384
    channel_max: int = 512
    fuse_res: int = 16  # resolution at which per-frame features are averaged over the sampled frames
    mbstd_group: int = 4  # minibatch-stddev group size (clamped to the batch size)
    time_dim: int = 64  # size of the Fourier embedding of the time gaps between the sampled frames
    # temporal shift module (GenDeF's stage-2 discriminator): in every per-frame block before the fusion, 1/8 of
    # the channels are shifted one frame forward and 1/8 one frame back, so frame blocks compare neighbours
    temporal_shift: bool = True
    # frame differences: each frame's departure from its clip's mean frame is a second input beside its pixels
    # (its own 1x1 conv, added to the pixels' one), so a clip that does not move is told apart at the first layer
    frame_diff: bool = False


@dataclass
class ObjectsConfig:
    """Object motion (model.objects), instead of the deformation generator when ``count`` > 0: a segmenter finds
    ``count`` objects in the canonical image (a conditional model's labels say which is which), each object gets
    its own trajectory from the motion seed (a recurrent generator of velocities; objects bounce off the canvas
    edges), and each frame's field is the flow that carries every object rigidly along its path and the
    background around it one to one (the background never shows an object's pixels; where objects that touch or
    cross part, the opening reads a patch of background nearby: model.objects)."""

    count: int = 0  # objects per video; 0: GenDeF's deformation generator makes the fields
    channels: int = 16  # the segmenter's width (a 4-level U-Net)
    z_dim: int = 16  # trajectory noise per object and frame
    hidden: int = 64  # the trajectory generator's GRU state
    max_speed: float = 6.0  # bound of an object's speed, px a frame (a scaled tanh)
    wall_px: float = 4.0  # an object's ink turns back this far from the canvas edge (MNIST's: about 4 px)
    margin_px: int = 2  # the background this close to an object's ink moves with it,
    fade_px: int = 6  # ... and then less and less over this many px


@dataclass
class GenDeFConfig:
    resolution: int = 256  # H == W of the canonical image, the fields and the frames (a power of 2, >= 8)
    max_frames: int = 256  # largest num_frames sample() accepts (>= 128); bounds the motion trajectory length
    canonical: CanonicalConfig = field(default_factory=CanonicalConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    deformation: DeformationConfig = field(default_factory=DeformationConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 8 or r & (r - 1):
            raise ValueError(f"resolution must be a power of 2 >= 8, got {r}")
        if self.max_frames < MIN_MAX_FRAMES:
            raise ValueError(f"max_frames must be >= {MIN_MAX_FRAMES}, got {self.max_frames}")
        if not 4 <= self.discriminator.fuse_res <= r:
            raise ValueError(f"discriminator.fuse_res must be in [4, {r}], got {self.discriminator.fuse_res}")
        fr = self.deformation.field_res
        if fr is not None and (fr < 4 or fr > r or fr & (fr - 1)):
            raise ValueError(f"deformation.field_res must be a power of 2 in [4, {r}] or null, got {fr}")
        c = self.canonical
        if c.classes < 0 or (c.classes and not 1 <= c.labels_per_image <= c.classes):
            raise ValueError(
                f"canonical.classes must be >= 0 and labels_per_image in [1, classes], got {c.classes} and "
                f"{c.labels_per_image}"
            )
        if self.deformation.max_offset is not None and self.deformation.max_offset <= 0:
            raise ValueError(f"deformation.max_offset must be > 0 or null, got {self.deformation.max_offset}")
        if self.objects.count and (not c.classes or c.labels_per_image != self.objects.count):
            raise ValueError(
                "objects.count > 0 needs a conditional canonical generator with one label per object "
                f"(canonical.classes > 0, labels_per_image == objects.count); got classes {c.classes}, "
                f"labels_per_image {c.labels_per_image}, objects.count {self.objects.count}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenDeFConfig:
        """Inverse of to_dict; unknown keys are an error (a config from another version should fail loudly). A key
        added since the first recipe and missing from d takes its first-recipe value (FIRST_RECIPE), so older
        checkpoints load as the networks they were trained as."""
        d = dict(d)
        nested = {
            "canonical": CanonicalConfig,
            "motion": MotionConfig,
            "deformation": DeformationConfig,
            "discriminator": DiscriminatorConfig,
            "objects": ObjectsConfig,
        }
        for key, sub in nested.items():
            if key in d:
                d[key] = sub(**(FIRST_RECIPE.get(key, {}) | d[key]))
        return cls(**d)


# The architecture of the first recipe, for configs written before these keys existed.
FIRST_RECIPE: dict[str, dict[str, Any]] = {
    "motion": {"stylegan_v_phases": False},
    "deformation": {"max_offset": None, "field_res": None},
    "discriminator": {"temporal_shift": False, "frame_diff": False},
}


def channels(res: int, channel_base: int, channel_max: int) -> int:
    return min(channel_max, channel_base // res)


PRESETS: dict[str, GenDeFConfig] = {
    # Unit tests: every forward pass a few milliseconds on CPU.
    "tiny": GenDeFConfig(
        resolution=32,
        canonical=CanonicalConfig(z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32),
        motion=MotionConfig(z_dim=16, kernel_size=3, num_freqs=8, max_period=256.0),
        deformation=DeformationConfig(
            w_dim=32, mapping_layers=2, channel_base=256, channel_max=32, cond_dim=8
        ),
        discriminator=DiscriminatorConfig(channel_base=256, channel_max=32, fuse_res=8, time_dim=16),
    ),
    # CPU-trainable in about an hour; a checkpoint of a few MB.
    "small": GenDeFConfig(
        resolution=64,
        canonical=CanonicalConfig(z_dim=128, w_dim=128, mapping_layers=4, channel_base=2048, channel_max=128),
        motion=MotionConfig(z_dim=64, kernel_size=5, num_freqs=32, max_period=512.0),
        deformation=DeformationConfig(
            w_dim=128, mapping_layers=4, channel_base=1024, channel_max=64, cond_dim=16, field_res=32
        ),
        # frame differences: a clip that does not move shows zeros there, so the discriminator rewards motion from its
        # first layer on instead of only through the fusion
        discriminator=DiscriminatorConfig(
            channel_base=2048, channel_max=128, fuse_res=16, time_dim=32, frame_diff=True
        ),
    ),
    # Moving MNIST (64x64, two bouncing digits): a canonical generator as wide as small's (narrower, it draws thin
    # scribbles) and conditioned on the frame's two digits (so that its glyphs vary as much as real digits and each
    # is one digit, not a blend of two), a slimmer discriminator (a wider one wins outright), a field at 32x32 whose
    # offsets may cross the whole canvas (digits travel from edge to edge). docs/TRAINING.md has the evidence.
    "mnist": GenDeFConfig(
        resolution=64,
        canonical=CanonicalConfig(
            z_dim=64,
            w_dim=128,
            mapping_layers=4,
            channel_base=2048,
            channel_max=128,
            classes=10,
            labels_per_image=2,
        ),
        motion=MotionConfig(z_dim=64, kernel_size=5, num_freqs=32, max_period=512.0),
        deformation=DeformationConfig(
            w_dim=128,
            mapping_layers=4,
            channel_base=1024,
            channel_max=64,
            cond_dim=16,
            max_offset=1.0,
            field_res=32,
        ),
        discriminator=DiscriminatorConfig(channel_base=1024, channel_max=128, fuse_res=16, time_dim=32),
    ),
    # The paper's sizes (256^2, fmaps 0.5), for a GPU.
    "paper": GenDeFConfig(),
}


def preset(name: str) -> GenDeFConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return GenDeFConfig.from_dict(PRESETS[name].to_dict())  # a fresh copy
