"""schemathesis over /openapi.json: generated requests to every operation of a real API over HTTP (no worker;
Redis db 14). No answer may be a 5xx, and every answer must match the schema (status declared, body, headers,
content type). /readyz's 503 is its documented "not ready" answer (no worker runs here), so only there a 503 is
checked against the schema instead of counted as a server error. At least 2,000 requests in all."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.redis_server import redis_url
from tests.service.helpers import Server, make_settings

log = logging.getLogger(__name__)

REDIS_DB = 14
EXAMPLES_PER_OPERATION = 230  # about 2,300 requests in all (3,003 at 300)
MIN_REQUESTS = 2000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    client = redis.Redis.from_url(redis_url(REDIS_DB))
    client.flushdb()
    with Server(make_settings(tmp_path, redis_url=redis_url(REDIS_DB), worker_ping_timeout_s=0.05)) as s:
        yield s
    client.flushdb()
    client.close()


def fuzz(operation: schemathesis.APIOperation, base_url: str, checks: list) -> int:
    """Send generated requests to one operation and check each answer; returns how many were sent."""
    sent = 0

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        nonlocal sent
        response = case.call(base_url=base_url, timeout=30)
        sent += 1
        case.validate_response(response, checks=checks)

    call()
    return sent


def test_generated_requests_get_no_5xx_and_match_the_schema(server: Server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        sent += fuzz(operation, server.url, CHECKS[1:] if operation.path == "/readyz" else CHECKS)
    log.info("fuzzed %d requests", sent)
    assert sent >= MIN_REQUESTS
