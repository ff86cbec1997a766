"""Errors of the model backends, one tree rooted at ModelError.

    ModelError                 retryable  (may the queue run the task again?)
    ├── ModelAuthError         no         401/403: the worker's key is wrong or missing
    ├── ModelRejected          no         any other 4xx: the request itself is refused
    ├── ModelRateLimited       yes        429, after the backend's own retries
    ├── ModelTimeout           yes        no answer within timeout_seconds
    ├── ModelUnavailable       yes        5xx, refused or dropped connections
    ├── ModelResponseError     yes        a 2xx whose body is not a chat completion
    └── ReplayError            no         a replay file that cannot be read
        └── ReplayMissing      no         no recorded reply for the key

The OpenAI backend itself retries only ModelRateLimited, ModelTimeout and
ModelUnavailable (with backoff, up to max_retries, within its deadline); the agents turn
the non-retryable ones into PermanentFailure so the queue dead-letters them at once.

Every message is scrubbed of bearer tokens and sk- keys when the error is made (the
backend also removes its own key first), so no error text can carry a key onwards.
"""

from __future__ import annotations

from utils.redaction import redact_secrets

__all__ = [
    "RETRY_AFTER_CAP",
    "ModelAuthError",
    "ModelError",
    "ModelRateLimited",
    "ModelRejected",
    "ModelResponseError",
    "ModelTimeout",
    "ModelUnavailable",
    "ReplayError",
    "ReplayMissing",
]

RETRY_AFTER_CAP = 30.0
"""The longest wait a provider's Retry-After buys, in seconds: the backend sleeps at most
this long between its retries and the agents hand at most this to the queue (a fleet-wide
pause or a retry delay); a longer ask is capped and its error says so."""


class ModelError(Exception):
    """A model call failed. `status`: the HTTP status, when there was one;
    `retry_after`: seconds the server asked to wait (Retry-After), when it said."""

    retryable = True

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(redact_secrets(message))
        self.status = status
        self.retry_after = retry_after


class ModelAuthError(ModelError):
    retryable = False


class ModelRejected(ModelError):
    retryable = False


class ModelRateLimited(ModelError):
    pass


class ModelTimeout(ModelError):
    pass


class ModelUnavailable(ModelError):
    pass


class ModelResponseError(ModelError):
    pass


class ReplayError(ModelError):
    retryable = False


class ReplayMissing(ReplayError):
    """No recorded reply for `key` in `path`."""

    def __init__(self, key: str, path: str) -> None:
        super().__init__(f"no recorded reply for key {key!r} in {path}")
        self.key = key
        self.path = path
