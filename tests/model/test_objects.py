"""Object motion (model.objects): each object moves rigidly on its own path, bounces off the walls, and the fields
stay one-to-one (no folds, the background never shows an object's ink); a GenDeF model that moves objects samples
as every model does (deterministic, resample = sample's fields, motion_at = sample's frames, longer clips extend
shorter ones) and round-trips through a checkpoint."""

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import GenDeFConfig, preset
from model.fields import jacobian_determinant
from model.gendef import GenDeF
from model.objects import (
    TrajectoryGenerator,
    boxes,
    carry,
    components,
    footprints,
    layer,
    nearest_background,
    on_canvas,
    path,
    shares,
    sorted_classes,
)
from model.training.objects import segment_targets
from model.warp import identity_grid

SIZE = 32


def blob(x0: int, y0: int, w: int = 6, h: int = 8) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE)
    mask[y0 : y0 + h, x0 : x0 + w] = 1
    mask[y0 + 2 : y0 + h - 2, x0 + 2 : x0 + w - 2] = 0  # a ring: ink with background inside, like a 0
    return mask


def points_of(fields: torch.Tensor) -> torch.Tensor:
    """Fields in grid units -> the canonical point each pixel reads, in pixels."""
    return (fields + 1) * SIZE / 2 - 0.5


def carried(masks: torch.Tensor, displacement: torch.Tensor, margin: int = 2, fade: int = 6) -> torch.Tensor:
    """The fields of masks (B, K, H, W) carried by their displacements (B, K, T, 2)."""
    times = torch.arange(float(displacement.shape[2]))
    return on_canvas(carry(footprints(masks, margin, fade), displacement, times), SIZE, SIZE)


def test_an_object_moves_rigidly_and_the_background_never_shows_its_ink():
    masks = blob(4, 6)[None, None]  # (1, 1, H, W)
    steps = torch.tensor([2.0, 1.0]).expand(1, 1, 9, 2)
    displacement = torch.cat(
        [torch.zeros(1, 1, 1, 2), steps.cumsum(dim=2)], dim=2
    )  # 10 frames: 18 px right, 9 down
    fields = carried(masks, displacement)
    ys, xs = torch.meshgrid(torch.arange(float(SIZE)), torch.arange(float(SIZE)), indexing="ij")
    pixel = torch.stack([xs, ys], dim=-1)
    ink = masks[0, 0] > 0.5
    for t in range(10):
        d = displacement[0, 0, t]
        shifted = ink.roll((int(d[1]), int(d[0])), (0, 1))
        reads = points_of(fields[0, t])
        torch.testing.assert_close(reads[shifted], pixel[shifted] - d, atol=1e-3, rtol=0)  # rigid
        elsewhere = reads[~shifted].round().long().clamp(0, SIZE - 1)
        assert not ink[elsewhere[:, 1], elsewhere[:, 0]].any()  # no ink shown twice or smeared
    assert (jacobian_determinant(fields) > 0).all()  # one-to-one: nothing folds
    assert torch.equal(fields[:, 0], identity_grid(SIZE, SIZE)[None])  # frame 0 is the canonical image


def test_two_objects_move_each_its_own_way():
    masks = torch.stack([blob(3, 3), blob(20, 18)])[None]  # (1, 2, H, W)
    displacement = torch.zeros(1, 2, 6, 2)
    displacement[0, 0, :, 0] = torch.arange(6.0)  # right, 1 px a frame
    displacement[0, 1, :, 1] = -torch.arange(6.0)  # up
    reads = points_of(carried(masks, displacement))[0, 5]  # frame 5
    ys, xs = torch.nonzero(masks[0, 0] > 0.5, as_tuple=True)
    torch.testing.assert_close(reads[ys, xs + 5], torch.stack([xs, ys], -1).float(), atol=1e-3, rtol=0)
    ys, xs = torch.nonzero(masks[0, 1] > 0.5, as_tuple=True)
    torch.testing.assert_close(reads[ys - 5, xs], torch.stack([xs, ys], -1).float(), atol=1e-3, rtol=0)


def test_objects_that_touch_part_along_the_background_not_through_their_ink():
    left, right = blob(6, 10), blob(12, 10)  # their inks touch (columns 11 and 12)
    prints = footprints(torch.stack([left, right])[None], 2, 6)
    share = shares(prints.weight)[0, :, prints.pad : -prints.pad, prints.pad : -prints.pad]  # on the canvas
    assert (share[0][right > 0.5] == 0).all() and (
        share[1][left > 0.5] == 0
    ).all()  # each ink moves with its own
    assert (share[0][left > 0.5] == 1).all() and (share[1][right > 0.5] == 1).all()


def test_an_object_at_the_edge_leaves_it_without_folding_the_background():
    masks = torch.zeros(1, 1, SIZE, SIZE)
    masks[0, 0, 10:24, 0:6] = 1  # ink on the canvas edge
    displacement = torch.cat(
        [torch.zeros(1, 1, 1, 2), torch.tensor([1.7, 0.9]).expand(1, 1, 15, 2).cumsum(2)], 2
    )
    fields = carried(masks, displacement)
    assert (
        jacobian_determinant(fields) > 0
    ).all()  # the background behind it stretches, never folds or tears
    assert (points_of(fields)[..., 0] >= -0.5).all()  # and nothing comes from beyond the edge


def test_objects_near_each_other_moving_apart_part_the_background_without_a_seam():
    masks = torch.stack([blob(10, 12), blob(22, 12)])[None]  # 6 px of background between their inks
    displacement = torch.zeros(1, 2, 7, 2)
    displacement[0, 0, :, 0] = -torch.arange(7.0)  # left, to 4 px from the edge
    displacement[0, 1, :, 1] = torch.arange(7.0)  # down
    fields = carried(masks, displacement)
    assert (jacobian_determinant(fields) > 0).all()


def test_paths_bounce_off_the_walls_and_start_where_the_canonical_image_has_the_object():
    box = boxes(blob(20, 2)[None, None])  # x 20..25, y 2..9
    assert box.tolist() == [[[20.0, 2.0, 25.0, 9.0]]]
    velocity = torch.tensor([3.0, -1.0]).expand(1, 1, 40, 2)
    d = path(box, velocity, SIZE, wall=1.0)  # (1, 1, 41, 2)
    assert torch.equal(d[0, 0, 0], torch.zeros(2))
    x0 = 20 + d[0, 0, :, 0]
    y0 = 2 + d[0, 0, :, 1]
    assert (
        x0.min() >= 1 - 1e-4 and x0.max() <= SIZE - 1 - 1 - 5 + 1e-4
    )  # the box stays 1 px inside the canvas
    assert y0.min() >= 1 - 1e-4
    dx = x0.diff()
    assert (dx > 0).any() and (dx < 0).any()  # it turned back
    assert torch.allclose(dx.abs().max(), torch.tensor(3.0))  # at the velocity's speed


def test_a_trajectory_does_not_depend_on_later_noise():
    torch.manual_seed(0)
    gen = TrajectoryGenerator(z_dim=4, hidden=8, max_speed=5.0)
    noise = torch.randn(3, 20, 4)
    longer = torch.cat([noise, torch.randn(3, 10, 4)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(gen(longer)[:, :20], gen(noise))
        assert gen(noise).abs().max() <= 5.0


def test_sorted_classes_and_segment_targets_follow_the_labels():
    labels = torch.zeros(2, 10)
    labels[0, [7, 3]] = 1
    labels[1, [0, 9]] = 1
    assert sorted_classes(labels, 2).tolist() == [[3, 7], [0, 9]]
    alone = torch.zeros(1, 2, 4, 4)
    alone[0, 0, 0, :3] = 0.9  # digit "7" (drawn first) on the top row
    alone[0, 1, 0, 2:] = 0.5  # digit "3", overlapping at column 2, fainter there
    target = segment_targets(alone, torch.tensor([[7, 3]]))
    assert target[0, 0].tolist() == [2, 2, 2, 1]  # 3 is object 1, 7 object 2; the brighter wins the overlap
    assert (target[0, 1:] == 0).all()


@pytest.fixture(scope="module")
def moving_objects() -> GenDeF:
    d = preset("tiny").to_dict()
    d["canonical"] |= {"classes": 10, "labels_per_image": 2}
    d["objects"] = {"count": 2, "channels": 4, "z_dim": 4, "hidden": 8}
    torch.manual_seed(0)
    model = GenDeF(GenDeFConfig.from_dict(d)).eval()
    with torch.no_grad():  # a segmenter that calls the brightest half of the picture object 1 and the rest 2
        model.objects.segmenter.out.bias.copy_(torch.tensor([0.0, 0.1, 0.05]))
    return model


def test_a_model_that_moves_objects_samples_as_every_model_does(moving_objects):
    model = moving_objects
    assert model.moves_objects and not hasattr(model, "deformation")
    out = model.sample([1, 2], [3, 4], 12, labels=[[2, 5], None])
    assert out.fields.shape == (2, 12, SIZE, SIZE, 2) and out.frames.abs().max() <= 1
    again = model.sample([1, 2], [3, 4], 12, labels=[[2, 5], None])
    assert torch.equal(out.fields, again.fields) and torch.equal(out.canonical, again.canonical)
    assert torch.equal(model.sample_motion([1, 2], [3, 4], 12, labels=[[2, 5], None]), out.fields)
    longer = model.sample([1], [3], 20, labels=[[2, 5]])
    assert torch.equal(longer.fields[:, :12], out.fields[:1])  # a longer clip extends a shorter one
    at = model.motion_at(1, 3, [0.0, 5.0, 11.0], labels=[2, 5])
    torch.testing.assert_close(at, out.fields[0, [0, 5, 11]], atol=1e-5, rtol=0)
    assert not torch.equal(model.sample_motion([1], [9], 12, labels=[[2, 5]]), out.fields[:1])  # motion seed


def test_moving_objects_needs_a_label_per_object():
    d = preset("tiny").to_dict()
    d["objects"] = {"count": 2}
    with pytest.raises(ValueError, match="objects.count > 0 needs a conditional canonical generator"):
        GenDeFConfig.from_dict(d)


def test_a_model_that_moves_objects_round_trips_through_a_checkpoint(moving_objects, tmp_path):
    save_checkpoint(moving_objects, tmp_path / "ckpt", card={"data": "test"})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.moves_objects
    assert torch.equal(loaded.sample([5], [6], 8).fields, moving_objects.sample([5], [6], 8).fields)


def test_components_are_the_connected_strokes():
    on = torch.zeros(1, 6, 6, dtype=torch.bool)
    on[0, 0, :3] = True  # one stroke
    on[0, 1, 3] = True  # touches it diagonally: the same stroke
    on[0, 4:, 4:] = True  # another
    parts = components(on)[0]
    assert parts[0, 0] == parts[1, 3] and parts[4, 4] == parts[5, 5] and parts[0, 0] != parts[4, 4]
    assert (parts[~on[0]] == -1).all() and len(parts[on[0]].unique()) == 2


def test_objects_that_part_open_background_between_them_not_a_smear_of_ink():
    left, right = blob(8, 10), blob(14, 10)  # touching inks (columns 13 and 14)
    masks = torch.stack([left, right])[None]
    displacement = torch.zeros(1, 2, 7, 2)
    displacement[0, 0, :, 0] = -torch.arange(7.0)  # apart: 12 px between them at frame 6
    displacement[0, 1, :, 0] = torch.arange(7.0)
    times = torch.arange(7.0)
    moved = footprints(masks, 2, 6)
    canonical = masks.amax(dim=1, keepdim=True).expand(-1, 3, -1, -1) * 2 - 1
    points = layer(carry(moved, displacement, times), canonical, moved, masks, displacement, times)
    ink = masks.amax(dim=1)[0]
    gap = points[0, 6, 10:18, 14:20].round().long()  # between them at frame 6
    assert not ink[gap[..., 1], gap[..., 0]].any()
    reads = points[0, 6]
    ys, xs = torch.nonzero(left > 0.5, as_tuple=True)
    torch.testing.assert_close(reads[ys, xs - 6], torch.stack([xs, ys], -1).float(), atol=1e-3, rtol=0)


def test_nearest_background_is_off_the_ink():
    ink = blob(4, 4, 10, 10)[None] > 0.5
    free = nearest_background(ink)[0].long()
    assert not ink[0, free[..., 1], free[..., 0]].any()
    assert (
        torch.equal(free[0, 0], torch.tensor([0, 0])) and (free[5, 4] - torch.tensor([4, 5])).abs().max() <= 1
    )


def test_objects_that_cross_show_both_strokes_each_in_one_piece():
    down, across = torch.zeros(SIZE, SIZE), torch.zeros(SIZE, SIZE)
    down[4:14, 6] = 1  # a vertical stroke at x 6
    across[8, 16:26] = 1  # a horizontal stroke at y 8
    masks = torch.stack([down, across])[None]
    canonical = masks.amax(dim=1, keepdim=True).expand(-1, 3, -1, -1) * 2 - 1
    displacement = torch.zeros(1, 2, 6, 2)
    displacement[0, 0, :, 0] = 3 * torch.arange(6.0)  # right to x 21 at frame 5: through the other stroke
    times = torch.arange(6.0)
    moved = footprints(masks, 2, 6)
    points = layer(carry(moved, displacement, times), canonical, moved, masks, displacement, times)
    frame = canonical[0, 0][points[0, 5, ..., 1].round().long(), points[0, 5, ..., 0].round().long()] > 0
    assert frame[4:14, 21].all() and frame[8, 16:26].all()  # both whole where they cross
    assert frame.sum() == down.sum() + across.sum() - 1  # and nothing else: no smear, no copy
