"""GET /files/{key}: the local store's files at signed, expiring URLs (embedded mode only)."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from core.storage import ExpiredSignature, InvalidSignature, LocalStore
from service.deps import AnyServicesDep
from service.schemas import Message

router = APIRouter(tags=["files"])


@router.get(
    "/files/{key:path}",
    response_class=FileResponse,
    responses={403: {"model": Message}, 404: {"model": Message}, 410: {"model": Message}},
)
def get_file(key: str, svc: AnyServicesDep, exp: str = "", sig: str = "") -> FileResponse:
    """An artifact or input; ``exp`` and ``sig`` come from the URL in the job document."""
    store = svc.blobs
    assert isinstance(store, LocalStore)  # the router is mounted only for the local backend
    try:
        store.check_signature(key, exp, sig)
    except InvalidSignature:
        raise HTTPException(
            403, "invalid file URL signature: use the URL of the job document unchanged"
        ) from None
    except ExpiredSignature:
        raise HTTPException(410, "this file URL has expired: GET the job again for fresh URLs") from None
    try:
        path = store.path(key)
    except ValueError:
        path = None
    if path is None or not path.is_file():
        raise HTTPException(404, "no such file (it may have been deleted)")
    return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")
