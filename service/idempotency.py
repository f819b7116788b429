"""Idempotency-Key on POST requests: a client that retries a submission (a lost answer, a timeout) with the same
key gets the first answer again (same status, same job id) instead of a second job.

An ASGI middleware, so it covers every POST route. With API keys on, a request without a valid key passes
through untouched (the route answers 401): no stored answer is replayed to a revoked or wrong key. A key is
remembered per caller (per API key, or per anonymous caller) for GENDEF_IDEMPOTENCY_TTL_S (24 h) from its first use, with a fingerprint of the request: the
path and the body (JSON compared as data, so key order and spaces do not matter; multipart with its random
boundary taken out). The same key with another request is refused with 422. Only successful (2xx) answers are
kept: after a 4xx or 5xx the key is free again, so the corrected request may reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.jobs import IdempotencyRecords
from service.auth import key_owner

log = logging.getLogger(__name__)

MAX_KEY_CHARS = 255
KEPT_HEADERS = ("content-type", "location")


def fingerprint(path: str, content_type: str, body: bytes) -> str:
    media_type, _, options = content_type.partition(";")
    media_type = media_type.strip().lower()
    canonical = body
    if media_type == "application/json":
        try:
            canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
        except (ValueError, RecursionError):  # not JSON: the route refuses it; compare the bytes
            pass
    elif media_type == "multipart/form-data":
        params = dict(p.strip().partition("=")[::2] for p in options.split(";") if "=" in p)
        boundary = params.get("boundary", "").strip('"').encode()
        if boundary:
            canonical = body.replace(b"--" + boundary, b"--")
    return hashlib.sha256(b"\n".join([path.encode(), media_type.encode(), canonical])).hexdigest()


class Idempotency:
    def __init__(self, app: ASGIApp, records: IdempotencyRecords, api_key_hashes: frozenset[str]):
        self.app = app
        self.records = records
        self.api_key_hashes = api_key_hashes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        key = headers.get("idempotency-key")
        caller = headers.get("authorization", "")
        if self.api_key_hashes:
            caller = key_owner(caller, self.api_key_hashes)
        if scope["type"] != "http" or scope["method"] != "POST" or key is None or caller is None:
            await self.app(scope, receive, send)  # no valid key: the route refuses it (401)
            return
        if not 1 <= len(key) <= MAX_KEY_CHARS or not key.isprintable():
            await JSONResponse(
                {"detail": f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable characters, e.g. a UUID"},
                status_code=400,
            )(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except HTTPException as e:  # the body size limit (outside this middleware) said no
            await JSONResponse({"detail": e.detail}, status_code=e.status_code)(scope, receive, send)
            return
        if body is None:
            return
        rkey = self.records.key(caller, key)
        mine = fingerprint(scope["path"], headers.get("content-type", ""), body)
        try:
            stored = await run_in_threadpool(self.records.claim, rkey, mine)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            log.warning("idempotency: Redis unreachable (%s)", e)
            await JSONResponse(
                {"detail": "the job store (Redis) is unreachable; try again in a few seconds"},
                status_code=503,
                headers={"Retry-After": "5"},
            )(scope, receive, send)
            return
        if stored is not None:
            await self._answer_again(stored, mine)(scope, receive, send)
            return
        await self._first(scope, receive, send, body, rkey, mine)

    @staticmethod
    def _answer_again(stored: dict[str, Any], mine: str) -> Response:
        if stored["fingerprint"] != mine:
            return JSONResponse(
                {
                    "detail": "this Idempotency-Key was used with another request (path or body); "
                    "use a new key for a new request"
                },
                status_code=422,
            )
        if "status" not in stored:
            return JSONResponse(
                {"detail": "a request with this Idempotency-Key is still in progress; retry in a moment"},
                status_code=409,
                headers={"Retry-After": "1"},
            )
        return Response(
            stored["body"].encode(),
            status_code=stored["status"],
            headers=stored["headers"] | {"idempotent-replayed": "true"},
        )

    async def _first(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, rkey: str, mine: str
    ) -> None:
        """Run the request; keep a 2xx answer under the key, free the key after any other. The answer reaches the
        client only after it is kept, so a retry sent the moment the first answer arrives is a replay, not a 409."""
        answer: dict[str, Any] = {"status": 500, "headers": {}, "body": b""}
        held: list[Message] = []
        replayed = False

        async def receive_body() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = {
                    k.decode().lower(): v.decode()
                    for k, v in message.get("headers", [])
                    if k.decode().lower() in KEPT_HEADERS
                }
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")
            held.append(message)

        try:
            await self.app(scope, receive_body, keep)
        finally:
            await run_in_threadpool(self._settle, rkey, mine, answer)
        for message in held:
            await send(message)

    def _settle(self, rkey: str, mine: str, answer: dict[str, Any]) -> None:
        try:
            if 200 <= answer["status"] < 300:
                stored = {
                    "fingerprint": mine,
                    "status": answer["status"],
                    "headers": answer["headers"],
                    "body": answer["body"].decode(),
                }
                self.records.keep(rkey, stored)
            else:
                self.records.release(rkey)
        except (redis.ConnectionError, redis.TimeoutError) as e:  # the pending claim expires on its own
            log.warning("idempotency: could not record the answer under its key (%s)", e)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body; None when the client went away before sending it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
