"""Exceptions raised by the membrane package.

Every exception is a :class:`MembraneError`. Errors that come from a node carry the node's own
message (``.message``) and the HTTP status of its answer (``.status``, ``None`` when the error
did not come from an HTTP answer, e.g. a failed or refused job).
"""

from __future__ import annotations

from typing import Optional

from ._native import MembraneError, Unreachable

__all__ = [
    "MembraneError",
    "Unreachable",
    "NodeError",
    "AuthError",
    "NotFound",
    "InvalidRequest",
    "PolicyRefused",
    "Conflict",
    "Unavailable",
    "JobFailed",
    "JobTimeout",
]


class NodeError(MembraneError):
    """A node answered with an error; ``status`` is the HTTP status, ``message`` its text."""

    def __init__(self, message: str, status: Optional[int] = None, job: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.job = job


class AuthError(NodeError):
    """401: the node refused the bearer token (missing or wrong ``[api] token``)."""


class NotFound(NodeError):
    """404, or a prediction naming a model this node does not know (an unknown model or job)."""


class InvalidRequest(NodeError, ValueError):
    """400/422: the node refused the request as invalid (bad field, bad input file, …)."""


class PolicyRefused(NodeError):
    """A node refused the request by its policy (allowed organisations, quotas, batch size,
    approval) — a job in state ``refused`` or a 403 answer. ``message`` names the rule, e.g.
    ``quota: 100 rows allowed, 80 used, 40 requested``."""


class Conflict(NodeError):
    """409: the request conflicts with the node's state (a duplicate job id, a job not done)."""


class Unavailable(NodeError):
    """503: the node cannot take the job now (a peer is down, too many jobs); the message says
    which peer and why."""


class JobFailed(NodeError):
    """A job ended in state ``failed`` or ``interrupted``; ``message`` is the node's reason."""


class JobTimeout(MembraneError, TimeoutError):
    """A job did not finish within the time given to :meth:`membrane.Job.result`."""


def from_status(status: int, message: str) -> NodeError:
    """The exception for an HTTP error answer."""
    cls = {
        400: InvalidRequest,
        401: AuthError,
        403: PolicyRefused,
        404: NotFound,
        409: Conflict,
        413: InvalidRequest,
        422: InvalidRequest,
        503: Unavailable,
    }.get(status, NodeError)
    return cls(message, status=status)
