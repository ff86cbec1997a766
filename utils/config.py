"""Settings for every part of agentic-pipeline, read once at the edge (CLI, manager).

Environment variables use the prefix AGENTIC_ and "__" for nested fields, e.g.
AGENTIC_REDIS_URL, AGENTIC_RETRY__BASE_SECONDS. REDIS_URL is accepted when
AGENTIC_REDIS_URL is not set.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from utils.redis_queue.models import RetryPolicy

__all__ = ["RetrySettings", "Settings", "WorkerSettings"]


class RetrySettings(BaseModel):
    """Backoff between retries: immediate, then base, base*factor, ... up to cap."""

    first_immediate: bool = True
    base_seconds: float = Field(2.0, ge=0)
    factor: float = Field(2.0, ge=1)
    cap_seconds: float = Field(300.0, ge=0)
    jitter: float = Field(0.0, ge=0, lt=1)


class WorkerSettings(BaseModel):
    """Defaults of `agentic worker` (each also a command-line option)."""

    app: str | None = Field(None, description="MODULE:ATTR of the handlers to serve.")
    types: str | None = Field(None, description="Comma-separated task types (default: all).")
    concurrency: int = Field(10, ge=1, description="Tasks run at once per process.")
    processes: int = Field(1, ge=1, description="Worker processes under one supervisor.")
    timeout_seconds: float | None = Field(None, gt=0, description="Default task timeout.")
    grace_seconds: float = Field(30.0, ge=0, description="Shutdown grace for running tasks.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGENTIC_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias=AliasChoices("AGENTIC_REDIS_URL", "REDIS_URL", "redis_url"),
        description="Redis to use; redis://, rediss:// (TLS) or unix:// URLs.",
    )
    redis_password: SecretStr | None = Field(
        None, description="Password, when it is not in the URL (kept out of logs and reprs)."
    )
    queue_name: str = Field("agentic_ai", description="Queue namespace (the key hash tag).")
    key_prefix: str = Field("agentic", description="First part of every Redis key.")
    lease_seconds: float = Field(30.0, gt=0, description="Lease a worker holds on a task.")
    max_retries: int = Field(3, ge=0, description="Retries before a task is dead-lettered.")
    max_lease_losses: int = Field(
        3, ge=0, description="Reclaims after lost leases before a task is dead-lettered."
    )
    task_ttl_seconds: int = Field(
        3600, gt=0, description="How long completed and cancelled tasks are kept."
    )
    enable_dlq: bool = Field(True, description="Dead-letter final failures (else state failed).")
    max_payload_bytes: int = Field(1_048_576, gt=0, description="Largest payload/result JSON.")
    socket_timeout: float = Field(5.0, gt=0, description="Timeout of one Redis command.")
    connect_timeout: float = Field(5.0, gt=0, description="Timeout of connecting to Redis.")
    retry: RetrySettings = Field(default_factory=RetrySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    def queue_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for RedisTaskQueue(**settings.queue_kwargs())."""
        return {
            "queue_name": self.queue_name,
            "redis_url": self.redis_url,
            "max_retries": self.max_retries,
            "task_ttl_seconds": self.task_ttl_seconds,
            "enable_dlq": self.enable_dlq,
            "lease_seconds": self.lease_seconds,
            "max_lease_losses": self.max_lease_losses,
            "retry_policy": RetryPolicy(**self.retry.model_dump()),
            "key_prefix": self.key_prefix,
            "max_payload_bytes": self.max_payload_bytes,
            "socket_timeout": self.socket_timeout,
            "connect_timeout": self.connect_timeout,
            "password": self.redis_password.get_secret_value() if self.redis_password else None,
        }
