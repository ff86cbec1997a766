"""Choosing a backend: the worker's ModelSettings, optionally overridden per run.

A task's payload may carry `"model": {"backend": "replay", "replay_file": "/abs.json"}`.
Only OVERRIDABLE keys are accepted: never an api key, and never a base_url, so a payload
cannot send the worker's key to a server of its choosing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from utils.config import ModelSettings

from .base import ModelBackend
from .openai import OpenAIChatBackend
from .replay import ReplayBackend

__all__ = ["OVERRIDABLE", "build_backend", "resolve_settings"]

OVERRIDABLE = frozenset({"backend", "replay_file", "name", "temperature"})
_CACHE_SIZE = 32  # a long-lived worker sees a handful of configurations; bound it anyway

_cache: dict[tuple[str, ...], ModelBackend] = {}


def resolve_settings(
    settings: ModelSettings, overrides: Mapping[str, Any] | None = None
) -> ModelSettings:
    """`settings` with `overrides` applied and validated; ValueError names what is wrong."""
    if not overrides:
        return settings
    unknown = set(overrides) - OVERRIDABLE
    if unknown:
        raise ValueError(
            f"model overrides may set only {sorted(OVERRIDABLE)}, not {sorted(unknown)}"
        )
    replay_file = overrides.get("replay_file")
    if replay_file is not None and not Path(str(replay_file)).is_absolute():
        raise ValueError(f"model.replay_file must be an absolute path, not {replay_file!r}")
    try:
        return ModelSettings.model_validate({**settings.model_dump(), **overrides})
    except ValidationError as exc:
        raise ValueError(f"invalid model overrides: {exc}") from None


def build_backend(
    settings: ModelSettings, overrides: Mapping[str, Any] | None = None
) -> ModelBackend:
    """The backend for `settings` + `overrides`, shared by every call with the same
    configuration (backend, replay file or base URL, model name, ...)."""
    resolved = resolve_settings(settings, overrides)
    key = _cache_key(resolved)
    backend = _cache.get(key)
    if backend is None:
        backend = _make(resolved)
        if len(_cache) >= _CACHE_SIZE:
            del _cache[next(iter(_cache))]  # the oldest entry
        _cache[key] = backend
    return backend


def _make(settings: ModelSettings) -> ModelBackend:
    if settings.backend == "replay":
        if settings.replay_file is None:
            raise ValueError("the replay backend needs a replay_file (AGENTIC_MODEL__REPLAY_FILE)")
        return ReplayBackend(settings.replay_file, chunk_delay=settings.replay_chunk_delay)
    return OpenAIChatBackend.from_settings(settings)


def _cache_key(settings: ModelSettings) -> tuple[str, ...]:
    location = str(settings.replay_file) if settings.backend == "replay" else settings.base_url
    secret = settings.api_key.get_secret_value() if settings.api_key else ""
    return (
        settings.backend,
        location,
        settings.name,
        settings.model_dump_json(exclude={"api_key"}),  # timeouts, retries, temperature
        hashlib.sha256(secret.encode()).hexdigest()[:16],  # a new key, a new client
    )
