"""`gendef`: submit jobs to a gendef API, follow them with a progress bar, download the videos.

The job id goes to stdout (as soon as the job is queued), everything meant for a person to stderr, so
`JOB=$(gendef generate --seed 1 -o a.mp4)` works. Exit status: 0 done, 1 any error (server unreachable, request
refused, job failed or canceled, timeout), 2 bad command line, 130 interrupted while waiting (the job goes on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from tqdm import tqdm

from client.api import Client, GendefError, Job

DEFAULT_URL = "http://127.0.0.1:8000"


def _follow(client: Client, job: Job, args: argparse.Namespace) -> Job:
    """Print the job id, wait for the job with a progress bar on stderr, return its final document."""
    print(job["id"], flush=True)
    print(f"queued {job['kind']} job {job['id']}", file=sys.stderr)
    bar_format = "{desc:>9} {percentage:3.0f}%|{bar}| {elapsed}"
    with tqdm(total=100, desc=job["status"], file=sys.stderr, bar_format=bar_format) as bar:

        def update(doc: Job) -> None:
            bar.set_description_str(doc["status"], refresh=False)
            bar.n = round(100 * float(doc.get("progress") or 0.0))
            bar.refresh()

        return client.wait(job["id"], poll_s=args.poll, timeout_s=args.timeout, on_update=update)


def _save(client: Client, job: Job, args: argparse.Namespace) -> None:
    output = args.output or f"{job['id']}.mp4"
    client.download(job, "video", output)
    print(f"wrote {output}", file=sys.stderr)
    if getattr(args, "canonical", None):
        client.download(job, "canonical", args.canonical)
        print(f"wrote {args.canonical} (edit it, then: gendef edit {job['id']} EDITED.png)", file=sys.stderr)


def _generate(client: Client, args: argparse.Namespace) -> None:
    job = client.generate(
        seed=args.seed, motion_seed=args.motion_seed, num_frames=args.frames, fps=args.fps, model=args.model
    )
    _save(client, _follow(client, job, args), args)


def _resample(client: Client, args: argparse.Namespace) -> None:
    job = client.resample(args.job_id, motion_seed=args.motion_seed, num_frames=args.frames, fps=args.fps)
    _save(client, _follow(client, job, args), args)


def _edit(client: Client, args: argparse.Namespace) -> None:
    job = client.edit(args.job_id, args.image, fps=args.fps)
    _save(client, _follow(client, job, args), args)


def _models(client: Client, args: argparse.Namespace) -> None:
    print("NAME\tVERSION\tRESOLUTION\tMAX_FRAMES\tDEFAULT\tTRAINED_ON")
    for m in client.models():
        size = f"{m['resolution']}x{m['resolution']}"
        default = "yes" if m["default"] else ""
        print(f"{m['name']}\t{m['version']}\t{size}\t{m['max_frames']}\t{default}\t{m['trained_on'] or ''}")


def _status(client: Client, args: argparse.Namespace) -> None:
    print(json.dumps(client.get(args.job_id), indent=2))


def _cancel(client: Client, args: argparse.Namespace) -> None:
    print(json.dumps(client.cancel(args.job_id), indent=2))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gendef", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("GENDEF_URL", DEFAULT_URL),
        help=f"base URL of the gendef API (default: $GENDEF_URL or {DEFAULT_URL})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def waiting(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--fps", type=int, help="frame rate of the encoded video")
        p.add_argument("-o", "--output", help=f"where to write the {what} video (default: JOB_ID.mp4)")
        p.add_argument(
            "--timeout", type=float, help="give up waiting after this many seconds (the job goes on)"
        )
        p.add_argument("--poll", type=float, default=0.5, help="seconds between status checks (default: 0.5)")

    p = sub.add_parser("generate", help="generate a video from a content seed and a motion seed")
    p.add_argument("--seed", type=int, help="content seed: decides the canonical image (default: random)")
    p.add_argument("--motion-seed", type=int, help="motion seed: decides the motion (default: random)")
    p.add_argument("--frames", type=int, help="number of frames (default: the API's, 16)")
    p.add_argument("--model", help="name of the model (`gendef models`; default: the API's default model)")
    p.add_argument(
        "--canonical", metavar="PNG", help="also save the canonical image here, the start of an edit"
    )
    waiting(p, "generated")
    p.set_defaults(run=_generate)

    p = sub.add_parser("resample", help="new motion for the canonical image of a finished job")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--motion-seed", type=int, help="the new motion seed (default: random)")
    p.add_argument("--frames", type=int, help="number of frames (default: the API's)")
    waiting(p, "resampled")
    p.set_defaults(run=_resample)

    p = sub.add_parser("edit", help="warp an edited canonical image with a finished job's motion")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("image", metavar="IMAGE", help="the edited canonical image (PNG or JPEG)")
    waiting(p, "edited")
    p.set_defaults(run=_edit)

    p = sub.add_parser("models", help="list the models served (tab-separated, with a header line)")
    p.set_defaults(run=_models)

    p = sub.add_parser("status", help="print a job's document (JSON)")
    p.add_argument("job_id", metavar="JOB_ID")
    p.set_defaults(run=_status)

    p = sub.add_parser("cancel", help="cancel a queued or running job and print its document (JSON)")
    p.add_argument("job_id", metavar="JOB_ID")
    p.set_defaults(run=_cancel)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with Client(args.url) as client:
            args.run(client, args)
    except (GendefError, TimeoutError, OSError) as e:
        print(f"gendef: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ngendef: interrupted; a queued job goes on (`gendef status JOB_ID`, `gendef cancel JOB_ID`)",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
