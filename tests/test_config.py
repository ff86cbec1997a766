"""Settings: AGENTIC_ prefix, nested "__", REDIS_URL fallback, secrets kept secret."""

from __future__ import annotations

import pytest

from utils.config import Settings
from utils.redis_queue import RedisTaskQueue, RetryPolicy


def test_defaults_match_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENTIC_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert (s.queue_name, s.max_retries, s.task_ttl_seconds, s.enable_dlq) == (
        "agentic_ai",
        3,
        3600,
        True,
    )
    assert s.lease_seconds == 30


def test_env_prefix_nested_delimiter_and_redis_url_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENTIC_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://fallback:6379/0")
    monkeypatch.setenv("AGENTIC_QUEUE_NAME", "prod")
    monkeypatch.setenv("AGENTIC_LEASE_SECONDS", "12.5")
    monkeypatch.setenv("AGENTIC_MAX_RETRIES", "5")
    monkeypatch.setenv("AGENTIC_TASK_TTL_SECONDS", "86400")
    monkeypatch.setenv("AGENTIC_ENABLE_DLQ", "false")
    monkeypatch.setenv("AGENTIC_RETRY__BASE_SECONDS", "0.5")
    s = Settings(_env_file=None)
    assert s.redis_url == "redis://fallback:6379/0"
    assert (s.queue_name, s.lease_seconds, s.max_retries) == ("prod", 12.5, 5)
    assert (s.task_ttl_seconds, s.enable_dlq, s.retry.base_seconds) == (86400, False, 0.5)
    monkeypatch.setenv("AGENTIC_REDIS_URL", "redis://preferred:6379/0")
    assert Settings(_env_file=None).redis_url == "redis://preferred:6379/0"


def test_password_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIC_REDIS_PASSWORD", "hunter2")
    s = Settings(_env_file=None)
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json()
    assert s.queue_kwargs()["password"] == "hunter2"


def test_queue_from_settings_carries_every_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIC_QUEUE_NAME", "configured")
    monkeypatch.setenv("AGENTIC_RETRY__FACTOR", "3")
    q = RedisTaskQueue.from_settings(Settings(_env_file=None), lease_seconds=7)
    assert q.queue_name == "configured" and q.lease_seconds == 7
    assert q.retry_policy == RetryPolicy(factor=3.0)


def test_invalid_settings_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIC_LEASE_SECONDS", "-1")
    with pytest.raises(ValueError):
        Settings(_env_file=None)
