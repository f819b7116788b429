"""worker/media.py: tensors to the artifact formats users download (PNG, npz) and back; mp4: tests/core/test_video.py."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.artifacts import FIELDS_CONVENTION, ArtifactError, interpolation_of
from core.images import ImageError
from worker import media


def test_uint8_conversion_maps_the_range_ends_and_midpoint():
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0]).view(5, 1, 1, 1).expand(5, 3, 1, 1)  # (5, 3, 1, 1)
    assert media.to_uint8(images)[:, 0, 0, 0].tolist() == [0, 128, 255, 255, 0]
    assert media.from_uint8(np.array([[[0, 255, 51]]], dtype=np.uint8)).flatten().tolist() == pytest.approx(
        [-1.0, 1.0, -0.6]
    )


def test_video_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        media.encode_video(torch.zeros(4, 32, 32), fps=8)
    with pytest.raises(ValueError, match="fps"):
        media.encode_video(torch.zeros(2, 3, 8, 8), fps=0)


def test_png_is_lossless_rgb():
    pixels = np.random.default_rng(0).integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    canonical = media.from_uint8(pixels)  # (3, 24, 40)
    data = media.encode_png(canonical)

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGB" and image.size == (40, 24)
        assert np.array_equal(np.asarray(image), pixels)
    decoded, resized = media.decode_image(data)
    assert not resized
    assert torch.equal(decoded, canonical)


def test_decode_image_resizes_to_the_canonical_size_bilinear():
    # a 2x1 image: left pixel black, right pixel white -> 4x4: a horizontal ramp, constant down each column
    image = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=100)
    decoded, resized = media.decode_image(out.getvalue(), size=(4, 4))
    assert resized
    assert decoded.shape == (3, 4, 4)
    row = media.to_uint8(decoded)[0, :, 0].astype(int)
    assert row[0] < 20 and row[3] > 235 and row[0] < row[1] < row[2] < row[3]
    assert np.array_equal(media.to_uint8(decoded)[0], media.to_uint8(decoded)[3])


def test_decode_image_converts_rgba_and_grayscale_to_rgb():
    for mode, value in (("RGBA", (10, 20, 30, 0)), ("L", 77)):
        out = io.BytesIO()
        Image.new(mode, (5, 3), value).save(out, format="PNG")
        decoded, resized = media.decode_image(out.getvalue(), size=(3, 5))
        assert not resized
        expected = [10, 20, 30] if mode == "RGBA" else [77, 77, 77]
        assert media.to_uint8(decoded)[1, 2].tolist() == expected


def test_decode_image_refuses_garbage_and_truncated_files():
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(out, format="PNG")
    with pytest.raises(ImageError):
        media.decode_image(b"GIF89a not really")
    with pytest.raises(ImageError):
        media.decode_image(out.getvalue()[: len(out.getvalue()) // 2])


def test_fields_npz_layout_matches_the_api():
    fields = torch.randn(3, 5, 7, 2, generator=torch.Generator().manual_seed(0))  # (T, H, W, 2)
    meta = {"convention": FIELDS_CONVENTION, "seed": 1, "motion_seed": 2}
    data = media.encode_fields(fields, meta)

    # what a user writes: np.load(f)["fields"], no pickle
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["fields", "meta"]
        assert npz["fields"].dtype == np.float32 and npz["fields"].shape == (3, 5, 7, 2)
        assert np.array_equal(npz["fields"], fields.numpy())
        assert json.loads(str(npz["meta"])) == meta
    decoded, decoded_meta = media.decode_fields(data)
    assert torch.equal(decoded, fields) and decoded_meta == meta


def test_decode_fields_refuses_other_arrays():
    out = io.BytesIO()
    np.savez(out, fields=np.zeros((3, 4, 4), np.float32), meta=np.array("{}"))
    with pytest.raises(ArtifactError, match=r"\(T, H, W, 2\)"):
        media.decode_fields(out.getvalue())
    with pytest.raises(ArtifactError):
        media.decode_fields(b"PK not a zip")


def test_the_meta_says_how_to_read_the_fields_and_older_files_read_bilinear():
    fields = torch.zeros(2, 4, 4, 2)
    written_before_bicubic = {}
    for meta, mode in (({"interpolation": "bicubic"}, "bicubic"), (written_before_bicubic, "bilinear")):
        assert interpolation_of(media.decode_fields(media.encode_fields(fields, meta))[1]) == mode
    with pytest.raises(ArtifactError, match="unknown interpolation 'nearest'"):
        media.decode_fields(media.encode_fields(fields, {"interpolation": "nearest"}))


def test_the_same_frames_always_encode_to_the_same_mp4(tiny_checkpoint):
    """x264's macroblock-tree rate control made about one encode in 50 of these frames (one in 13 on a loaded CPU)
    a different file; the same job must give the same video."""
    from model.checkpoint import load_checkpoint

    frames = load_checkpoint(tiny_checkpoint).sample([2], [102], 8).frames[0]  # (8, 3, 32, 32): a real render
    first = media.encode_video(frames, 8)
    differing = sum(media.encode_video(frames, 8) != first for _ in range(300))
    assert differing == 0, f"{differing} of 300 encodes of the same frames differ"
