"""A Server-Sent Events reader for tests: the stream of an httpx response as (event, data) pairs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

HEARTBEAT = ("heartbeat", None)


def events(response: httpx.Response) -> Iterator[tuple[str, dict | None]]:
    """Yields ("update" | "final" | "error", parsed JSON data) per event, and HEARTBEAT per comment line."""
    name, data = "message", []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield HEARTBEAT
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif line == "" and data:
            yield name, json.loads("\n".join(data))
            name, data = "message", []


def next_event(stream: Iterator[tuple[str, dict | None]]) -> tuple[str, dict]:
    """The next event that is not a heartbeat."""
    return next(item for item in stream if item != HEARTBEAT)
