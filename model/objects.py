"""Object motion: each object of the canonical image moves on its own path, and a frame's field carries it there.

GenDeF's deformation generator makes each frame's field from the canonical features, a motion code and time.
Trained on this project's CPUs it learned fields that slide the whole picture: two Moving-MNIST digits' offset from
each other changed by 0.57 px over 16 frames, against 26.6 px in real clips (docs/TRAINING.md has the diagnosis).
A model with ``objects.count`` > 0 makes each object's motion explicit instead, in three parts:

- ``ObjectSegmenter``: the canonical image and its labels -> background and one region per object (object k is the
  digit of the k-th smallest label), a small U-Net trained on real frames whose digits are known;
- ``TrajectoryGenerator``: each object's velocity in every frame from its own noise (a GRU trained adversarially
  against real clips' motion, model.training.objects); ``path`` integrates it and reflects it off the canvas walls,
  so an object stays in the picture and bounces where it meets an edge;
- ``carry``: each frame's field is the flow of a velocity field that moves every object's footprint (its ink and
  ``margin_px`` around it, fading out over ``fade_px`` more) from where it is in the frame back to where it is in
  the canonical image, in steps small enough that each is one-to-one (the step's displacement changes by at most
  ``STEP_LIPSCHITZ`` a px). Where two footprints' fades overlap their velocities blend continuously (``shares``),
  and the flow slows to nothing at the canvas edges (``_walls``), so the background flows without a seam and never
  across the edge: an object's pixels move rigidly and the background around it stretches or gathers, one to one.
- ``layer``: the objects are drawn over that background, each within ``COVER_PX`` of its ink exactly where its
  path has it (two digits that cross show both strokes, as Moving MNIST draws them). Where objects that touch or
  cross part, the background opening between them has nothing in the canonical image to stretch from: those pixels
  read an equal patch of background nearby (``background_patches``), a tear along the patch's edge, not a fold.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ObjectsConfig

STEP_LIPSCHITZ = 0.5  # bound of each flow step's displacement gradient (< 1 makes a step one-to-one)
UNCOVER_INK = 0.1  # a pixel no object covers shows background where its point reads less ink than this
MAX_STEPS = 64  # bound of a frame's flow steps (two rigid parts that cross change velocity within a px)
COVER_PX = 1  # an object covers (shows itself at) the pixels within this many px of its ink
WALL_RAMP_PX = 2.0  # the flow slows to nothing over this many px at the canvas edge (``_walls``)
WHOLE_SHARE = 0.8  # a connected stroke goes whole to an object that holds at least this share of it


def _block(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, 3, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(out, out, 3, padding=1),
        nn.LeakyReLU(0.2),
    )


class ObjectSegmenter(nn.Module):
    """A 4-level U-Net: image (B, 3, H, W) in [-1, 1] and each object's class (B, count) -> logits (B, count + 1,
    H, W) of background (0) and object k (k + 1). H and W must be multiples of 8."""

    def __init__(self, count: int, classes: int, channels: int) -> None:
        super().__init__()
        c = channels
        self.count, self.classes = count, classes
        self.down = nn.ModuleList([_block(1 + count * classes, c), _block(c, 2 * c), _block(2 * c, 2 * c)])
        self.down.append(_block(2 * c, 2 * c))
        self.up = nn.ModuleList([_block(4 * c, 2 * c), _block(4 * c, c), _block(2 * c, c)])
        self.out = nn.Conv2d(c, count + 1, 1)

    def forward(self, image: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        B, _, H, W = image.shape
        which = F.one_hot(classes, self.classes).float().flatten(1)  # (B, count * classes)
        x = torch.cat([image.mean(1, keepdim=True), which[:, :, None, None].expand(-1, -1, H, W)], dim=1)
        skips = []
        for i, block in enumerate(self.down):
            x = block(F.avg_pool2d(x, 2) if i else x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], dim=1))
        return self.out(x)


class TrajectoryGenerator(nn.Module):
    """Noise (N, S, z_dim) -> velocities (N, S, 2) in px a frame (x, y), velocity s moving frame s to s + 1: an
    initial velocity from the first noise (an MLP) plus a change from a GRU over the noise so far (zero at
    initialisation: the velocity starts constant). Each velocity depends on the noise up to its step only, so a
    longer clip extends a shorter one."""

    def __init__(self, z_dim: int, hidden: int, max_speed: float) -> None:
        super().__init__()
        self.max_speed = max_speed
        self.initial = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2)
        )
        self.initial.append(nn.Linear(hidden, 2))
        self.start = nn.Linear(z_dim, hidden)
        self.cell = nn.GRUCell(z_dim, hidden)
        self.change = nn.Linear(hidden, 2)
        nn.init.zeros_(self.change.weight)
        nn.init.zeros_(self.change.bias)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        first = self.initial(noise[:, 0])  # (N, 2)
        h = torch.tanh(self.start(noise[:, 0]))  # (N, hidden)
        changes = []
        for s in range(noise.shape[1]):
            h = self.cell(noise[:, s], h)
            changes.append(self.change(h))
        v = first[:, None] + torch.stack(changes, dim=1)  # (N, S, 2)
        return self.max_speed * torch.tanh(v / self.max_speed)


def sorted_classes(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Multi-hot labels (B, classes) with `count` ones -> their class indices, ascending (B, count)."""
    order = labels.argsort(dim=1, descending=True, stable=True)[:, :count]  # the ones, in index order
    return order.sort(dim=1).values


def boxes(masks: torch.Tensor) -> torch.Tensor:
    """Bounding boxes (B, K, 4) as (x0, y0, x1, y1), pixel indices inclusive, of masks (B, K, H, W) (> 0.5 counts);
    an empty mask's box is the whole canvas (such an object does not move)."""
    H, W = masks.shape[-2:]
    on = masks > 0.5
    xs, ys = on.any(dim=-2), on.any(dim=-1)  # (B, K, W), (B, K, H)

    def span(hit: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(size, device=hit.device, dtype=torch.float32)
        lo = torch.where(hit, idx, torch.full_like(idx, size)).amin(-1)
        hi = torch.where(hit, idx, torch.full_like(idx, -1)).amax(-1)
        empty = ~hit.any(-1)
        return torch.where(empty, 0.0, lo), torch.where(empty, size - 1.0, hi)

    x0, x1 = span(xs, W)
    y0, y1 = span(ys, H)
    return torch.stack([x0, y0, x1, y1], dim=-1)


def components(on: torch.Tensor) -> torch.Tensor:
    """The 8-connected components of masks (B, H, W) bool -> (B, H, W) long: each pixel of a component holds the
    same id (the largest flat index among them), -1 off the masks."""
    H, W = on.shape[-2:]
    index = torch.arange(H * W, device=on.device, dtype=torch.float32).view(1, 1, H, W)
    ids = torch.where(on[:, None], index, -1.0)  # (B, 1, H, W)
    while True:
        grown = torch.where(on[:, None], F.max_pool2d(ids, 3, stride=1, padding=1), -1.0)
        if torch.equal(grown, ids):
            return ids[:, 0].long()
        ids = grown


def reflect(p: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Positions moving freely, folded into [lo, hi] as by elastic walls (broadcasting)."""
    room = (hi - lo).clamp(min=1e-6)
    m = torch.remainder(p - lo, 2 * room)
    return lo + torch.where(m > room, 2 * room - m, m)


def path(box: torch.Tensor, velocities: torch.Tensor, size: int, wall: float) -> torch.Tensor:
    """Each object's displacement from the canonical image (B, K, S + 1, 2) in px, 0 at frame 0: its box (B, K, 4)
    moves by the velocities (B, K, S, 2) and bounces off walls `wall` px inside a size x size canvas (an object that
    starts nearer the wall, or is too big to move, keeps its own room)."""
    corner, extent = box[..., :2], box[..., 2:] - box[..., :2]  # (B, K, 2) each
    lo = torch.minimum(torch.full_like(corner, wall), corner)
    hi = torch.maximum(size - 1 - wall - extent, corner)
    free = corner[:, :, None] + F.pad(velocities.cumsum(dim=2), (0, 0, 1, 0))  # (B, K, S + 1, 2)
    return reflect(free, lo[:, :, None], hi[:, :, None]) - corner[:, :, None]


class Footprints(NamedTuple):
    """What moves with each object (``footprints``): weight (B, K, H + 2 pad, W + 2 pad) over the canvas and `pad`
    px of the plane around it."""

    weight: torch.Tensor
    pad: int

    @property
    def size(self) -> tuple[int, int]:
        """The canvas (H, W)."""
        return self.weight.shape[-2] - 2 * self.pad, self.weight.shape[-1] - 2 * self.pad

    def at(self, points: torch.Tensor) -> torch.Tensor:
        """Bilinear reads at canvas points (B, K, ..., 2) px, each object's footprint at its own -> (B, K, ...)."""
        return _sample(self.weight.flatten(0, 1), points.flatten(0, 1) + self.pad).view(points.shape[:-1])


def footprints(masks: torch.Tensor, margin: int, fade: int) -> Footprints:
    """What moves with each object, masks (B, K, H, W) -> weights 1 on the ink and within `margin` px of it (the
    chessboard distance; the object's rigid part), falling by 1 / (fade + 1) a px beyond, over the canvas and
    margin + fade px around it (an object at the edge fades out beyond it as anywhere else). Where two objects'
    rigid parts overlap (they touch in the canonical image), a pixel belongs to the nearer one only (by that
    distance; a tie goes to the later object), so they part along the background between them, not through either
    one's ink; elsewhere their weights overlap and ``shares`` blends them."""
    B, K, H, W = masks.shape
    reach = margin + fade
    grown = F.pad(masks.flatten(0, 1)[:, None], (reach,) * 4) > 0.5  # (B*K, 1, H + 2P, W + 2P)
    distance = torch.where(grown, 0.0, float(reach + 1))
    for j in range(1, reach + 1):
        grown = F.max_pool2d(grown.float(), 3, stride=1, padding=1) > 0.5
        distance = torch.where(grown & (distance > j), float(j), distance)
    distance = distance.reshape(B, K, H + 2 * reach, W + 2 * reach)
    profile = ((reach + 1 - distance) / (fade + 1)).clamp(0, 1)
    nearest = (
        distance + torch.arange(K, 0, -1, device=masks.device)[None, :, None, None] * 1e-3
    )  # ties: the later
    owner = nearest == nearest.amin(dim=1, keepdim=True)
    rigid = profile >= 1
    clash = rigid.sum(dim=1, keepdim=True) > 1
    return Footprints(torch.where(clash & ~owner, 0.0, profile), reach)


def shares(weights: torch.Tensor) -> torch.Tensor:
    """Each object's share (B, K, ...) of the velocity at a pixel from its footprint's weights there (B, K, ...):
    as if each object claimed the pixel with its weight as chance, the chance that it alone claims it, given that
    at most one does: its full weight where no other object reaches, blended continuously where fades overlap
    (so the flow has no seam between two objects); where two rigid parts meet (objects that cross) they share
    evenly."""
    free = (1 - weights).clamp(min=0)
    K = weights.shape[1]
    others = torch.stack(
        [torch.cat([free[:, :k], free[:, k + 1 :]], dim=1).prod(dim=1) for k in range(K)], dim=1
    )
    alone = weights * others
    total = alone.sum(dim=1, keepdim=True) + free.prod(dim=1, keepdim=True)
    even = weights / weights.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.where(total > 1e-3, alone / total.clamp(min=1e-3), even)


def _walls(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each point's (..., 2) share of a velocity it may take along x and along y: 0 on the canvas edge, rising to 1
    at ``WALL_RAMP_PX`` inside, so the flow carries nothing across the edge (the canonical image holds nothing
    beyond it)."""
    H, W = size
    far = torch.tensor([W - 0.5, H - 0.5], device=points.device)
    return (torch.minimum(points + 0.5, far - points) / WALL_RAMP_PX).clamp(0, 1)


def _to_grid(points: torch.Tensor, size: int) -> torch.Tensor:
    return (2 * points + 1) / size - 1  # pixel coordinates -> grid_sample's (align_corners=False)


def _pixels(height: int, width: int, device: torch.device) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1)  # (H, W, 2): each pixel's (x, y)


def _velocity(
    footprint: Footprints, points: torch.Tensor, offset: torch.Tensor, step: torch.Tensor
) -> torch.Tensor:
    """The velocity (B, H, W, 2) at points (B, H, W, 2) px of the objects at displacements offset (B, K, 2) each
    moving by step (B, K, 2): each object's step by its share, slowed at the canvas edges."""
    weights = footprint.at(points[:, None] - offset[:, :, None, None])  # (B, K, H, W)
    velocity = (shares(weights)[..., None] * step[:, :, None, None]).sum(dim=1)
    return velocity * _walls(points, footprint.size)


def _steepest(velocity: torch.Tensor) -> torch.Tensor:
    """The largest change of each of velocity fields (B, H, W, 2) between neighbouring pixels, px a px -> (B,)."""
    down = (velocity[:, 1:] - velocity[:, :-1]).abs().flatten(1).amax(dim=1)
    across = (velocity[:, :, 1:] - velocity[:, :, :-1]).abs().flatten(1).amax(dim=1)
    return torch.maximum(down, across)


def _flow_back(
    footprint: Footprints, before: torch.Tensor, after: torch.Tensor, share: float
) -> torch.Tensor:
    """Where each pixel of the moment `share` (0..1] of the way from one frame to the next was in the first: the
    objects at displacements before and after (B, K, 2) px in those two frames. The flow of the velocity field that
    moves each footprint back along its object's motion (``_velocity``), in steps each one-to-one: as many as make
    the step's displacement change by at most ``STEP_LIPSCHITZ`` between neighbouring pixels (measured where the
    objects are at both ends; at most ``MAX_STEPS``), counted for each video on its own, so a video's flow is the
    same in a batch as alone. -> (B, H, W, 2) px."""
    B = footprint.weight.shape[0]
    H, W = footprint.size
    points = _pixels(H, W, footprint.weight.device).expand(B, H, W, 2)
    step = after - before  # (B, K, 2)
    change = torch.maximum(*(_steepest(_velocity(footprint, points, at, step)) for at in (before, after)))
    steps = (2 * change * share / STEP_LIPSCHITZ).ceil().clamp(1, MAX_STEPS)  # (B,)
    for i in range(int(steps.max())):
        left = (i < steps).float()[:, None, None, None]  # videos with steps still to go
        offset = (
            before + step * (share * (1 - i / steps))[:, None, None]
        )  # (B, K, 2): where each footprint is now
        points = (
            points - _velocity(footprint, points, offset, step) * (share / steps)[:, None, None, None] * left
        )
    return points


def _read(points: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """Bilinear reads of point maps (B, H, W, 2) at pixel positions (B, H, W, 2), the edge beyond the canvas."""
    H, W = points.shape[1:3]
    size = torch.tensor([W, H], dtype=torch.float32, device=points.device)
    grid = _to_grid(at, size)
    out = F.grid_sample(
        points.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.permute(0, 2, 3, 1)


def carry(footprint: Footprints, displacement: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """The canonical point (B, T, H, W, 2) in pixels that each pixel of each frame at times (T,) shows, for each
    object moved along its path: displacement (B, K, S + 1, 2) px from where its footprint (``footprints``) has it in the
    canonical image, at whole frames 0..S (linear in between). Each frame's map is the one before it composed
    with the flow back over one frame (``_flow_back``; see the module doc), so the objects' footprints are where
    their objects were at every moment between."""
    B = footprint.weight.shape[0]
    H, W = footprint.size
    whole = [_pixels(H, W, footprint.weight.device).expand(B, H, W, 2)]  # frame 0 shows the canonical image
    for s in range(1, int(math.ceil(float(times.max()))) + 1):
        back = _flow_back(footprint, displacement[:, :, s - 1], displacement[:, :, s], 1.0)
        whole.append(_read(whole[-1], back))
    frames = []
    for t in times.tolist():
        s = math.floor(t)
        if t == s:
            frames.append(whole[s])
        else:
            back = _flow_back(footprint, displacement[:, :, s], displacement[:, :, s + 1], t - s)
            frames.append(_read(whole[s], back))
    return torch.stack(frames, dim=1)


def _sample(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear reads of images (N, H, W) at pixel points (N, ..., 2), zero outside -> (N, ...)."""
    N, H, W = images.shape
    size = torch.tensor([W, H], dtype=torch.float32, device=images.device)
    grid = _to_grid(points, size).reshape(N, -1, 1, 2)
    out = F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(points.shape[:-1])


def nearest_background(ink: torch.Tensor) -> torch.Tensor:
    """For each pixel of masks (B, H, W) bool, the pixel (x, y) nearest it (chessboard distance, near enough) that is
    off the mask: itself off the mask. -> (B, H, W, 2) float."""
    B, H, W = ink.shape
    source = _pixels(H, W, ink.device).expand(B, H, W, 2).clone()
    found = ~ink
    while not found.all() and found.any():
        grown_from = source.clone()
        grown = found.clone()
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
            near = found.roll((dy, dx), (1, 2))
            take = near & ~grown
            grown_from[take] = source.roll((dy, dx), (1, 2))[take]
            grown |= take
        source, found = grown_from, grown
    return source


def layer(
    points: torch.Tensor,
    canonical: torch.Tensor,
    footprint: Footprints,
    masks: torch.Tensor,
    displacement: torch.Tensor,
    times: torch.Tensor,
) -> torch.Tensor:
    """The objects as layers over the flowed background: a pixel that objects cover in its frame (within ``COVER_PX``
    of their ink, in their rigid part) shows the brightest of what they hold there (so two digits that cross show
    both strokes, as Moving MNIST draws them, instead of squeezing where they meet); a pixel no object covers keeps
    its flowed point (B, T, H, W, 2), unless that point reads an object's ink: where two objects that touch or
    cross part, the flow gathers the background opening between them onto where they met, which the canonical image
    holds no background for. Such pixels (with the gaps between them closed) read background elsewhere
    (``background_patches``). canonical (B, C, H, W); footprint (``footprints``), masks (B, K, H, W); displacement at
    whole frames (B, K, S + 1, 2); times (T,)."""
    B, K, H, W = masks.shape
    T = len(times)
    lo = times.floor().long().clamp(max=displacement.shape[2] - 1)
    hi = (lo + 1).clamp(max=displacement.shape[2] - 1)
    a = (times - lo)[None, None, :, None]
    now = displacement[:, :, lo] * (1 - a) + displacement[:, :, hi] * a  # (B, K, T, 2)
    where = _pixels(H, W, points.device) - now[:, :, :, None, None]  # (B, K, T, H, W, 2): each object's point
    near_ink = F.max_pool2d(masks.flatten(0, 1)[:, None], 2 * COVER_PX + 1, stride=1, padding=COVER_PX)[:, 0]
    covers = (footprint.at(where) >= 1 - 1e-3) & (
        _sample(near_ink, where.flatten(0, 1)).view(B, K, T, H, W) > 0.5
    )
    grey = canonical.mean(dim=1)[:, None].expand(-1, K, -1, -1).flatten(0, 1)  # (B*K, H, W)
    bright = _sample(grey, where.flatten(0, 1)).view(B, K, T, H, W).masked_fill(~covers, -torch.inf)
    top = bright.argmax(dim=1)[:, None, ..., None].expand(-1, -1, -1, -1, -1, 2)  # (B, 1, T, H, W, 2)
    shown = torch.gather(where, 1, top)[:, 0]  # (B, T, H, W, 2)
    covered = covers.any(dim=1)  # (B, T, H, W)
    ink = masks.amax(dim=1)  # (B, H, W)
    reads_ink = (_sample(ink, points) > UNCOVER_INK).float().flatten(0, 1)[:, None]  # (B*T, 1, H, W)
    closed = -F.max_pool2d(-F.max_pool2d(reads_ink, 3, stride=1, padding=1), 3, stride=1, padding=1)
    points = background_patches(points, (closed[:, 0] > 0).view(B, T, H, W) & ~covered, covered, ink)
    return torch.where(covered[..., None], shown, points)


# the offsets (px) a patch of background may be moved by from where its surroundings read, nearest first
_OFFSETS = torch.stack(
    torch.meshgrid(torch.arange(-12.0, 13.0), torch.arange(-12.0, 13.0), indexing="xy"), dim=-1
).reshape(-1, 2)
_OFFSETS = _OFFSETS[_OFFSETS.norm(dim=-1).argsort(stable=True)]


def background_patches(
    points: torch.Tensor, holes: torch.Tensor, covered: torch.Tensor, ink: torch.Tensor
) -> torch.Tensor:
    """Points (B, T, H, W, 2) with each connected hole (B, T, H, W bool) read as an equal patch of background: its
    pixels keep their places relative to each other (the patch is moved, not squeezed, so nothing in it folds), at
    the offset the pixels around it read by, moved to the nearest place where the patch reads no ink of masks
    ink (B, H, W) (up to 12 px; beyond that each pixel reads its nearest background pixel). covered (B, T, H, W):
    pixels that show an object, which say nothing of where the background around a hole reads."""
    B, T, H, W = holes.shape
    out = points.clone()
    pixel = _pixels(H, W, points.device)
    offsets = _OFFSETS.to(points.device)
    far = torch.tensor([W - 0.5, H - 0.5], device=points.device)
    for b in range(B):
        if not holes[b].any():
            continue
        fallback = None
        ids = components(holes[b])  # (T, H, W)
        for t in range(T):
            for hole in ids[t].unique().tolist():
                if hole < 0:
                    continue
                inside = ids[t] == hole
                around = (F.max_pool2d(inside.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0) & ~(
                    holes[b, t] | covered[b, t]
                )
                ref = around if around.any() else inside
                base = pixel[inside] + (points[b, t][ref] - pixel[ref]).mean(dim=0)
                tries = base[None] + offsets[:, None]  # (O, n, 2)
                fits = ((tries >= -0.5) & (tries <= far)).all(dim=-1).all(dim=-1)
                fits &= (
                    _sample(ink[b : b + 1].expand(len(offsets), H, W), tries).amax(dim=-1) < UNCOVER_INK / 2
                )
                if fits.any():
                    out[b, t][inside] = tries[fits.nonzero()[0, 0]]
                else:
                    if fallback is None:
                        fallback = nearest_background(ink[b : b + 1] > 0.5)[0]
                    out[b, t][inside] = fallback[inside]
    return out


def on_canvas(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel points (..., 2) kept within the canvas, in model.warp's grid units."""
    size = torch.tensor([width, height], dtype=torch.float32, device=points.device)
    return _to_grid(torch.minimum(points.clamp(min=-0.5), size - 0.5), size)


class Objects(nn.Module):
    """The object-motion part of a GenDeF model (config.objects.count > 0): see the module doc."""

    def __init__(self, cfg: ObjectsConfig, resolution: int, classes: int) -> None:
        super().__init__()
        self.cfg, self.resolution = cfg, resolution
        self.segmenter = ObjectSegmenter(cfg.count, classes, cfg.channels)
        self.trajectories = TrajectoryGenerator(cfg.z_dim, cfg.hidden, cfg.max_speed)

    def noise_shape(self, max_frames: int) -> tuple[int, int, int]:
        """One video's trajectory noise (drawn from its motion seed): per object, one code per frame step."""
        return (self.cfg.count, max_frames - 1, self.cfg.z_dim)

    def masks(self, canonical: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each object's pixels in canonical images (B, 3, H, W), multi-hot labels (B, classes) -> (B, K, H, W)
        of 0 and 1: the segmenter's, each connected stroke given whole to the object most of it belongs to (a
        digit moves in one piece), unless it is mixed (two objects that touch: pixel by pixel)."""
        probs = self.segmenter(canonical, sorted_classes(labels, self.cfg.count)).softmax(dim=1)
        objects = probs[:, 1:]  # (B, K, H, W)
        ink = objects.sum(dim=1) > probs[:, 0]  # (B, H, W)
        which = objects.argmax(dim=1)  # (B, H, W): per pixel
        parts = components(ink).flatten(1)  # (B, H*W), -1 off the ink
        B, K = objects.shape[:2]
        votes = torch.zeros(B, parts.shape[1] + 1, K, device=probs.device)
        votes.scatter_add_(1, (parts + 1)[..., None].expand(-1, -1, K), objects.flatten(2).transpose(1, 2))
        share = votes / votes.sum(dim=-1, keepdim=True).clamp(min=1e-9)  # (B, 1 + H*W, K) per part
        best, winner = share.max(dim=-1)
        whole = torch.gather(best, 1, parts + 1) >= WHOLE_SHARE
        which = torch.where(whole, torch.gather(winner, 1, parts + 1), which.flatten(1)).view_as(which)
        k = torch.arange(K, device=which.device)
        return ((which[:, None] == k[None, :, None, None]) & ink[:, None]).float()

    def displacements(self, masks: torch.Tensor, noise: torch.Tensor, frames: int) -> torch.Tensor:
        """Each object's displacement (B, K, frames, 2) px at whole frames from its trajectory noise (B, K, S, z)."""
        B, K = masks.shape[:2]
        velocities = self.trajectories(noise[:, :, : max(1, frames - 1)].flatten(0, 1)).unflatten(0, (B, K))
        return path(boxes(masks), velocities, self.resolution, self.cfg.wall_px)[:, :, :frames]

    def forward(
        self, canonical: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """canonical (B, 3, H, W) in [-1, 1], labels (B, classes), noise (B, K, S, z), times (T,) -> fields
        (B, T, H, W, 2)."""
        masks = self.masks(canonical, labels)
        fade = self.cfg.fade_px
        moved = footprints(masks, self.cfg.margin_px, fade)
        displacement = self.displacements(masks, noise, math.ceil(float(times.max())) + 1)
        points = carry(moved, displacement, times)
        points = layer(points, canonical, moved, masks, displacement, times)
        return on_canvas(points, *canonical.shape[-2:])
