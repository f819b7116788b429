"""The README's labels example, against a running API (`make run`): one content seed and motion seed on the
`mnist` model, first with the digits the seed draws, then with digits asked for (`labels`); writes
docs/example_labels.png, each row the canonical image then frames 0, 2, ..., 14. Seed 3 is picked: its two digits
are drawn apart (on seed 1 they are drawn over each other, as on about one seed in eight).

    .venv/bin/python docs/labels_example.py [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from client.api import Client

DOCS = Path(__file__).resolve().parent
SEED = 3
ASKED = [None, [3, 7], [0, 5], [1, 8], [2, 6]]  # None: the seed's own digits
SCALE = 2  # 64 px frames shown at 128 px, nearest neighbour


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    rows = []
    with Client(args.url) as c:
        for labels in ASKED:
            job = c.generate(seed=SEED, motion_seed=2, num_frames=16, model="mnist", labels=labels).wait(
                timeout_s=300
            )
            print(f"labels {labels}: made of {job.result['labels']} (job {job.id})")
            rows.append(np.concatenate([job.canonical(), *job.frames()[::2]], axis=1))  # (64, 9 * 64, 3)
    grid = Image.fromarray(np.concatenate(rows))
    grid.resize((grid.width * SCALE, grid.height * SCALE), Image.NEAREST).save(DOCS / "example_labels.png")


if __name__ == "__main__":
    main()
