"""Train the object motion of a Moving-MNIST model (model.objects) on top of its trained canonical generator:

    python -m model.training.objects --base model/weights/mnist --out runs/objects

1. The segmenter, supervised: real frames whose digits are known (``MovingMNIST.draw_tracked`` draws each digit
   alone, so every pixel's digit is known: the brighter one where two overlap, as in the frame) -> background or
   the digit of the smaller or the larger label; cross-entropy, ``--segmenter-steps`` batches.
2. The trajectory generator, adversarially: each real digit's velocity before it bounces (``MovingMNIST.motion``;
   the walls are model.objects' job) over a window of ``WINDOW`` frames, against windows of generated rollouts of
   ``ROLLOUT`` frames; a small MLP discriminator with a minibatch-deviation feature, R1 on real windows;
   ``--trajectory-steps`` batches.
3. The checkpoint in ``out/checkpoint``: the base's config with ``objects.count`` (one object per label), the base's
   canonical generator, the two trained parts (the base's deformation generator is not used and not kept).

Both parts are small: on one CPU thread the defaults take about 40 minutes (no resume state: rerun, or start the
segmenter from an earlier run's checkpoint with ``--segmenter-from``).
Progress goes to out/segmenter.csv and out/trajectories.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from model.checkpoint import CONFIG, DATA, WEIGHTS, load_checkpoint, save_checkpoint
from model.config import GenDeFConfig
from model.data import MovingMNIST
from model.gendef import GenDeF
from model.objects import ObjectSegmenter, TrajectoryGenerator

log = logging.getLogger(__name__)

INK = 0.1  # a pixel belongs to a digit when the digit alone is brighter than this there (in [0, 1])
WINDOW, ROLLOUT = (
    16,
    48,
)  # frames the discriminator sees, of rollouts this long (it sees every part of them, the
# first WINDOW frames in half the steps)
R1_GAMMA = 0.1


def segment_targets(alone: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each pixel's class from the digits drawn alone (B, D, H, W) in [0, 1] and their labels (B, D): 0 background,
    k + 1 the digit of the k-th smallest label (the brighter digit where two overlap). -> (B, H, W) long."""
    order = labels.argsort(dim=1)
    ranked = torch.gather(alone, 1, order[:, :, None, None].expand_as(alone))
    value, which = ranked.max(dim=1)
    return torch.where(value > INK, which + 1, 0)


def train_segmenter(
    segmenter: ObjectSegmenter, data: MovingMNIST, steps: int, batch: int, out: Path, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(segmenter.parameters(), lr=1e-3)
    with open(out / "segmenter.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "pixel_accuracy_on_ink", "seconds"])
        started = time.perf_counter()
        for step in range(1, steps + 1):
            times = torch.randint(0, 16, (batch, 1), generator=generator).float()
            frames, labels, alone, _ = data.draw_tracked(times, generator)
            target = segment_targets(alone[:, :, 0], labels)
            logits = segmenter(frames[:, 0], labels.sort(dim=1).values)
            loss = F.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 50 == 0 or step == steps:
                ink = target > 0
                accuracy = (logits.argmax(1)[ink] == target[ink]).float().mean().item()
                writer.writerow(
                    [step, f"{loss.item():.4f}", f"{accuracy:.4f}", f"{time.perf_counter() - started:.0f}"]
                )
                f.flush()
                log.info("segmenter %d: loss %.4f, ink accuracy %.3f", step, loss.item(), accuracy)


class WindowCritic(nn.Module):
    """Windows of velocities (N, WINDOW, 2) -> realness (N,): an MLP, with the batch's deviation of its hidden
    features beside them (so a generator that makes one velocity for every object is seen)."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(2 * WINDOW, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2)
        )
        self.head = nn.Sequential(nn.Linear(hidden + 1, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = self.body(v.flatten(1))
        spread = h.std(dim=0).mean().expand(len(h), 1)
        return self.head(torch.cat([h, spread], dim=1))[:, 0]


def train_trajectories(
    trajectories: TrajectoryGenerator,
    data: MovingMNIST,
    steps: int,
    batch: int,
    out: Path,
    seed: int,
    z_dim: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    critic = WindowCritic()
    opt_g = torch.optim.Adam(trajectories.parameters(), lr=5e-4, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(critic.parameters(), lr=5e-4, betas=(0.5, 0.99))
    scale = data.resolution / data.CANVAS

    def fake() -> torch.Tensor:
        v = trajectories(torch.randn(batch, ROLLOUT, z_dim, generator=generator))
        start = int(torch.randint(0, ROLLOUT - WINDOW + 1, (1,), generator=generator))
        if torch.rand(1, generator=generator) < 0.5:  # every clip starts at frame 0: that part most often
            start = 0
        return v[:, start : start + WINDOW]

    def real() -> torch.Tensor:
        velocity = data.motion(batch, generator)[1].flatten(0, 1)[:batch] * scale  # (batch, 2)
        return velocity[:, None].expand(-1, WINDOW, -1).contiguous()

    with open(out / "trajectories.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss_d", "loss_g", "speed_mean", "speed_std", "turn_px", "seconds"])
        started = time.perf_counter()
        for step in range(1, steps + 1):
            r = real().requires_grad_(True)
            score_real = critic(r)
            (grad,) = torch.autograd.grad(score_real.sum(), r, create_graph=True)
            loss_d = (
                F.softplus(critic(fake().detach())).mean()
                + F.softplus(-score_real).mean()
                + R1_GAMMA / 2 * grad.square().sum(dim=(1, 2)).mean()
            )
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            v = fake()
            loss_g = F.softplus(-critic(v)).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if step % 100 == 0 or step == steps:
                speed = v.detach().norm(dim=-1)
                turn = (v.detach()[:, 1:] - v.detach()[:, :-1]).norm(dim=-1).mean()  # real: 0
                row = [step, f"{loss_d.item():.4f}", f"{loss_g.item():.4f}", f"{speed.mean():.3f}"]
                writer.writerow(
                    row + [f"{speed.std():.3f}", f"{turn:.3f}", f"{time.perf_counter() - started:.0f}"]
                )
                f.flush()
                log.info(
                    "trajectories %d: speed %.2f +- %.2f, turn %.3f px", step, speed.mean(), speed.std(), turn
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m model.training.objects", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--base", type=Path, required=True, help="a trained conditional Moving-MNIST checkpoint"
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint in out/checkpoint)")
    parser.add_argument("--segmenter-steps", type=int, default=2000)
    parser.add_argument("--segmenter-from", type=Path, help="start the segmenter from this checkpoint's")
    parser.add_argument("--trajectory-steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=24, help="frames per segmenter step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    saved = json.loads((args.base / CONFIG).read_text())
    config = GenDeFConfig.from_dict({k: v for k, v in saved.items() if k != DATA})
    config.objects.count = config.canonical.labels_per_image
    model = GenDeF(
        GenDeFConfig.from_dict(config.to_dict())
    )  # validates: a conditional model, a label per object
    base = load_checkpoint(args.base)
    model.canonical.load_state_dict(base.canonical.state_dict())
    data = MovingMNIST(config.resolution, split="train")

    if args.segmenter_from:
        prefix = "objects.segmenter."  # only the segmenter's tensors (the rest may be another version's)
        weights = load_file(args.segmenter_from / WEIGHTS)
        model.objects.segmenter.load_state_dict(
            {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        )
    train_segmenter(model.objects.segmenter, data, args.segmenter_steps, args.batch, args.out, args.seed)
    train_trajectories(
        model.objects.trajectories,
        data,
        args.trajectory_steps,
        256,
        args.out,
        args.seed + 1,
        config.objects.z_dim,
    )
    model.requires_grad_(False)
    save_checkpoint(
        model.eval(),
        args.out / "checkpoint",
        card={
            DATA: saved.get(DATA, data.description),
            "canonical": f"{args.base}'s canonical generator",
            "motion": (
                f"model.objects: segmenter {args.segmenter_steps} steps of {args.batch} real frames, trajectory "
                f"generator {args.trajectory_steps} adversarial steps (python -m model.training.objects)"
            ),
        },
    )


if __name__ == "__main__":
    main()
