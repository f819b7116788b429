"""A digit classifier for evaluating Moving MNIST models (the usual stand-in for Inception on MNIST).

It reads one 64x64 frame (grey, [-1, 1]; a colour frame is averaged to grey) and says which digits it holds:
10 independent logits, trained with binary cross-entropy on frames of Moving MNIST clips made from the *training*
digits (model.data), so the two digits of a frame are the two highest scores. Its 128-d penultimate features
define the Fréchet distance of model.evaluation.evaluate for Moving MNIST; ``content_kept`` asks whether the digits it sees
in a video's first frame are those it sees in its last; ``digit_coverage`` how evenly the ten digits occur.

Training is fixed by its seed; ``python -m model.evaluation.digits`` trains it (a few minutes on one CPU core) and writes
the weights the project ships, model/evaluation/digit_classifier.safetensors, which model.evaluation.evaluate loads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from model.data import MovingMNIST

SHIPPED = Path(__file__).parent / "digit_classifier.safetensors"


class DigitClassifier(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        widths = [1, w, 2 * w, 4 * w, 4 * w]
        self.convs = nn.ModuleList(
            [nn.Conv2d(a, b, 3, 2, 1) for a, b in zip(widths, widths[1:], strict=False)]
        )
        self.norms = nn.ModuleList([nn.BatchNorm2d(b) for b in widths[1:]])
        self.head = nn.Linear(4 * w, 10)
        self.feature_dim = 4 * w

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, C, H, W) in [-1, 1] (resized to 64x64 if needed) -> features (N, 128)."""
        x = frames.float().mean(dim=1, keepdim=True)  # (N, 1, H, W): grey
        if x.shape[-1] != MovingMNIST.CANVAS:
            x = F.interpolate(x, size=(MovingMNIST.CANVAS,) * 2, mode="bilinear", align_corners=False)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.leaky_relu(norm(conv(x)), 0.2)  # (N, C', h / 2, w / 2)
        return x.amax(dim=(2, 3))  # (N, 128): the strongest response anywhere (digits may be anywhere)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, C, H, W) -> logits (N, 10), one per digit label."""
        return self.head(self.features(frames))

    @torch.no_grad()
    def digits(self, frames: torch.Tensor, count: int = 2) -> torch.Tensor:
        """The count labels seen in each frame (N, C, H, W) -> (N, count), sorted."""
        return self.eval()(frames).topk(count, dim=1).indices.sort(dim=1).values


def train_digit_classifier(steps: int = 3000, batch: int = 64, seed: int = 0) -> DigitClassifier:
    """Train a DigitClassifier on single frames of Moving MNIST clips of the training digits (deterministic)."""
    torch.manual_seed(seed)
    model = DigitClassifier().train()
    data, gen = MovingMNIST(64, split="train"), torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for _ in range(steps):
        times = torch.rand(batch, 1, generator=gen) * 64  # (B, 1): one frame of a random clip each
        frames, labels = data.draw(times, gen)  # (B, 1, 3, 64, 64), (B, 2)
        target = torch.zeros(batch, 10).scatter_(1, labels, 1.0)  # (B, 10) multi-hot
        loss = F.binary_cross_entropy_with_logits(model(frames[:, 0]), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return model.eval().requires_grad_(False)


def load_digit_classifier(path: Path = SHIPPED) -> DigitClassifier:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: write it with python -m model.evaluation.digits --out {path}"
        )
    model = DigitClassifier()
    model.load_state_dict(load_file(path))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def content_kept(classifier: DigitClassifier, videos: torch.Tensor) -> float:
    """Fraction of videos (N, T, 3, H, W) whose first and last frames show the same two digits to the classifier."""
    first, last = classifier.digits(videos[:, 0]), classifier.digits(videos[:, -1])  # (N, 2) each
    return float((first == last).all(dim=1).float().mean())


def shift_images(images: torch.Tensor, shifts: torch.Tensor, fill: float = -1.0) -> torch.Tensor:
    """images (N, C, H, W) moved by whole pixels, shifts (N, 2) long = (right, down); what moves in is fill."""
    N, C, H, W = images.shape
    ys = torch.arange(H)[None, :, None] - shifts[:, 1, None, None]  # (N, H, 1): the source row of each row
    xs = torch.arange(W)[None, None, :] - shifts[:, 0, None, None]  # (N, 1, W): the source column
    inside = (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)  # (N, H, W)
    index = (ys.clamp(0, H - 1) * W + xs.clamp(0, W - 1)).flatten(1)  # (N, H*W)
    moved = images.flatten(2).gather(2, index[:, None].expand(-1, C, -1)).view_as(images)
    return torch.where(inside[:, None], moved, torch.full_like(moved, fill))


@torch.no_grad()
def kept_under_translation(
    classifier: DigitClassifier, frames: torch.Tensor, max_shift: int = 6, seed: int = 0
) -> float:
    """Fraction of frames (N, 3, H, W) whose two digits the classifier still reads after moving the frame by a
    random whole-pixel shift of up to max_shift each way: the content kept of perfectly rigid motion. Real frames
    keep about 0.9; glyphs between two digits flip. A model whose fields move its glyphs rigidly keeps about this
    share: far below it, the fields bend the glyphs; near it, the glyphs are what to improve."""
    gen = torch.Generator().manual_seed(seed)
    shifts = torch.randint(-max_shift, max_shift + 1, (len(frames), 2), generator=gen)  # (N, 2)
    same = classifier.digits(frames) == classifier.digits(shift_images(frames, shifts))  # (N, 2)
    return float(same.all(dim=1).float().mean())


@torch.no_grad()
def digit_coverage(classifier: DigitClassifier, frames: torch.Tensor) -> float:
    """How evenly the ten digits occur in frames (N, 3, H, W), as the classifier reads them: the entropy of the
    labels it sees (two a frame), divided by log(10). 1 when every digit is as frequent as every other (real
    Moving MNIST), 0 for one digit; a generator that makes mostly 0s scores low whatever its strokes look like."""
    labels = classifier.digits(frames).flatten()  # (2N,)
    p = torch.bincount(labels, minlength=10).float() / labels.numel()  # (10,)
    p = p[p > 0]
    return float(-(p * p.log()).sum() / torch.log(torch.tensor(10.0)))


@torch.no_grad()
def accuracy(classifier: DigitClassifier, frames: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of frames (N, 3, H, W) whose two digits (labels (N, 2)) are exactly the classifier's two."""
    return float((classifier.digits(frames) == labels.sort(dim=1).values).all(dim=1).float().mean())


def heldout_accuracy(classifier: DigitClassifier, clips: int = 512, seed: int = 1) -> float:
    """Exact two-digit accuracy on frames of Moving MNIST clips of the held-out digits."""
    frames, labels = MovingMNIST(64, "heldout").draw(
        torch.rand(clips, 1, generator=torch.Generator().manual_seed(seed)) * 64,
        torch.Generator().manual_seed(seed),
    )
    return accuracy(classifier, frames[:, 0], labels)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m model.evaluation.digits",
        description="train the digit classifier of model.evaluation.evaluate",
    )
    p.add_argument("--out", type=Path, default=SHIPPED)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = train_digit_classifier(args.steps, seed=args.seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    print(
        json.dumps({"out": str(args.out), "steps": args.steps, "heldout_accuracy": heldout_accuracy(model)})
    )


if __name__ == "__main__":
    main()
