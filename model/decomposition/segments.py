"""Segments: a long shot fitted as stretches of frames apart (each its own canonical image, a tile of the atlas), so
the stretches can be fitted at the same time on different workers and no single fit grows with the clip.

Consecutive segments of a shot share ``OVERLAP`` frames: both fit them. The video shows each frame from one tile
only, so at each join it switches from the earlier tile to the later one somewhere in the shared frames: where the
switch changes the picture least from one frame to the next (``switch_frame``), that is where the two tiles agree
and the picture moves least. A join without shared frames would have no choice, and would put the two fits' edges,
the frames each fit knows least, side by side.
"""

from __future__ import annotations

import torch

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
