"""Domain errors: what went wrong with a request and what to do, raised anywhere below the routes.

Each class is one kind of answer; service/errors.py maps each to its HTTP status (the only place that does).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """``message`` is a sentence the caller can act on. ``field`` (a location such as ("body", "seed")) and
    ``value`` name the request field at fault, when one is."""

    def __init__(self, message: str, field: tuple[str | int, ...] | None = None, value: Any = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value


class NotFound(DomainError):
    """No such job (or not the caller's), or a stored object is gone."""


class Conflict(DomainError):
    """The job named is not in a state the request needs (not succeeded, wrong kind, expired parent)."""


class Invalid(DomainError):
    """The request is well-formed but its content is refused (a field's value, a corrupt upload)."""


class TooLarge(DomainError):
    """An upload or one of its frames is past a limit."""


class UnsupportedFormat(DomainError):
    """An upload of a format the API does not take."""


class Unauthorized(DomainError):
    """API keys are on and the request has no valid one."""


class TooManyJobs(DomainError):
    """The caller's key has its limit of queued and running jobs; come back after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s
