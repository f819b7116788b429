"""Segments: a long shot fitted as stretches of frames apart (each its own canonical image, a tile of the atlas), so
the stretches can be fitted at the same time on different workers and no single fit grows with the clip.

Consecutive segments of a shot share ``OVERLAP`` frames: both fit them. The video shows each frame from one tile
only, so at each join it switches from the earlier tile to the later one somewhere in the shared frames: where the
switch changes the picture least from one frame to the next (``switch_frame``), that is where the two tiles agree
and the picture moves least. A join without shared frames would have no choice, and would put the two fits' edges,
the frames each fit knows least, side by side.

Paint on one tile can be carried to the next ones of its shot through a frame both render (``carry``): the frame
where the video switches, whose field into the earlier tile the join keeps beside the clip's fields.
"""

from __future__ import annotations

import torch

from model.warp import warp

OVERLAP = 4  # frames two consecutive segments of a shot share


def split(start: int, end: int, max_frames: int, overlap: int = OVERLAP) -> list[tuple[int, int]]:
    """Frames [start, end) of one shot as the fewest segments [(start, end)] of at most max_frames frames, each
    sharing `overlap` frames with the next, as equal in length as whole frames allow."""
    if max_frames < 3 * overlap:  # then each middle segment shows a frame of its own, whatever the joins
        raise ValueError(
            f"segments of {max_frames} frames are too short to share {overlap} with each neighbour"
        )
    frames = end - start
    if frames <= max_frames:
        return [(start, end)]
    count = -(-(frames - overlap) // (max_frames - overlap))  # ceil: each segment adds at most max - overlap
    starts = [start + i * (frames - overlap) // count for i in range(count)]
    ends = [s + overlap for s in starts[1:]] + [end]
    return list(zip(starts, ends, strict=True))


def switch_frame(earlier: torch.Tensor, later: torch.Tensor) -> int:
    """Where the video switches from one segment's tile to the next's, within the n frames the two share: given the
    earlier tile's renders of the frame before the shared ones and of the shared ones (n + 1, 3, H, W), and the later
    tile's of the shared ones and the frame after (n + 1, 3, H, W), the i in 0..n for which showing the earlier
    tile up to shared frame i - 1 and the later one from shared frame i makes the smallest change from one frame
    to the next (mean absolute difference): a frame where the two tiles agree and the picture moves least. Of
    equals, the one nearest the middle of the overlap, where both fits have frames on either side."""
    n = earlier.shape[0] - 1
    change = (
        (earlier - later).abs().mean(dim=(1, 2, 3))
    )  # (n + 1,): frame i - 1 of one tile, frame i of the other
    return min(range(n + 1), key=lambda i: (float(change[i]), abs(2 * i - n)))


def owned(ranges: list[tuple[int, int, int]], switches: list[int]) -> list[tuple[int, int]]:
    """The frames each segment shows: ranges [(shot, start, end)] in clip order (what each was fitted on), and for
    each consecutive pair of the same shot, the frame at which the video switches to the later one (in order).
    Returns [(start, end)]: every frame of the clip in exactly one."""
    bounds = [[start, end] for _, start, end in ranges]
    joins = iter(switches)
    for i in range(len(ranges) - 1):
        if ranges[i][0] == ranges[i + 1][0]:
            at = next(joins)
            if not ranges[i + 1][1] <= at <= ranges[i][2]:
                raise ValueError(f"frame {at} is not shared by segments {ranges[i]} and {ranges[i + 1]}")
            bounds[i][1] = bounds[i + 1][0] = at
    if any(a >= b for a, b in bounds):
        raise ValueError(f"a segment shows no frame of its own: {ranges} switched at {switches}")
    return [(a, b) for a, b in bounds]


def carry(
    painted: torch.Tensor,
    paint: torch.Tensor,
    seen_by: torch.Tensor,
    lands_at: torch.Tensor,
    columns: tuple[int, int],
    min_weight: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint carried from one tile of an atlas to another through a frame that both tiles render.

    painted (3, Hc, Wc): the atlas with the paint on; paint (Hc, Wc): how much of each pixel is paint (0 to 1, zero
    outside the painted tile); seen_by (H, W, 2): the frame's field into the painted tile, lands_at (H, W, 2): its
    field into the other tile (both in grid_sample's units of the atlas, API.md's convention); columns: the other
    tile's [x0, x1). Returns the paint's colour (3, Hc, Wc) and how much of each pixel it covers (Hc, Wc), both zero
    outside the other tile: what the frame shows of the paint at the frame pixels that land on each pixel
    (bilinear weights), where those weigh at least min_weight in all; elsewhere (what the frame does not see
    there) nothing. Paint is carried as a layer, not as a change: an opaque mark stays opaque over whatever the
    other tile holds there."""
    _, Hc, Wc = painted.shape
    layers = torch.cat([painted * paint, paint[None]])  # (4, Hc, Wc): premultiplied colour, coverage
    shown = warp(layers[None], seen_by[None, None], "bilinear")[0, 0].reshape(4, -1)  # (4, H * W)
    x = ((lands_at[..., 0] + 1) * Wc / 2 - 0.5).flatten()  # atlas pixels, (H * W,)
    y = ((lands_at[..., 1] + 1) * Hc / 2 - 0.5).flatten()
    total, weight = painted.new_zeros(4, Hc * Wc), painted.new_zeros(Hc * Wc)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x.floor() + dx, y.floor() + dy
            w = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            inside = (xi >= columns[0]) & (xi < columns[1]) & (yi >= 0) & (yi < Hc)
            index = (yi * Wc + xi)[inside].long()
            total.index_add_(1, index, shown[:, inside] * w[inside])
            weight.index_add_(0, index, w[inside])
    seen = weight >= min_weight
    coverage = torch.where(seen, total[3] / weight.clamp_min(1e-8), torch.zeros_like(weight))
    colour = torch.where(
        seen & (total[3] > 0), total[:3] / total[3].clamp_min(1e-8), torch.zeros_like(total[:3])
    )
    return colour.reshape(3, Hc, Wc), coverage.reshape(Hc, Wc)
