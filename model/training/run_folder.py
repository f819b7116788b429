"""What a training run writes besides its state: train_config.json, metrics.csv, samples/step_*.png (rows: videos;
columns: the canonical image, then frames 0, 2, 4, ...) and checkpoint/ (the EMA generator, written with
save_checkpoint: what the service loads)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from model.checkpoint import save_checkpoint
from model.gendef import GenDeF
from model.pixels import frame_strip
from model.training.config import TrainConfig
from model.training.health import HEALTH
from model.training.step import METRICS

COLUMNS = ["step", "stage", "kimg", "seconds", *METRICS, *HEALTH]  # of metrics.csv


def save_config(run_dir: Path, cfg: TrainConfig, G: GenDeF) -> None:
    """Write train_config.json with the model as resolved now, so that a later change to a preset does not break
    resuming this run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = dataclasses.asdict(cfg) | {"model": G.config.to_dict()}
    (run_dir / "train_config.json").write_text(json.dumps(saved, indent=2) + "\n")


def log_metrics(run_dir: Path, counters: dict[str, Any], metrics: dict[str, float]) -> None:
    """Append a row to metrics.csv: counters (step, stage, kimg, seconds) then metrics, by COLUMNS."""
    path = run_dir / "metrics.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(COLUMNS)
        writer.writerow([counters.get(k, metrics.get(k)) for k in COLUMNS])


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric rows written after step (the run was cut off after its last saved state): the resumed run
    rewrites them. Rows keep their values under this version's columns (a column added since is empty in older
    rows)."""
    path = run_dir / "metrics.csv"
    if path.exists():
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


@torch.no_grad()
def save_samples(run_dir: Path, G: GenDeF, step: int, videos: int = 4, frames: int = 16) -> Path:
    """A PNG grid from G with fixed seeds, so grids of a run compare: rows are videos."""
    out = G.sample(list(range(videos)), list(range(videos)), frames)
    columns = torch.cat([out.canonical[:, None], out.frames[:, ::2]], dim=1)  # (V, 1 + frames / 2, 3, H, W)
    path = run_dir / "samples" / f"step_{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame_strip(columns, rows=videos, every=1)).save(path)
    return path


def export(run_dir: Path, G_ema: GenDeF, cfg: TrainConfig, data: str, counters: dict[str, Any]) -> Path:
    """Write checkpoint/: the EMA generator and a model card saying how it was trained on data (a description)
    and how far (counters: model.training.state.COUNTERS and the last losses)."""
    step, stage, stage_step = counters["step"], counters["stage"], counters["stage_step"]
    card = {
        "trained_with": "python -m model.training.train",
        "model": f"preset {cfg.model}" if isinstance(cfg.model, str) else "see config.json",
        "data": data,
        "steps": f"{step} (stage 1 and 2 together; now stage {stage}, step {stage_step} of it)",
        "images_seen": counters["nimg"],
        "train_seconds": round(counters["seconds"]),
        "last_metrics": {k: round(v, 4) for k, v in counters["last"].items()},
        "weights": "EMA of the generator",
    }
    return save_checkpoint(G_ema, run_dir / "checkpoint", card)
