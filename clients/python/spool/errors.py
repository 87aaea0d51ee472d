"""Typed errors carrying the gateway's problem document (RFC 9457)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import httpx

PREFIX = "urn:spool:problem:"


class SpoolError(Exception):
    """An error answered by the gateway. ``problem`` is the whole problem document."""

    def __init__(self, status: int, problem: Dict[str, Any]):
        self.status = status
        self.problem = problem
        self.type: str = str(problem.get("type", ""))
        self.detail: str = str(problem.get("detail", problem.get("title", "")))
        super().__init__(f"{status} {self.short_type or 'error'}: {self.detail}")

    @property
    def short_type(self) -> str:
        """The problem type without its prefix: ``lease-lost``, ``validation``, ..."""
        return self.type[len(PREFIX):] if self.type.startswith(PREFIX) else self.type


class InvalidRequest(SpoolError):
    """400, 413, 415 or 422: the request itself is wrong; sending it again will not help."""


class Unauthorized(SpoolError):
    """401: no token, or not a valid one."""


class Forbidden(SpoolError):
    """403: the token lacks a scope, or the request was refused as cross-site."""


class NotFound(SpoolError):
    """404: no such job (another tenant's job looks missing too)."""


class Conflict(SpoolError):
    """409: the job's state does not allow this, or an idempotency key was reused differently."""


class LeaseLost(Conflict):
    """409 lease-lost: the lease expired and was handed on, or the job was cancelled."""


class QueueFull(SpoolError):
    """429: the queue is at its depth limit; ``retry_after`` says when to try again."""

    @property
    def retry_after(self) -> Optional[float]:
        value = self.problem.get("retry_after")
        return float(value) if value is not None else None


class Unavailable(SpoolError):
    """503 (or no answer at all): the gateway or its store is down; retry later."""


class WaitTimeout(TimeoutError):
    """:meth:`spool.Client.wait` gave up before the job finished."""


def raise_for(response: httpx.Response) -> None:
    """Raises the typed error for a response that is not a success."""
    if response.status_code < 400:
        return
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)}
    except ValueError:
        problem = {"detail": response.text[:500]}
    if "Retry-After" in response.headers:
        problem.setdefault("retry_after", response.headers["Retry-After"])
    status = response.status_code
    short = str(problem.get("type", ""))[len(PREFIX):]
    if status == 409 and short == "lease-lost":
        raise LeaseLost(status, problem)
    cls = {400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
           413: InvalidRequest, 415: InvalidRequest, 422: InvalidRequest, 429: QueueFull,
           503: Unavailable}.get(status, Unavailable if status >= 500 else SpoolError)
    raise cls(status, problem)
