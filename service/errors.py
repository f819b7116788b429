"""The one mapping from errors to HTTP answers: domain errors (core/errors.py) to their status, and an unreachable
Redis, queue or store to 503 with Retry-After. Routes and the code below them raise; nothing else builds an error
answer (the ASGI middlewares, which run outside the routes, answer for themselves)."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError

from core.errors import (
    Conflict,
    DomainError,
    Invalid,
    NotFound,
    TooLarge,
    TooManyJobs,
    Unauthorized,
    UnsupportedFormat,
)
from core.storage import StorageUnavailable

log = logging.getLogger(__name__)

STATUS = {
    Unauthorized: 401,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedFormat: 415,
    Invalid: 422,
    TooManyJobs: 429,
}

UNAVAILABLE = {
    redis.exceptions.ConnectionError: "the job store (Redis) is unreachable",
    redis.exceptions.TimeoutError: "the job store (Redis) did not answer in time",
    OperationalError: "the job queue (Redis) is unreachable",
    StorageUnavailable: "the artifact store is unavailable",
}


def domain_error(request: Request, exc: DomainError) -> JSONResponse:
    status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, TooManyJobs):
        headers["Retry-After"] = str(exc.retry_after_s)
    if exc.field is not None:  # the body of FastAPI's own validation errors, for one field
        error = {"type": "value_error", "loc": exc.field, "msg": exc.message, "input": exc.value}
        return JSONResponse({"detail": jsonable_encoder([error])}, status_code=status, headers=headers)
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)


def unavailable(request: Request, exc: Exception) -> JSONResponse:
    reason = next(text for cls, text in UNAVAILABLE.items() if isinstance(exc, cls))
    log.warning("%s %s: %s (%s)", request.method, request.url.path, reason, exc)
    return JSONResponse(
        {"detail": f"{reason}; try again in a few seconds"}, status_code=503, headers={"Retry-After": "5"}
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, domain_error)
    for cls in UNAVAILABLE:
        app.add_exception_handler(cls, unavailable)
