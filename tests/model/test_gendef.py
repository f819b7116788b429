"""GenDeF sampling: shapes, ranges, zero-init identity warp, determinism and the motion codes."""

import pytest
import torch

from core.settings import DEFAULT_MODELS_DIR
from model.checkpoint import load_checkpoint
from model.config import preset
from model.gendef import STACK_TOLERANCE, GenDeF
from model.warp import identity_grid, warp
from tests.model.conftest import make_tiny


def test_zero_initialised_deformation_makes_every_frame_the_canonical_image():
    model = make_tiny(moving=False)  # as constructed: the last deformation layer is zero
    out = model.sample([3, 4], [5, 6], num_frames=8)
    grid = identity_grid(32, 32)
    assert torch.equal(out.fields, grid.expand(2, 8, 32, 32, 2))
    for t in range(8):
        torch.testing.assert_close(out.frames[:, t], out.canonical, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "num_frames", [1, 16, 70, 256]
)  # 70 > frame_chunk (64); 256 = max_frames >> training's 32
def test_shapes_and_ranges(tiny, num_frames):
    out = tiny.sample([1, 2], [3, 4], num_frames)
    assert out.canonical.shape == (2, 3, 32, 32) and out.canonical.dtype == torch.float32
    assert out.fields.shape == (2, num_frames, 32, 32, 2) and out.fields.dtype == torch.float32
    assert out.frames.shape == (2, num_frames, 3, 32, 32)
    assert out.canonical.abs().max() <= 1 and out.frames.abs().max() <= 1
    assert torch.isfinite(out.fields).all()
    assert torch.equal(out.frames, warp(out.canonical, out.fields).clamp(-1, 1))
    assert out.canonical.std() > 0.05  # an image, not a constant


def test_max_frames_is_at_least_128_and_enforced(tiny):
    assert tiny.max_frames >= 128
    with pytest.raises(ValueError, match=r"num_frames must be an integer in \[1, 256\]"):
        tiny.sample([1], [1], tiny.max_frames + 1)
    with pytest.raises(ValueError, match="num_frames"):
        tiny.sample([1], [1], 0)


@pytest.mark.parametrize(
    ("seeds", "motion_seeds", "message"),
    [
        ([1, 2], [3], "one motion seed per seed"),
        ([], [], "one motion seed per seed"),
        ([-1], [0], "seeds must be"),
        ([2**32], [0], "seeds must be"),
        ([1], [1.5], "seeds must be"),
    ],
)
def test_bad_seeds_are_refused(tiny, seeds, motion_seeds, message):
    with pytest.raises(ValueError, match=message):
        tiny.sample(seeds, motion_seeds, 4)


def test_same_seeds_give_bit_identical_outputs_whatever_ran_before(tiny):
    a = tiny.sample([7], [8], 12)
    torch.manual_seed(1234)
    torch.randn(1000)  # disturb the global RNG: sampling must not read it
    tiny.sample([9, 10], [11, 12], 5)
    b = tiny.sample([7], [8], 12)
    assert (
        torch.equal(a.canonical, b.canonical)
        and torch.equal(a.fields, b.fields)
        and torch.equal(a.frames, b.frames)
    )


def test_batched_sampling_equals_one_by_one(tiny):
    batch = tiny.sample([1, 2, 3], [4, 5, 6], 10)
    for i, (s, m) in enumerate(zip([1, 2, 3], [4, 5, 6], strict=True)):
        one = tiny.sample([s], [m], 10)
        assert torch.equal(batch.canonical[i], one.canonical[0])
        assert torch.equal(batch.fields[i], one.fields[0])


def test_motion_seed_changes_the_fields_only(tiny):
    a = tiny.sample([1], [2], 8)
    b = tiny.sample([1], [3], 8)
    assert torch.equal(a.canonical, b.canonical)
    assert (a.fields - b.fields).abs().max() > 1e-3
    c = tiny.sample([5], [2], 8)
    assert (a.canonical - c.canonical).abs().max() > 1e-2  # and the seed changes the content


def test_sample_motion_returns_exactly_the_fields_of_sample(tiny):
    out = tiny.sample([1, 2], [3, 4], 9)
    assert torch.equal(tiny.sample_motion([1, 2], [3, 4], 9), out.fields)


def test_fields_of_the_first_frames_do_not_depend_on_the_video_length(tiny):
    short = tiny.sample_motion([1], [2], 16)
    long = tiny.sample_motion([1], [2], 100)
    torch.testing.assert_close(long[:, :16], short, rtol=0, atol=1e-6)


def test_motion_codes_are_continuous_in_fractional_time(tiny):
    K = tiny.config.motion.code_distance
    motion_z = torch.randn(1, *tiny.motion.raw_code_shape(), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = 1e-3
        t = torch.tensor([[K - eps, K, K + eps, 2.5, 2.5 + eps]])
        codes = tiny.motion(motion_z, t)[0]  # (5, 2F)
    # across a knot (t = K) the left and right limits agree; inside a segment too
    assert (codes[0] - codes[1]).abs().max() < 0.01 and (codes[2] - codes[1]).abs().max() < 0.01
    assert (codes[3] - codes[4]).abs().max() < 0.01
    # and time does move the code: a tenth of a segment further is visibly different
    with torch.no_grad():
        later = tiny.motion(motion_z, torch.tensor([[2.5 + K / 10]]))[0, 0]
    assert (later - codes[3]).abs().max() > 10 * (codes[3] - codes[4]).abs().max()


def test_ablation_without_canonical_conditioning_samples():
    config = preset("tiny")
    config.deformation.canonical_cond = False
    torch.manual_seed(0)
    model = GenDeF(config).eval()
    assert model.deformation.cond_proj is None
    out = model.sample([1], [2], 4)
    assert out.fields.shape == (1, 4, 32, 32, 2)


def test_stacked_sampling_is_within_the_documented_tolerance_and_a_video_alone_is_unchanged():
    """The worker's stacked batches: 8 videos of the shipped model in one pass (frames in several chunks) vs each
    alone; a single video is the same stacked or not."""
    model = load_checkpoint(DEFAULT_MODELS_DIR / "small", device="cpu")
    seeds, motion_seeds = list(range(8)), list(range(100, 108))
    stacked = model.sample(seeds, motion_seeds, 20, stack=True)
    alone = model.sample(seeds, motion_seeds, 20)
    assert (stacked.fields - alone.fields).abs().max() <= STACK_TOLERANCE["fields"]
    assert (stacked.canonical - alone.canonical).abs().max() <= STACK_TOLERANCE["canonical"]
    assert torch.equal(model.sample_motion(seeds, motion_seeds, 20, stack=True), stacked.fields)
    one = model.sample([3], [103], 20, stack=True)
    assert torch.equal(one.fields[0], alone.fields[3]) and torch.equal(one.canonical[0], alone.canonical[3])


def test_motion_at_integer_times_is_the_sampled_motion_and_between_frames_lies_between(tiny):
    fields = tiny.sample_motion([1], [2], 6)[0]  # (6, H, W, 2)
    at = tiny.motion_at(1, 2, [0.0, 2.0, 2.5, 3.0, 5.0])
    torch.testing.assert_close(at[[0, 1, 3, 4]], fields[[0, 2, 3, 5]], rtol=0, atol=1e-5)
    # t = 2.5 is a new field, close to both neighbours (the motion codes are continuous)
    mid = at[2]
    assert (mid - fields[2]).abs().max() > 1e-6 and (mid - fields[3]).abs().max() > 1e-6
    step = (fields[3] - fields[2]).abs().max()
    assert (mid - (fields[2] + fields[3]) / 2).abs().max() < step
    with pytest.raises(ValueError, match="times must be in"):
        tiny.motion_at(1, 2, [float(tiny.max_frames)])


def test_asked_labels_replace_the_seeds_and_change_nothing_else():
    """The shipped conditional model: labels asked per video instead of the seed's; everything else (z, noise,
    motion) still comes from the seeds, and a video whose labels are None is the one without labels, bit for bit."""
    model = load_checkpoint(DEFAULT_MODELS_DIR / "mnist", device="cpu")
    plain = model.sample([5], [1], 4)
    drawn = model.labels([5])[0].nonzero().flatten().tolist()
    other = [c for c in range(10) if c not in drawn][:2]
    assert len(drawn) == 2 and model.labels([5], [other])[0].nonzero().flatten().tolist() == other
    for same in (model.sample([5], [1], 4, labels=[None]), model.sample([5], [1], 4, labels=[drawn[::-1]])):
        assert torch.equal(same.canonical, plain.canonical) and torch.equal(same.fields, plain.fields)
    asked = model.sample([5], [1], 4, labels=[other])
    assert (asked.canonical - plain.canonical).abs().mean() > 0.05  # other digits
    z, noise, _ = model._content(5)
    z_asked, noise_asked, _ = model._content(5, other)
    assert torch.equal(z, z_asked) and all(map(torch.equal, noise, noise_asked))
    assert torch.equal(model.sample_motion([5], [1], 4, labels=[other]), asked.fields)
    torch.testing.assert_close(model.motion_at(5, 1, [0, 1, 2, 3], other), asked.fields[0], rtol=0, atol=1e-5)
    # mixed labels in one stacked pass: each video as alone, within the stacking tolerance
    both = model.sample([5, 5], [1, 1], 4, stack=True, labels=[None, other])
    for i, alone in enumerate((plain, asked)):
        assert (both.canonical[i] - alone.canonical[0]).abs().max() <= STACK_TOLERANCE["canonical"]
        assert (both.fields[i] - alone.fields[0]).abs().max() <= STACK_TOLERANCE["fields"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([[3]], "2 distinct class indices in \\[0, 9\\]"),
        ([[3, 3]], "2 distinct"),
        ([[3, 10]], "2 distinct"),
        ([[3, True]], "2 distinct"),
        ([[3, 7], None], "one entry of labels per video"),
    ],
)
def test_labels_that_do_not_fit_the_model_are_refused(labels, message):
    model = load_checkpoint(DEFAULT_MODELS_DIR / "mnist", device="cpu")
    with pytest.raises(ValueError, match=message):
        model.sample([1], [1], 1, labels=labels)


def test_an_unconditional_model_takes_no_labels(tiny):
    with pytest.raises(ValueError, match="unconditional"):
        tiny.sample([1], [1], 1, labels=[[0]])
    assert torch.equal(tiny.sample([1], [1], 2, labels=[None]).fields, tiny.sample([1], [1], 2).fields)
