"""Offline evaluation: the weight-free metrics on hand-made cases, the evaluate CLI, and the shipped weights."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import preset
from model.evaluation import metrics
from model.evaluation.evaluate import main
from model.gendef import GenDeF
from model.warp import identity_grid, warp

REPO = Path(__file__).resolve().parents[3]


def smooth_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """n random smooth images (n, 3, size, size) in [-1, 1]: noise blurred by a 5x5 box."""
    noise = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False)


def translating_fields(batch: int, frames: int, size: int, position) -> torch.Tensor:
    """Fields (B, T, size, size, 2) of a pure translation: frame t reads the canonical position(t) pixels right."""
    one_px = torch.tensor([2 / size, 0.0])
    steps = [identity_grid(size, size) + position(t) * one_px for t in range(frames)]
    return torch.stack(steps)[None].expand(batch, -1, -1, -1, -1).contiguous()


# ---- distribution distances --------------------------------------------------------------------------------------


def test_frechet_distance_is_zero_for_identical_sets_and_the_squared_shift_for_shifted_ones():
    a = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert metrics.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    # same covariance, mean moved by 0.5 in each of 8 dimensions: 8 * 0.5^2
    assert metrics.frechet_distance(a, a + 0.5) == pytest.approx(2.0, rel=1e-6)


def test_random_features_are_fixed_by_the_seed_and_see_a_brightness_shift():
    images = smooth_images(64, seed=0)
    features = metrics.RandomFeatures(seed=3)
    assert torch.equal(features(images), metrics.RandomFeatures(seed=3)(images))
    same = metrics.frechet_distance(features(images), features(images))
    fresh = metrics.frechet_distance(
        features(smooth_images(64, seed=1)), features(images)
    )  # same distribution
    brighter = metrics.frechet_distance(features((images + 0.5).clamp(-1, 1)), features(images))
    assert same == pytest.approx(0, abs=1e-6)
    assert brighter > 5 * fresh > 0


def test_sliced_wasserstein_is_zero_for_identical_sets_and_larger_for_a_degraded_set():
    images = smooth_images(64, seed=0)
    noisy = images + 0.5 * torch.randn(images.shape, generator=torch.Generator().manual_seed(9))
    assert metrics.sliced_wasserstein(images, images, per_image=32) == [0.0, 0.0]  # 32 -> 16: two levels
    fresh = metrics.sliced_wasserstein(smooth_images(64, seed=1), images, per_image=32)  # same distribution
    degraded = metrics.sliced_wasserstein(noisy, images, per_image=32)
    assert degraded[0] > 1.5 * fresh[0] > 0  # the finest band-pass level sees the added noise
    # descriptors are normalised per set (as Progressive GAN's): a global brightness shift is invisible to SWD
    assert metrics.sliced_wasserstein(images + 0.5, images, per_image=32) == pytest.approx([0, 0], abs=1e-3)


def test_laplacian_pyramid_bands_add_up_to_the_image_detail():
    images = smooth_images(2, seed=0)
    levels = metrics.laplacian_pyramid(images, min_size=8)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    flat = torch.zeros(2, 3, 32, 32)
    assert all(lv.abs().max() < 1e-6 for lv in metrics.laplacian_pyramid(flat, min_size=8))


# ---- motion and field statistics ---------------------------------------------------------------------------------


def test_a_static_video_has_no_motion_no_jitter_and_no_warping_error():
    fields = translating_fields(2, 5, 16, lambda t: 0)
    frames = warp(smooth_images(2, seed=0, size=16), fields)
    assert metrics.motion_magnitude(fields) == 0 and metrics.jitter(fields) == 0
    assert metrics.frame_difference(frames) == 0
    assert metrics.warping_error(frames, fields) == (0.0, 1.0)


def test_motion_and_jitter_are_measured_in_pixels():
    steady = translating_fields(1, 6, 16, lambda t: t)  # one pixel per frame
    accelerating = translating_fields(1, 6, 16, lambda t: t * t)  # second difference: 2 pixels
    assert metrics.motion_magnitude(steady) == pytest.approx(1.0)
    assert metrics.jitter(steady) == pytest.approx(0.0, abs=1e-5)
    assert metrics.jitter(accelerating) == pytest.approx(2.0)


def test_off_canvas_fraction_counts_points_outside_the_canonical_image():
    fields = identity_grid(8, 8)[None].clone()  # x centres at -0.875, -0.625, ..., 0.875
    assert metrics.off_canvas_fraction(fields) == 0
    fields[..., 0] += 0.5  # two of the eight columns now read past the right edge
    assert metrics.off_canvas_fraction(fields) == pytest.approx(2 / 8)


def test_fold_fraction_counts_a_known_fold():
    identity = identity_grid(8, 8)
    folded = identity.clone()
    folded[..., 0] = identity[..., 0].abs()  # fold at the middle: the left half mirrors the right half
    # forward differences of |x| along the 7 column pairs: 3 negative, 1 zero (the crease), 3 positive
    assert metrics.fold_fraction(folded[None]) == pytest.approx(4 / 7)
    assert metrics.fold_fraction(identity[None]) == 0
    mirrored = identity.clone()
    mirrored[..., 0] = -identity[..., 0]
    assert metrics.fold_fraction(mirrored[None]) == 1
    assert torch.allclose(metrics.jacobian_determinant(identity), torch.ones(7, 7))


def test_warping_error_follows_the_motion_of_the_fields():
    fields = translating_fields(2, 4, 16, lambda t: t)
    frames = warp(smooth_images(2, seed=0, size=16), fields)
    error, valid = metrics.warping_error(frames, fields)
    assert metrics.frame_difference(frames) > 0.01  # the frames do change...
    assert error < 1e-5  # ...but frame t+1, warped back one pixel, is frame t
    assert 0.8 < valid < 1  # pixels whose content leaves the frame have no match
    # frames that ignore their (identity) fields: the warping error is the plain frame difference
    noise = torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    still = translating_fields(2, 4, 16, lambda t: 0)
    assert metrics.warping_error(noise, still)[0] == pytest.approx(metrics.frame_difference(noise), rel=1e-5)


def test_mean_pairwise_distance_is_zero_for_copies():
    image = smooth_images(1, seed=0)
    assert metrics.mean_pairwise_distance(image.expand(4, -1, -1, -1)) == 0
    black_white = torch.stack([-torch.ones(3, 4, 4), torch.ones(3, 4, 4)])
    assert metrics.mean_pairwise_distance(black_white) == pytest.approx(1.0)  # [0, 1] scale


# ---- the CLI -----------------------------------------------------------------------------------------------------


class FakeInception(torch.nn.Module):
    """Stands in for inception-2015-12-05.pt: the same call, uint8 images -> per-channel means as features."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert images.dtype == torch.uint8 and return_features
        return images.float().mean(dim=(2, 3))


class FakeI3D(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: the same call, clips (N, 3, T, H, W) in [0, 255] -> channel means."""

    def forward(
        self, videos: torch.Tensor, rescale: bool, resize: bool, return_features: bool
    ) -> torch.Tensor:
        assert videos.shape[1] == 3 and videos.max() <= 255
        return videos.mean(dim=(2, 3, 4)) / 255 * 2 - 1


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # the detector files are TorchScript
def test_cli_writes_metrics_and_sample_strips(tiny_checkpoint, tmp_path):
    inception, i3d = tmp_path / "inception.pt", tmp_path / "i3d.pt"
    torch.jit.script(FakeInception()).save(str(inception))
    torch.jit.script(FakeI3D()).save(str(i3d))
    out = tmp_path / "eval"
    args = [str(tiny_checkpoint), "--out", str(out), "--videos", "4", "--frames", "4"]
    report = main(args + ["--inception", str(inception), "--i3d", str(i3d)])
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(report))
    distances, video = report["distance_to_real"], report["video"]
    assert set(distances) == {"real (floor)", "model", "untrained"}
    assert all({"frechet_random_features", "swd_x1e3", "fid", "fvd"} <= set(d) for d in distances.values())
    assert (
        "motion_px" not in video["real"] and video["real"]["frame_difference"] > 0
    )  # no fields in real video
    assert video["untrained"]["motion_px"] == 0  # initial weights: the identity warp, a still video
    moves = report["motion"]  # DIS flow over 3 frames (4 frames a video), fields for the samples too
    assert moves["flow_gap"]["frames"] == 3 and 0 < moves["real"]["non_affine_share"] < 1
    assert moves["untrained"]["fields"]["flow_px"] == 0 and moves["model"]["fields"]["flow_px"] > 0
    assert video["model"]["motion_px"] > 0  # this test checkpoint's fields move
    # one row per video (4 of them, 32 px); columns: the canonical then every other frame (model), frames (real)
    assert Image.open(out / "model.png").size == (3 * 32, 4 * 32)
    assert Image.open(out / "real.png").size == (2 * 32, 4 * 32)
    assert Image.open(out / "model.gif").n_frames == 4


# ---- the shipped weights -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_samples():
    model = load_checkpoint(REPO / "model" / "weights" / "small")
    return model.sample(list(range(6)), list(range(6)), 8)


def test_shipped_model_samples_move(shipped_samples):
    # initial weights give exactly 0 (the identity warp, every frame the canonical image); the pixels of real
    # clips of the training videos change by 0.015 per frame on average
    assert metrics.motion_magnitude(shipped_samples.fields) > 0.1  # pixels per frame
    assert metrics.frame_difference(shipped_samples.frames) > 0.002


def test_shipped_model_samples_are_not_all_alike(shipped_samples):
    # mean |difference| between canonical images of different seeds, [0, 1] scale (0 = one image for every seed)
    assert metrics.mean_pairwise_distance(shipped_samples.canonical) > 0.05


# ---- Moving MNIST: the digit classifier's metrics -----------------------------------------------------------------


@pytest.fixture(scope="module")
def heldout_clips() -> torch.Tensor:
    from model.data import MovingMNIST

    times = torch.arange(8.0).expand(64, -1)
    return MovingMNIST(64, "heldout").draw(times, torch.Generator().manual_seed(4))[0]  # (64, 8, 3, 64, 64)


def test_the_shipped_digit_classifier_reads_held_out_digits():
    from model.evaluation.digits import heldout_accuracy, load_digit_classifier

    assert heldout_accuracy(load_digit_classifier()) > 0.8  # both digits of a frame right (85 % measured)


def test_digit_metrics_are_zero_for_identical_sets_and_worse_for_blurred_frames(heldout_clips):
    from model.evaluation.evaluate import digit_stats

    half = len(heldout_clips) // 2
    stats = digit_stats({"real (floor)": heldout_clips[:half]}, heldout_clips[:half])
    assert stats["real (floor)"]["frechet_digit_classifier"] == pytest.approx(0, abs=1e-6)
    stats = digit_stats({"real (floor)": heldout_clips[:half]}, heldout_clips[half:])
    floor, blurred = stats["real (floor)"], stats["real blurred"]
    assert blurred["frechet_digit_classifier"] > 2 * floor["frechet_digit_classifier"] > 0
    assert floor["content_kept"] > 0.6  # real clips keep their digits (0.72 measured: overlaps, misreadings)


def test_digit_coverage_is_near_one_for_real_clips_and_low_when_one_pair_repeats(heldout_clips):
    from model.evaluation.digits import digit_coverage, load_digit_classifier

    classifier = load_digit_classifier()
    first = heldout_clips[:, 0]  # (64, 3, 64, 64): every pair of distinct labels about equally likely
    assert digit_coverage(classifier, first) > 0.9
    same = first[:1].expand(64, -1, -1, -1)  # one frame 64 times: two digits at most
    assert digit_coverage(classifier, same) <= math.log(2) / math.log(10) + 1e-6
    mostly = torch.cat([same[:48], first[:16]])  # a generator that makes that pair three times in four
    assert (
        digit_coverage(classifier, same)
        < digit_coverage(classifier, mostly)
        < digit_coverage(classifier, first)
    )


def test_shift_images_moves_by_whole_pixels_and_fills_what_moves_in():
    from model.evaluation.digits import shift_images

    image = torch.full((1, 1, 4, 5), -1.0)
    image[0, 0, 1, 2] = 1.0  # one bright pixel at row 1, column 2
    image[0, 0, 3, 4] = 0.5  # one at the bottom-right corner: it moves out
    moved = shift_images(image, torch.tensor([[2, -1]]))  # 2 right, 1 up
    expected = torch.full((1, 1, 4, 5), -1.0)
    expected[0, 0, 0, 4] = 1.0
    assert torch.equal(moved, expected)
    assert torch.equal(shift_images(image, torch.zeros(1, 2, dtype=torch.long)), image)


def test_real_frames_keep_their_digits_under_translation_and_glyphs_between_digits_do_not(heldout_clips):
    from model.evaluation.digits import kept_under_translation, load_digit_classifier

    classifier = load_digit_classifier()
    first = heldout_clips[:, 0]  # (64, 3, 64, 64)
    real = kept_under_translation(classifier, first)
    assert real > 0.75  # about 0.9 measured: the classifier reads a digit wherever it is
    assert kept_under_translation(classifier, first, max_shift=0) == 1.0
    # glyphs between digits: two real frames laid over each other (four digits, read as some two of them)
    overlaid = torch.maximum(first, first.roll(1, dims=0))
    assert kept_under_translation(classifier, overlaid) < real - 0.1


def test_cli_on_moving_mnist_reports_the_digit_metrics(tiny_checkpoint, tmp_path):
    report = main(
        [str(tiny_checkpoint), "--data", "mnist", "--out", str(tmp_path), "--videos", "4", "--frames", "4"]
        + ["--canonical-images", "64"]
    )
    canonical = report["canonical_digits"]  # the test weights' canonical images are not digits
    assert canonical["images"] == 64 and sum(canonical["digit_counts"]) == 2 * 64
    assert canonical["frechet_digit_classifier"] > 2 * canonical["floor"]
    assert Image.open(tmp_path / "canonical.png").size == (8 * 32, 8 * 32)  # 64 images, 8 a row
    assert (
        0 <= canonical["kept_under_translation"] <= 1 and 0 <= canonical["real_kept_under_translation"] <= 1
    )
    assert set(report["digits"]) == {"real (floor)", "model", "untrained", "real blurred"}
    assert all(
        0 <= d["content_kept"] <= 1 and 0 <= d["digit_coverage"] <= 1 for d in report["digits"].values()
    )
    assert report["video"]["model"]["folds"] >= 0 and "static_share" in report["video"]["model"]
    moves = report[
        "motion"
    ]  # each digit followed: real clips' move on their own, the untrained model's not at all
    assert (
        moves["real"]["relative_displacement_px"]["mean"] > 0
        and moves["real"]["speed_px_per_frame"]["mean"] > 0
    )
    assert moves["untrained"]["speed_px_per_frame"]["mean"] == 0
    assert "labels_read" not in canonical  # an unconditional model is asked for no digits


def test_a_conditional_model_is_credited_only_for_the_digits_it_was_asked_for(tmp_path):
    cfg = preset("tiny")
    cfg.canonical.classes, cfg.canonical.labels_per_image = 10, 2
    torch.manual_seed(0)
    checkpoint = save_checkpoint(GenDeF(cfg), tmp_path / "conditional", card={"status": "test weights"})
    args = [
        str(checkpoint),
        "--data",
        "mnist",
        "--out",
        str(tmp_path / "eval"),
        "--videos",
        "2",
        "--frames",
        "3",
    ]
    report = main(args + ["--canonical-images", "64"])
    # untrained images are not digits: the two read are the two asked for about as often as chance (1 in 45)
    assert report["canonical_digits"]["labels_read"] < 0.15
