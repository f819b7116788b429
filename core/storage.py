"""Inputs and artifacts: a local folder (embedded mode) or an S3-compatible bucket, behind one small interface.

Keys derive only from job ids (``artifact_key``, ``input_key``), never from user text, and are validated anyway.
The local store's files are served by the API at ``/files/{key}?exp=...&sig=...``: an HMAC-SHA256 of key
and expiry time under ``GENDEF_URL_SECRET``. The S3 store presigns with a client pointed at the public endpoint, so a
URL opens from where the client is, not only from inside the deployment.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.settings import Settings

_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,7}")


class BlobNotFound(KeyError):
    """No object under that key."""


class StorageUnavailable(RuntimeError):
    """The store cannot be reached or refused the request; worth retrying later."""


class InvalidSignature(ValueError):
    """A local file URL whose signature does not match (forged or altered)."""


class ExpiredSignature(ValueError):
    """A genuine local file URL past its expiry time."""


def artifact_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/{name}"


def input_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/input/{name}"


def validate_key(key: str) -> str:
    """Slash-separated names of [A-Za-z0-9._-] that start with a letter or digit: no '..', no absolute path."""
    if not _KEY_RE.fullmatch(key):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Store(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...  # raises BlobNotFound

    def delete(self, key: str) -> None: ...  # a key that holds nothing is no error

    def presign(
        self, key: str, expires_s: int
    ) -> str: ...  # a GET URL; the local store's is relative to the API's

    def ping(self) -> None: ...  # raises StorageUnavailable when the store cannot be used


class LocalStore:
    """Files under ``root``; the content type is implied by the key's suffix when the API serves them."""

    def __init__(self, root: Path, secret: bytes):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._secret = secret

    def path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):  # belt and braces: the key pattern already excludes '..'
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file, a rewrite replaces the whole file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        if path.parent != self.root:
            with contextlib.suppress(OSError):  # not empty: other files are kept
                path.parent.rmdir()

    def _signature(self, key: str, expires_at: int) -> str:
        return hmac.new(self._secret, f"{key}\n{expires_at}".encode(), hashlib.sha256).hexdigest()

    def presign(self, key: str, expires_s: int) -> str:
        expires_at = int(time.time()) + expires_s
        return f"files/{quote(validate_key(key))}?exp={expires_at}&sig={self._signature(key, expires_at)}"

    def check_signature(self, key: str, exp: str, sig: str) -> None:
        """Raise InvalidSignature for a forged or altered URL, ExpiredSignature for a genuine one past ``exp``."""
        # ASCII digits only: "²" passes isdigit() but not int(), and compare_digest refuses non-ASCII text.
        if not (exp.isascii() and exp.isdigit() and sig.isascii()):
            raise InvalidSignature(key)
        if not hmac.compare_digest(self._signature(key, int(exp)), sig):
            raise InvalidSignature(key)
        if int(exp) < time.time():
            raise ExpiredSignature(key)

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"local storage folder {self.root} is not writable")


@contextlib.contextmanager
def s3_errors(key: str | None = None) -> Iterator[None]:
    """botocore's errors as BlobNotFound (no object under ``key``) or StorageUnavailable (anything else)."""
    try:
        yield
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if key is not None and code in ("NoSuchKey", "404", "NotFound"):
            raise BlobNotFound(key) from None
        raise StorageUnavailable(f"S3 request failed: {code or e}") from e
    except BotoCoreError as e:
        raise StorageUnavailable(f"S3 unreachable: {e}") from e


def s3_client(settings: Settings, config: Config | None = None, endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client on the deployment's S3 settings (endpoint, credentials, region): the artifacts' store
    and a bucket of models use the same. ``config`` replaces the default timeouts and retries."""
    secret = settings.s3_secret_access_key
    default = Config(
        signature_version="s3v4",
        # MinIO and other self-hosted servers want path-style URLs; AWS picks its own.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=3,
        read_timeout=30,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        region_name=settings.s3_region,
        config=config or default,
    )


class S3Store:
    def __init__(self, settings: Settings):
        self.bucket = settings.s3_bucket
        self.client = s3_client(settings)
        # /readyz's check answers within seconds even when S3 hangs: short timeouts, one try.
        quick = Config(
            signature_version="s3v4", connect_timeout=2, read_timeout=2, retries={"total_max_attempts": 1}
        )
        self.ping_client = s3_client(settings, quick)
        # Presigning makes no request; the URL names the host clients reach.
        self.presign_client = s3_client(settings, endpoint_url=settings.s3_public_endpoint_url)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with s3_errors():
            self.client.put_object(
                Bucket=self.bucket, Key=validate_key(key), Body=data, ContentType=content_type
            )

    def get(self, key: str) -> bytes:
        with s3_errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=validate_key(key))["Body"].read()

    def delete(self, key: str) -> None:
        with s3_errors():
            self.client.delete_object(Bucket=self.bucket, Key=validate_key(key))

    def presign(self, key: str, expires_s: int) -> str:
        return self.presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": validate_key(key)}, ExpiresIn=expires_s
        )

    def ping(self) -> None:
        with s3_errors():
            self.ping_client.head_bucket(Bucket=self.bucket)


def make_store(settings: Settings) -> LocalStore | S3Store:
    if settings.storage_backend == "s3":
        return S3Store(settings)
    return LocalStore(settings.local_storage_dir, settings.url_secret.get_secret_value().encode())
