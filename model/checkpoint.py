"""Checkpoints: a folder with model.safetensors (weights), config.json (architecture) and MODEL_CARD.md.

config.json is the networks' config (model.config.GenDeFConfig) plus ``data``: one line saying what the weights
were trained on, for a reader that must not parse the card (GET /models' trained_on). A config without it (written
before it existed) loads all the same.

No pickle anywhere: loading a checkpoint runs no code from it. Also a CLI to write an untrained checkpoint:

    python -m model.checkpoint init --preset small --out model/weights/small
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.config import PRESETS, GenDeFConfig, preset
from model.gendef import GenDeF

log = logging.getLogger(__name__)

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "MODEL_CARD.md"
DATA = "data"  # config.json's key of what the weights were trained on (the card's `data` entry)


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" -> the first CUDA device if there is one, else the CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_checkpoint(model: GenDeF, directory: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write model's weights, config and a model card (card: e.g. data, steps, metrics) into directory; the card's
    ``data`` entry also goes into config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, directory / WEIGHTS, metadata={"format": "pt"})
    data = {DATA: str(card[DATA])} if card and DATA in card else {}
    (directory / CONFIG).write_text(json.dumps(model.config.to_dict() | data, indent=2) + "\n")
    (directory / CARD).write_text(_model_card(model, card))
    log.info("saved checkpoint to %s", directory)
    return directory


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> GenDeF:
    """Load a checkpoint folder (or the model.safetensors inside it) as a ready model: eval mode, no grads."""
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    missing = [name for name in (WEIGHTS, CONFIG) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a GenDeF checkpoint: missing {', '.join(missing)}")
    saved = json.loads((directory / CONFIG).read_text())
    config = GenDeFConfig.from_dict({k: v for k, v in saved.items() if k != DATA})
    model = GenDeF(config)
    model.load_state_dict(load_file(directory / WEIGHTS))  # strict: every tensor must match the config
    model.requires_grad_(False)
    return model.to(resolve_device(device)).eval()


def _model_card(model: GenDeF, card: dict[str, Any] | None) -> str:
    card = card or {"status": "untrained: random initial weights, not trained on any data"}
    params = sum(p.numel() for p in model.parameters())
    lines = [
        "# GenDeF checkpoint",
        "",
        f"- resolution: {model.config.resolution}x{model.config.resolution}",
        f"- max_frames: {model.config.max_frames}",
        f"- parameters: {params:,}",
    ]
    lines += [
        f"- {key}: {json.dumps(value) if isinstance(value, dict | list) else value}"
        for key, value in card.items()
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.checkpoint", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a checkpoint with random initial weights (untrained)")
    init.add_argument("--preset", choices=sorted(PRESETS), required=True)
    init.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    init.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    model = GenDeF(preset(args.preset))
    save_checkpoint(
        model,
        args.out,
        card={
            "preset": args.preset,
            "status": "untrained: random initial weights (python -m model.checkpoint init), not trained on any data",
            "init_seed": args.seed,
            "steps": 0,
        },
    )


if __name__ == "__main__":
    main()
