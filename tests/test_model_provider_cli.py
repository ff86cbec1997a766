"""`agentic pipeline run` against a misbehaving provider (a real local server switched into
bad behaviours), as a user runs it: the run ends in bounded time, the process exits, and
the key is in nothing it prints or stores."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.model_server import ProviderServer
from tests.support.pipeline import spec
from tests.support.processes import agentic_argv, agentic_env

pytestmark = pytest.mark.timeout(120)

KEY = "sk-proj-Zq8mXv2LrT5nWc9Hd3Kp7Yb1"


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    server = ProviderServer()
    try:
        yield server
    finally:
        server.close()


def _env(redis_url: str, queue_name: str, provider: ProviderServer) -> dict[str, str]:
    return agentic_env(
        redis_url,
        queue_name,
        AGENTIC_MODEL__BACKEND="openai",
        AGENTIC_MODEL__BASE_URL=provider.url,
        AGENTIC_MODEL__API_KEY=KEY,
        AGENTIC_MODEL__TIMEOUT_SECONDS="0.5",
        AGENTIC_MODEL__DEADLINE_SECONDS="1.2",
        AGENTIC_MODEL__MAX_RETRIES="1",
        AGENTIC_MAX_RETRIES="1",
        no_proxy="127.0.0.1",
        NO_PROXY="127.0.0.1",
    )


def _agentic(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agentic_argv(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _spec(tmp_path: Path) -> str:
    without_model = {k: v for k, v in spec().items() if k != "model"}
    (tmp_path / "spec.json").write_text(json.dumps(without_model))
    return "spec.json"


@pytest.mark.parametrize("mode", ["trickle", "hang", "echo-500", "echo-401"])
def test_a_local_run_against_a_bad_provider_fails_in_bounded_time_and_exits(
    tmp_path: Path, redis_url: str, queue_name: str, provider: ProviderServer, mode: str
) -> None:
    """Before: a dripping reply held a thread past the deadline and the process printed
    "failed", then hung on exit; an echoing error body put the key into the progress lines
    and the run's reason, with the traceback."""
    provider.mode = mode
    # A reply long enough that its drip outlasts the call's deadline whether it is asked
    # for whole (a byte at a time) or streamed (a piece per event), as --local streams
    # its subtasks' output now.
    provider.content = "x" * 3000
    started = time.monotonic()
    done = _agentic(
        "pipeline", "run", _spec(tmp_path), "--local",
        env=_env(redis_url, queue_name, provider), cwd=tmp_path,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert elapsed < 10, f"{elapsed:.1f} s"  # 2 queue attempts x 1.2 s, and the start-up
    assert KEY not in output and KEY[:8] not in output
    assert "Traceback" not in output
    reasons = [line for line in done.stdout.splitlines() if line.strip().startswith("reason")]
    assert reasons and all("Model" in line for line in reasons), done.stdout
    if mode.startswith("echo"):
        assert "Bearer ***" in done.stdout  # what the provider said, scrubbed


def test_through_workers_the_key_is_in_no_status_dlq_or_task_output(
    tmp_path: Path, redis_url: str, queue_name: str, provider: ProviderServer
) -> None:
    provider.mode = "echo-500"
    env = _env(redis_url, queue_name, provider)
    done = _agentic(
        "pipeline", "run", _spec(tmp_path), "--workers", "yes", "--json", env=env, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    (result,) = json.loads(done.stdout)
    status = _agentic("pipeline", "status", result["run_id"], "--json", env=env, cwd=tmp_path)
    dlq = _agentic("dlq", "list", env=env, cwd=tmp_path)  # the pipeline's queue: queue_name
    outputs = [done.stdout, done.stderr, status.stdout, status.stderr, dlq.stdout, dlq.stderr]
    for text in outputs:
        assert KEY not in text and KEY[:8] not in text
    assert all("\n" not in reason for reason in result["reasons"])
    assert "Bearer ***" in status.stdout and "ModelUnavailable" in dlq.stdout
