"""`gendef`: submit jobs to a gendef API, follow them with a progress bar, download what they make.

The job id goes to stdout (as soon as the job is queued), everything meant for a person to stderr, so
`JOB=$(gendef generate --seed 1 -o a.mp4)` works; with --json, stdout is instead the final job document (also
of a failed job). Exit status: 0 done, 1 any error (server unreachable, request refused, job failed or canceled,
timeout), 2 bad command line, 130 interrupted while waiting (the job goes on).

An option left out is not sent, so the API applies its own default. The help repeats neither the API's defaults
nor its bounds, which a server of another version may not share (docs/API.md, or the API's /docs page); a value out
of bounds is refused with the API's message naming the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from client.api import Client, GendefError, Job, JobFailed

DEFAULT_URL = "http://127.0.0.1:8000"
WITH_FIELDS = "a finished job with fields (generate, resample, edit, decompose)"


def _follow(job: Job, args: argparse.Namespace) -> Job:
    """Print the job id (without --json), wait for the job with a progress bar on stderr, return it finished."""
    if not args.json:
        print(job.id, flush=True)
    print(f"queued {job.kind} job {job.id}", file=sys.stderr)
    bar_format = "{desc:>9} {percentage:3.0f}%|{bar}| {elapsed}"
    with tqdm(total=100, desc=job.status, file=sys.stderr, bar_format=bar_format) as bar:

        def update(job: Job) -> None:
            bar.set_description_str(job.status, refresh=False)
            bar.n = round(100 * job.progress)
            bar.refresh()

        return job.wait(on_progress=update, poll_s=args.poll, timeout_s=args.timeout)


def _save(job: Job, artifact: str, dest: str | Path) -> None:
    job.download(artifact, dest)
    print(f"wrote {dest}", file=sys.stderr)


def _generate(client: Client, args: argparse.Namespace) -> Job:
    job = client.generate(args.seed, args.motion_seed, args.frames, args.fps, args.model, args.labels)
    job = _follow(job, args)
    if (job.result or {}).get("labels") is not None:
        print(f"labels: {','.join(map(str, job.result['labels']))}", file=sys.stderr)
    _save(job, "video", args.output or f"{job.id}.mp4")
    if args.canonical:
        _save(job, "canonical", args.canonical)
        print(f"edit {args.canonical}, then: gendef edit {job.id} EDITED.png", file=sys.stderr)
    return job


def _resample(client: Client, args: argparse.Namespace) -> Job:
    job = client.resample(args.job_id, motion_seed=args.motion_seed, num_frames=args.frames, fps=args.fps)
    job = _follow(job, args)
    _save(job, "video", args.output or f"{job.id}.mp4")
    return job


def _edit(client: Client, args: argparse.Namespace) -> Job:
    job = _follow(client.edit(args.job_id, args.image, fps=args.fps, shot=args.shot, carry=args.carry), args)
    _save(job, "video", args.output or f"{job.id}.mp4")
    return job


def _render(client: Client, args: argparse.Namespace) -> Job:
    job = client.render(
        args.job_id, scale=args.scale, fps_factor=args.fps_factor, fps=args.fps, image=args.image
    )
    job = _follow(job, args)
    _save(job, "video", args.output or f"{job.id}.mp4")
    return job


def _track(client: Client, args: argparse.Namespace) -> Job:
    job = _follow(client.track(args.job_id, args.points, frame=args.frame), args)
    _save(job, "tracks", args.output or f"{job.id}.tracks.json")
    if args.video:
        _save(job, "video", args.video)
    return job


def _models(client: Client, args: argparse.Namespace) -> None:
    models = client.models()
    if args.json:
        print(json.dumps(models, indent=2))
        return
    print("NAME\tVERSION\tRESOLUTION\tMAX_FRAMES\tLABELS\tDEFAULT\tTRAINED_ON")
    for m in models:
        size = f"{m['resolution']}x{m['resolution']}"
        default = "yes" if m["default"] else ""
        labels = f"{m['labels_per_video']} of {','.join(m['classes'])}" if m["classes"] else ""
        print(
            f"{m['name']}\t{m['version']}\t{size}\t{m['max_frames']}\t{labels}\t{default}\t{m['trained_on'] or ''}"
        )


def _segment(client: Client, args: argparse.Namespace) -> Job:
    job = _follow(client.segment(args.job_id, args.mask), args)
    _save(job, "masks", args.output or f"{job.id}.masks.npz")
    if args.video:
        _save(job, "video", args.video)
    return job


def _download_all(job: Job, folder: str | None) -> None:
    for path in job.download_all(folder or job.id):
        print(f"wrote {path}", file=sys.stderr)


# A decomposed clip's tiles that start inside a shot, and why (docs/API.md, Shots: `reason`)
SPLIT_BY = {"length": "split for length", "panorama": "panorama full"}


def _decompose(client: Client, args: argparse.Namespace) -> Job:
    job = client.decompose(
        args.clip, num_frames=args.frames, resolution=args.resolution, steps=args.steps, fps=args.fps
    )
    job = _follow(job, args)
    _download_all(job, args.output)
    shots = job.result.get("shots") or []
    segmented = {s["shot"] for s in shots if s.get("segment")}  # shots fitted in several segments
    per_shot = ", ".join(
        f"shot {s.get('shot', i)}"
        + (f" segment {s['segment']}" if s.get("shot") in segmented else "")
        + (f" ({SPLIT_BY[s['reason']]})" if s.get("reason") in SPLIT_BY else "")
        + f": frames {s['start']}+{s['frames']}, {s['psnr_db']:.2f} dB"
        for i, s in enumerate(shots)
    )
    print(f"reconstruction PSNR {job.result['psnr_db']:.2f} dB ({per_shot})", file=sys.stderr)
    return job


def _download(client: Client, args: argparse.Namespace) -> Job:
    job = client.get(args.job_id)
    if job.status != "succeeded":
        job = _follow(job, args)
    _download_all(job, args.output)
    return job


def _summary(job: Job) -> str:
    """A job document in a few lines for a person."""
    lines = [f"{job.id}: {job.kind} {job.status} ({job.progress:.0%})"]
    if job.doc.get("error"):
        lines.append(f"error: [{job.doc['error']['code']}] {job.doc['error']['message']}")
    if job.result:
        lines.append("result: " + ", ".join(f"{k} {v}" for k, v in job.result.items()))
    if job.doc.get("artifacts"):
        lines.append(f"artifacts: {', '.join(job.doc['artifacts'])} (gendef download {job.id})")
    return "\n".join(lines)


def _status(client: Client, args: argparse.Namespace) -> Job:
    job = client.get(args.job_id)
    if not args.json:
        print(_summary(job))
    return job


def _cancel(client: Client, args: argparse.Namespace) -> Job:
    job = client.cancel(args.job_id)
    if not args.json:
        print(_summary(job))
    return job


def _labels(text: str) -> list[int]:
    """ "3,7" -> [3, 7]."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of class indices (e.g. 3,7)"
        ) from None


def _points(text: str) -> list[list[float]]:
    """ "x,y x,y" -> [[x, y], [x, y]]."""
    try:
        points = [[float(v) for v in pair.split(",")] for pair in text.split()]
    except ValueError:
        points = []
    if not points or any(len(p) != 2 for p in points):
        raise argparse.ArgumentTypeError(f'{text!r} is not a list of x,y points (e.g. "10,12 40.5,30")')
    return points


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gendef", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("GENDEF_URL", DEFAULT_URL),
        help=f"base URL of the gendef API (default: $GENDEF_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get("GENDEF_API_KEY"),
        help="API key, sent as 'Authorization: Bearer KEY' (default: $GENDEF_API_KEY; none)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Callable[[Client, argparse.Namespace], Job | None], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument(
            "--json",
            action="store_true",
            help="print the final job document (JSON) on stdout instead of the id",
        )
        p.set_defaults(run=run)
        return p

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--timeout", type=float, help="give up waiting after this many seconds (the job goes on)"
        )
        p.add_argument("--poll", type=float, default=0.5, help="seconds between status checks (default: 0.5)")

    def job_id(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("job_id", metavar="JOB_ID", help=what)

    def fps(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument("--fps", type=int, help=f"frame rate of the encoded video (default: {default})")

    def output(p: argparse.ArgumentParser, what: str, default: str) -> None:
        p.add_argument("-o", "--output", metavar="PATH", help=f"where to write {what} (default: {default})")

    def also_video(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--video", metavar="MP4", help=f"also save the video with {what} here")

    p = command("generate", _generate, "generate a video from a content seed and a motion seed")
    p.add_argument("--seed", type=int, help="content seed: decides the canonical image (default: random)")
    p.add_argument("--motion-seed", type=int, help="motion seed: decides the motion (default: random)")
    p.add_argument("--frames", type=int, help="number of frames (default: the API's)")
    p.add_argument("--model", help="name of the model (`gendef models`; default: the API's default model)")
    p.add_argument(
        "--labels",
        type=_labels,
        metavar="I,J",
        help="a conditional model's classes to make, by index (`gendef models`; mnist: --labels 3,7 makes a 3 and "
        "a 7); default: drawn from the seed",
    )
    fps(p, "the API's")
    output(p, "the video", "JOB_ID.mp4")
    p.add_argument(
        "--canonical", metavar="PNG", help="also save the canonical image here, the start of an edit"
    )
    waiting(p)

    p = command("resample", _resample, "new motion for the canonical image of a finished job")
    job_id(p, "a finished generate, resample or edit job")
    p.add_argument("--motion-seed", type=int, help="the new motion seed (default: random)")
    p.add_argument("--frames", type=int, help="number of frames (default: the API's)")
    fps(p, "the API's")
    output(p, "the video", "JOB_ID.mp4")
    waiting(p)

    p = command("edit", _edit, "warp an edited canonical image with a finished job's motion")
    job_id(p, WITH_FIELDS)
    p.add_argument("image", metavar="IMAGE", help="the edited canonical image (PNG or JPEG)")
    p.add_argument("--shot", type=int, help="a decomposed clip's shot: IMAGE is that shot's canonical image")
    p.add_argument(
        "--carry",
        action="store_true",
        help="with --shot: carry the paint on to the other segments of that shot",
    )
    fps(p, "the source job's")
    output(p, "the video", "JOB_ID.mp4")
    waiting(p)

    p = command("render", _render, "render a finished job at a larger size and a higher frame rate")
    job_id(p, WITH_FIELDS)
    p.add_argument("--scale", type=int, help="times the width and height (default: the API's)")
    p.add_argument("--fps-factor", type=int, help="times the frames (default: the API's)")
    p.add_argument("--image", metavar="IMAGE", help="a larger canonical image to render (PNG or JPEG)")
    fps(p, "the source job's times --fps-factor")
    output(p, "the video", "JOB_ID.mp4")
    waiting(p)

    p = command("decompose", _decompose, "fit a canonical image and deformation fields to your own clip")
    p.add_argument("clip", metavar="CLIP", help="the video (mp4, webm or gif); its first frames are used")
    p.add_argument("--frames", type=int, help="frames taken from the start of the clip (default: the API's)")
    p.add_argument("--resolution", type=int, help="long side of the frames in pixels (default: the API's)")
    p.add_argument("--steps", type=int, help="optimisation steps, more: sharper, slower (default: the API's)")
    fps(p, "the clip's")
    output(p, "canonical.png, deformation.npz and video.mp4: a folder", "JOB_ID/")
    waiting(p)

    p = command("models", _models, "list the models served (tab-separated with a header; --json: the list)")

    p = command(
        "track", _track, "follow points of a finished job's canonical image (or of one frame) over time"
    )
    job_id(p, WITH_FIELDS)
    p.add_argument(
        "--points",
        type=_points,
        action="extend",
        required=True,
        metavar='"X,Y X,Y"',
        help="pixel coordinates, pixel centres at integers; repeat the option or list several in one",
    )
    p.add_argument(
        "--frame", type=int, help="the points are in this frame (0-based) instead of the canonical image"
    )
    output(p, "the tracks ([T][N] of {x, y, visible})", "JOB_ID.tracks.json")
    also_video(p, "the tracks drawn")
    waiting(p)

    p = command(
        "segment", _segment, "carry a label map painted on a finished job's canonical image to every frame"
    )
    job_id(p, WITH_FIELDS)
    p.add_argument(
        "mask",
        metavar="MASK",
        help="PNG of the canonical image's size, one channel, values are labels (0 background)",
    )
    output(p, "the labels per frame (npz: masks, uint8 (T, H, W))", "JOB_ID.masks.npz")
    also_video(p, "the labels drawn over it")
    waiting(p)

    p = command(
        "download", _download, "write every artifact of a job into a folder (waits for it if unfinished)"
    )
    job_id(p, "any job")
    output(p, "the artifacts: a folder", "JOB_ID/")
    waiting(p)

    p = command("status", _status, "show a job: kind, status, progress, error, result, artifacts")
    job_id(p, "any job")

    p = command(
        "cancel", _cancel, "cancel a queued or running job (a finished one stays as it is) and show it"
    )
    job_id(p, "any job")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key) as client:
            job = args.run(client, args)
    except JobFailed as e:
        if args.json:
            print(json.dumps(e.job.doc, indent=2))
        print(f"gendef: error: {e}", file=sys.stderr)
        return 1
    except (GendefError, TimeoutError, OSError) as e:
        print(f"gendef: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ngendef: interrupted; a queued job goes on (`gendef status JOB_ID`, `gendef cancel JOB_ID`)",
            file=sys.stderr,
        )
        return 130
    if args.json and job is not None:  # `models` prints its own answer
        print(json.dumps(job.doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
