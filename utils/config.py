"""Settings for every part of agentic-pipeline, read once at the edge (CLI, manager).

Environment variables use the prefix AGENTIC_ and "__" for nested fields, e.g.
AGENTIC_REDIS_URL, AGENTIC_RETRY__BASE_SECONDS. REDIS_URL is accepted when
AGENTIC_REDIS_URL is not set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from utils.redis_queue.models import RetryPolicy

__all__ = [
    "DashboardSettings",
    "ModelSettings",
    "PipelineSettings",
    "RetrySettings",
    "Settings",
    "WorkerSettings",
]


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
    exit_on_unavailable: bool = Field(
        False, description="Exit (69) when Redis is unreachable at start-up instead of waiting."
    )
    scheduler: bool = Field(
        True, description="Run the queue's periodic schedules (any number of workers may)."
    )


class ModelSettings(BaseModel):
    """The model backend agents call: recorded replies (offline) or an OpenAI-compatible API."""

    backend: Literal["replay", "openai"] = Field(
        "replay", description="replay: answer from a recorded file; openai: chat completions."
    )
    base_url: str = Field("https://api.openai.com/v1", description="Chat-completions base URL.")
    name: str = Field("gpt-4o-mini", description="Model name sent to the endpoint.")
    api_key: SecretStr | None = Field(None, description="Bearer key (kept out of logs).")
    timeout_seconds: float = Field(
        120.0, gt=0, description="Total deadline of one model request (a dripping reply too)."
    )
    max_retries: int = Field(4, ge=0, description="Retries on 429, 5xx and timeouts.")
    deadline_seconds: float = Field(
        200.0,
        gt=0,
        description="Total deadline of one model call with its retries: a queue attempt of "
        "an agent spends at most this on the model (4 attempts fit the 900 s subtask wait).",
    )
    temperature: float = Field(0.0, ge=0, le=2)
    replay_file: Path | None = Field(None, description="Recorded replies for the replay backend.")
    replay_chunk_delay: float = Field(
        0.0, ge=0, le=10, description="Seconds between the pieces a replayed reply streams in."
    )
    prompt_price_per_1k: float = Field(0.0, ge=0, description="USD per 1,000 prompt tokens.")
    completion_price_per_1k: float = Field(
        0.0, ge=0, description="USD per 1,000 completion tokens."
    )


class PipelineSettings(BaseModel):
    """Defaults of pipeline runs (a spec may override the per-run ones)."""

    workspace_root: Path = Field(
        Path(".agentic/workspaces"),
        description="Each run works in <root>/<run_id>; agents refuse a workspace outside it.",
    )
    deploy_dir: Path = Field(
        Path(".agentic/deploy"),
        description="Where artifacts go; the deploy agent refuses a directory outside it.",
    )
    max_fix_rounds: int = Field(3, ge=0, description="QA -> fix -> QA rounds before failing.")
    qa_timeout_seconds: float = Field(120.0, gt=0, description="Limit of one QA test run.")
    sandbox: Literal["auto", "bubblewrap", "unshare", "none"] = Field(
        "auto",
        description="Where generated code runs: bubblewrap (namespaces, only the workspace and "
        "the Python runtime visible), unshare (network, pid and mount namespaces, private /tmp), "
        "auto (bubblewrap when it works here, else unshare, else rlimits only) or none "
        "(the worker's rights; logged as a warning on every run).",
    )
    sandbox_cpu_seconds: int = Field(60, ge=1, description="CPU time of one sandboxed command.")
    sandbox_memory_mib: int = Field(
        1024, ge=64, description="Address space of each sandboxed process (RLIMIT_AS)."
    )
    sandbox_max_processes: int = Field(
        256, ge=8, description="Processes of the sandbox's user at once (RLIMIT_NPROC)."
    )
    sandbox_file_size_mib: int = Field(
        256, ge=1, description="Largest file a sandboxed process may write (RLIMIT_FSIZE)."
    )
    sandbox_open_files: int = Field(
        1024, ge=16, description="Open files of each sandboxed process (RLIMIT_NOFILE)."
    )
    subtask_timeout_seconds: float = Field(
        900.0, gt=0, description="How long a manager waits for one subtask's result."
    )
    local_workers: int = Field(4, ge=1, description="Worker coroutines of the in-process manager.")
    run_lock_seconds: float = Field(
        30.0, gt=0, description="A dead manager's runs can be resumed after this long."
    )
    run_ttl_seconds: int = Field(7 * 86400, gt=0, description="How long finished runs are kept.")
    approval_timeout_seconds: float = Field(
        86400.0, gt=0, description="How long a run waits for an approval its spec asks for."
    )
    queue_name: str = Field(
        "agentic_pipeline",
        description="The pipeline's own queue, so handlers on the default queue never take "
        "its subtasks; an explicit AGENTIC_QUEUE_NAME moves it too.",
    )


class DashboardSettings(BaseModel):
    """Defaults of `agentic dashboard` (each also a command-line option)."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8420, ge=0, le=65535, description="Port to listen on (0: any free one).")
    read_only: bool = Field(False, description="Hide and refuse every action.")
    auth_token: SecretStr | None = Field(
        None, description="Token every request must carry; required off loopback."
    )
    trace_url: str | None = Field(
        None,
        description="Link for a trace id, with {trace_id} in it, e.g. "
        "http://localhost:16686/trace/{trace_id}.",
    )
    refresh_seconds: float = Field(2.0, ge=0.5, description="How often open pages refresh.")
    queues: str | None = Field(
        None, description="Comma-separated queue names to show besides those registered."
    )


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
        description="Redis to use: redis://, rediss:// (TLS), unix://, or "
        "sentinel://host:port,host:port/<master>[/<db>] (sentinels:// for TLS).",
    )
    redis_cluster: bool = Field(
        False, description="The URL is a node of a Redis Cluster (any node will do)."
    )
    partitions: int = Field(
        1,
        ge=1,
        le=256,
        description="Partitions of each queue (hash slots it spreads over); the same for "
        "every producer and worker of a queue.",
    )
    max_connections: int = Field(
        100, ge=1, description="Connections one queue object opens (per node on a cluster)."
    )
    max_blocking_connections: int = Field(
        100, ge=1, description="Connections one queue object opens for blocking waits."
    )
    durable_enqueue: bool = Field(
        False, description="Enqueue returns only once min_replicas replicas have the task."
    )
    durable_settle: bool = Field(
        False, description="Acknowledgements wait for min_replicas replicas too."
    )
    min_replicas: int = Field(1, ge=1, description="Replicas WAIT must confirm (durable).")
    durable_timeout_ms: int = Field(
        1000, ge=1, description="How long a durable write waits for its replicas."
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
    max_payload_bytes: int = Field(
        16_777_216, gt=0, description="Largest payload/result JSON (above: PayloadTooLarge)."
    )
    blob_threshold_bytes: int = Field(
        65_536, ge=0, description="Payloads/results above this go to a key of their own."
    )
    output_max_entries: int = Field(
        10_000, ge=1, description="Entries a task's output stream keeps (about: MAXLEN ~)."
    )
    output_ttl_seconds: int = Field(
        86_400, ge=1, description="A task's output stream expires this long after its last write."
    )
    events: bool = Field(
        True, description="Write task lifecycle events to each partition's events stream."
    )
    events_max_len: int = Field(
        10_000, ge=1, description="Entries each partition's events stream keeps (MAXLEN ~)."
    )
    socket_timeout: float = Field(5.0, gt=0, description="Timeout of one Redis command.")
    connect_timeout: float = Field(5.0, gt=0, description="Timeout of connecting to Redis.")
    retry: RetrySettings = Field(default_factory=RetrySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)

    def password(self) -> str | None:
        """The Redis password in clear, for a client; None when unset."""
        return self.redis_password.get_secret_value() if self.redis_password else None

    def pipeline_queue_name(self) -> str:
        """The queue pipeline runs use: AGENTIC_PIPELINE__QUEUE_NAME when set, else an
        explicitly set AGENTIC_QUEUE_NAME (one queue for everything), else the pipeline's
        own default, kept apart from the default queue of user handlers."""
        if (
            "queue_name" in self.pipeline.model_fields_set
            or "queue_name" not in self.model_fields_set
        ):
            return self.pipeline.queue_name
        return self.queue_name

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
            "blob_threshold_bytes": self.blob_threshold_bytes,
            "socket_timeout": self.socket_timeout,
            "connect_timeout": self.connect_timeout,
            "password": self.password(),
            "cluster": self.redis_cluster,
            "partitions": self.partitions,
            "max_connections": self.max_connections,
            "max_blocking_connections": self.max_blocking_connections,
            "durable": self.durable_enqueue,
            "durable_settle": self.durable_settle,
            "min_replicas": self.min_replicas,
            "durable_timeout_ms": self.durable_timeout_ms,
            "output_max_entries": self.output_max_entries,
            "output_ttl_seconds": self.output_ttl_seconds,
            "events": self.events,
            "events_max_len": self.events_max_len,
        }
