"""The models, read without torch (core/models.py), from a folder and from a bucket of moto's S3 server over HTTP:
versions, what each config says, the default, the bucket's list and a worker's cache, per-model queues."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from core.models import ModelChanged, ModelRegistry, etag_version
from core.queues import queue_names, queue_of
from core.settings import Settings
from core.storage import s3_client

WEIGHTS = Path(__file__).resolve().parents[2] / "model" / "weights"
S3 = dict(s3_access_key_id="test", s3_secret_access_key="test", s3_region="us-east-1")


def config(resolution: int = 32, **extra) -> dict:
    return {"resolution": resolution, "max_frames": 256} | extra


def checkpoint(
    models: Path, name: str, weights: bytes = b"w", resolution: int = 32, card: str | None = None, **extra
) -> Path:
    folder = models / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text(json.dumps(config(resolution, **extra)))
    if card is not None:
        (folder / "MODEL_CARD.md").write_text(card)
    return folder


def registry(models: Path, **settings) -> ModelRegistry:
    return ModelRegistry(Settings(models_dir=models, **settings))


def test_models_are_the_checkpoint_folders_with_their_config_and_card(tmp_path):
    checkpoint(tmp_path, "b", resolution=64, card="# GenDeF checkpoint\n\n- steps: 3\n", data="Moving MNIST")
    checkpoint(tmp_path, "a")
    (tmp_path / "notes").mkdir()  # no weights: not a model
    (tmp_path / "notes" / "config.json").write_text("{}")
    checkpoint(tmp_path, "broken").joinpath("config.json").write_text("{not json")
    checkpoint(tmp_path, ".hidden")
    listed = registry(tmp_path, max_frames=100).models()
    assert [m.name for m in listed] == ["a", "b"]
    a, b = listed
    assert (a.resolution, b.resolution) == (32, 64) and a.max_frames == 100  # capped by GENDEF_MAX_FRAMES
    assert (a.trained_on, b.trained_on) == (None, "Moving MNIST")
    reg = registry(tmp_path, max_frames=100)
    assert reg.get("b") == b and reg.get("nope") is None


def test_version_is_a_digest_of_the_weights_computed_again_only_when_the_file_changes(tmp_path):
    folder = checkpoint(tmp_path, "m", weights=b"first")
    reg = registry(tmp_path)
    assert reg.get("m").version == hashlib.sha256(b"first").hexdigest()[:12]
    checkpoint(tmp_path, "same", weights=b"first")
    assert reg.get("same").version == reg.get("m").version  # the weights decide, not the name

    weights = folder / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"other")  # same size and, put back below, the same mtime: the cached digest stays
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert reg.get("m").version == hashlib.sha256(b"first").hexdigest()[:12]
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert reg.get("m").version == hashlib.sha256(b"other").hexdigest()[:12]


def test_what_a_model_was_trained_on_and_its_classes_come_from_its_config_not_its_card():
    shipped = {m.name: m for m in registry(WEIGHTS).models()}
    mnist, small = shipped["mnist"], shipped["small"]
    assert mnist.trained_on.startswith("Moving MNIST generated on the fly")
    assert mnist.classes == tuple("0123456789") and mnist.labels_per_video == 2
    assert small.trained_on.startswith("The three real mp4 clips") and "\n" not in small.trained_on
    assert small.classes == () and small.labels_per_video == 0


def test_a_checkpoint_written_before_its_config_said_what_it_was_trained_on_is_still_served(tmp_path):
    checkpoint(tmp_path, "old", card="# GenDeF checkpoint\n\n## Data\nclips of x\n")
    [old] = registry(tmp_path).models()
    assert old.name == "old" and old.trained_on is None  # the card's prose is not parsed


@pytest.mark.parametrize(
    ("names", "setting", "default"),
    [
        (["only"], "", "only"),
        (["mnist", "small"], "", "mnist"),
        (["b", "a"], "", "a"),
        (["mnist", "small"], "small", "small"),
        (["small"], "gone", None),
        ([], "", None),
    ],
)
def test_the_default_model(tmp_path, names, setting, default):
    for name in names:
        checkpoint(tmp_path, name)
    reg = registry(tmp_path, default_model=setting)
    assert reg.default_name(reg.models()) == default


def test_a_missing_models_folder_serves_nothing(tmp_path):
    assert registry(tmp_path / "absent").models() == []


def test_models_with_a_queue_of_their_own():
    settings = Settings(model_queues="mnist, big", generate_queue="g", edit_queue="e")
    assert queue_of(settings, "generate", "mnist") == queue_of(settings, "resample", "mnist") == "g-mnist"
    assert queue_of(settings, "generate", "small") == queue_of(settings, "decompose") == "g"
    assert queue_of(settings, "edit", "mnist") == "e"
    assert queue_names(settings) == ["e", "g", "g-big", "g-mnist"]


# --- a bucket of models (GENDEF_MODELS_DIR=s3://bucket/prefix)


def bucket_registry(endpoint: str, bucket: str, tmp_path: Path, cache_s: float = 0.0) -> ModelRegistry:
    settings = Settings(
        models_dir=f"s3://{bucket}/models",
        models_cache_dir=tmp_path / "cache",
        s3_endpoint_url=endpoint,
        **S3,
    )
    return ModelRegistry(settings, cache_s=cache_s)


def publish(endpoint: str, bucket: str, name: str, files: dict[str, bytes]) -> None:
    client = s3_client(Settings(s3_endpoint_url=endpoint, **S3))
    for file, data in files.items():
        client.put_object(Bucket=bucket, Key=f"models/{name}/{file}", Body=data)


def files(weights: bytes = b"w", **extra) -> dict[str, bytes]:
    return {
        "config.json": json.dumps(config(**extra)).encode(),
        "MODEL_CARD.md": b"# card\n",
        "model.safetensors": weights,
    }


def test_a_bucket_lists_each_whole_checkpoint_and_no_upload_in_progress(s3_endpoint, s3_bucket, tmp_path):
    publish(s3_endpoint, s3_bucket, "whole", files(b"weights", data="clips", canonical={"classes": 3}))
    partial = files()
    del partial["MODEL_CARD.md"]
    publish(s3_endpoint, s3_bucket, "partial", partial)  # weights and config, the card not yet
    publish(s3_endpoint, s3_bucket, "weightless", {"config.json": files()["config.json"]})
    publish(s3_endpoint, s3_bucket, "../outside", files())  # not a name a model may have
    reg = bucket_registry(s3_endpoint, s3_bucket, tmp_path)
    [whole] = reg.models()
    etag = s3_client(Settings(s3_endpoint_url=s3_endpoint, **S3)).head_object(
        Bucket=s3_bucket, Key="models/whole/model.safetensors"
    )["ETag"]
    assert whole.version == etag_version(etag) and len(whole.version) == 12
    assert whole.location == f"s3://{s3_bucket}/models/whole/"
    assert (whole.trained_on, whole.classes, whole.labels_per_video) == ("clips", ("0", "1", "2"), 1)
    publish(s3_endpoint, s3_bucket, "partial", {"MODEL_CARD.md": b"# card\n"})  # the upload ends
    assert [m.name for m in reg.models()] == ["partial", "whole"]


def test_the_api_reuses_the_list_of_a_bucket_for_a_while(s3_endpoint, s3_bucket, tmp_path):
    publish(s3_endpoint, s3_bucket, "a", files())
    api, worker = (
        bucket_registry(s3_endpoint, s3_bucket, tmp_path, cache_s=60),
        bucket_registry(s3_endpoint, s3_bucket, tmp_path),
    )
    assert [m.name for m in api.models()] == [m.name for m in worker.models()] == ["a"]
    publish(s3_endpoint, s3_bucket, "b", files())
    assert [m.name for m in api.models()] == ["a"]  # within its GENDEF_MODELS_LIST_CACHE_S
    assert [m.name for m in worker.models()] == ["a", "b"]  # a worker lists the bucket at each job
    api.cache_s = 0
    assert [m.name for m in api.models()] == ["a", "b"]


def test_a_worker_keeps_a_downloaded_model_only_once_it_has_loaded(s3_endpoint, s3_bucket, tmp_path):
    publish(s3_endpoint, s3_bucket, "m", files(b"corrupt"))
    reg = bucket_registry(s3_endpoint, s3_bucket, tmp_path)
    [corrupt] = reg.models()
    with pytest.raises(ValueError, match="cannot load"), reg.checkpoint(corrupt) as folder:
        assert (folder / "model.safetensors").read_bytes() == b"corrupt"
        raise ValueError("cannot load")  # what the worker's loader raises for bad weights
    assert list((tmp_path / "cache").iterdir()) == []  # not kept: the next job downloads it again

    publish(s3_endpoint, s3_bucket, "m", files(b"good"))  # published again
    [good] = reg.models()
    assert good.version != corrupt.version
    with reg.checkpoint(good) as folder:
        assert (folder / "model.safetensors").read_bytes() == b"good"
    cached = tmp_path / "cache" / "m" / good.version
    assert (cached / "model.safetensors").read_bytes() == b"good" and (cached / "config.json").is_file()
    with reg.checkpoint(good) as folder:  # from the cache: the bucket is not read again
        assert folder == cached

    publish(s3_endpoint, s3_bucket, "m", files(b"retrained"))
    with pytest.raises(ModelChanged, match="replaced"), reg.checkpoint(corrupt):
        pass  # listed before the weights changed: they are not what the job was made for
    [retrained] = reg.models()
    with reg.checkpoint(retrained):
        pass
    assert [p.name for p in (tmp_path / "cache" / "m").iterdir()] == [retrained.version]  # older versions go
