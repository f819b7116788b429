"""schemathesis over /openapi.json: generated requests to every operation of a real API over HTTP (no worker;
Redis db 14). No answer may be a 5xx, and every answer must match the schema (status declared, body, headers,
content type). /readyz's 503 is its documented "not ready" answer (no worker runs here), so only there a 503 is
checked against the schema instead of counted as a server error.

Four runs: a fixed seed (the same requests every time: a regression found stays found) and a random seed (new
requests each time; the seed is printed, so a failure can be replayed with FUZZ_SEED=<seed>), each against an open
API and against one with API keys on (every request carrying a valid key). At least 2,000 requests per run."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
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
EXAMPLES_PER_OPERATION = 230  # about 2,300 requests per run (3,003 at 300)
MIN_REQUESTS = 2000
FIXED_SEED = 1_234_567
KEY = "fuzz-key-0123456789abcdef"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def fuzz(
    operation: schemathesis.APIOperation, base_url: str, checks: list, run_seed: int, headers: dict[str, str]
) -> int:
    """Send generated requests to one operation and check each answer; returns how many were sent."""
    sent = 0

    @seed(run_seed)
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        nonlocal sent
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        sent += 1
        case.validate_response(response, checks=checks)

    call()
    return sent


@pytest.mark.parametrize("keys", [False, True], ids=["open", "api-keys"])
@pytest.mark.parametrize("mode", ["fixed-seed", "random-seed"])
def test_generated_requests_get_no_5xx_and_match_the_schema(tmp_path: Path, mode: str, keys: bool):
    run_seed = (
        FIXED_SEED if mode == "fixed-seed" else int(os.environ.get("FUZZ_SEED") or random.randrange(2**32))
    )
    print(f"fuzz seed: {run_seed} (replay: FUZZ_SEED={run_seed})")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    headers = {"Authorization": f"Bearer {KEY}"} if keys else {}
    client = redis.Redis.from_url(redis_url(REDIS_DB))
    client.flushdb()
    config = make_settings(
        tmp_path, redis_url=redis_url(REDIS_DB), worker_ping_timeout_s=0.05, api_keys=digest if keys else ""
    )
    sent = 0
    with Server(config) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            checks = CHECKS[1:] if operation.path == "/readyz" else CHECKS
            sent += fuzz(operation, server.url, checks, run_seed, headers)
    client.flushdb()
    client.close()
    log.info(
        "fuzzed %d requests (%s, %s, seed %d): no 5xx", sent, mode, "API keys" if keys else "open", run_seed
    )
    assert sent >= MIN_REQUESTS
