"""`agentic dashboard` as a user starts it (a real process), and the agreement between its
/api/ documents and the CLI's --json output for the same queue."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.dashboard import Population, dashboard_settings, drop_prefix, populate
from tests.support.processes import agentic_argv, wait_exit
from utils.config import Settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def config(tmp_path: Path, redis_url: str) -> AsyncIterator[Settings]:
    settings = dashboard_settings(tmp_path, redis_url)
    yield settings
    await drop_prefix(redis_url, settings.key_prefix)


def env_for(config: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("AGENTIC_") or name == "REDIS_URL":
            del env[name]
    env.update(
        AGENTIC_REDIS_URL=config.redis_url,
        AGENTIC_KEY_PREFIX=config.key_prefix,
        AGENTIC_QUEUE_NAME=config.queue_name,
        AGENTIC_PIPELINE__QUEUE_NAME=config.pipeline.queue_name,
        AGENTIC_PIPELINE__WORKSPACE_ROOT=str(config.pipeline.workspace_root),
        AGENTIC_PIPELINE__DEPLOY_DIR=str(config.pipeline.deploy_dir),
        **extra,
    )
    return env


def cli_json(config: Settings, *args: str) -> object:
    done = subprocess.run(
        agentic_argv(*args), env=env_for(config), capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@contextlib.contextmanager
def started_dashboard(config: Settings) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`agentic dashboard --port 0` and the URL it printed; stopped at the end."""
    with subprocess.Popen(
        agentic_argv("dashboard", "--port", "0"),
        env=env_for(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            assert line.startswith("dashboard on http://127.0.0.1:"), line
            yield proc, line.split()[-1].rstrip("/")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def dashboard_process(config: Settings) -> Iterator[str]:
    with started_dashboard(config) as (_, url):
        yield url


async def test_refuses_to_listen_off_loopback_without_a_token(config: Settings) -> None:
    refused = subprocess.run(
        agentic_argv("dashboard", "--host", "0.0.0.0", "--port", "0"),
        env=env_for(config),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "without a token" in refused.stderr.decode()
    assert "Traceback" not in refused.stderr.decode()


async def test_a_token_from_the_environment_allows_any_address(config: Settings) -> None:
    with subprocess.Popen(
        agentic_argv("dashboard", "--host", "0.0.0.0", "--port", "0"),
        env=env_for(config, AGENTIC_DASHBOARD__AUTH_TOKEN="t0ken"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            assert proc.stdout is not None
            port = proc.stdout.readline().decode().split(":")[-1].strip().rstrip("/")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/api/overview")).status_code == 401
                bearer = {"Authorization": "Bearer t0ken"}
                assert (await client.get("/api/overview", headers=bearer)).status_code == 200
        finally:
            proc.terminate()
            assert await wait_exit(proc, 10) in (0, -15)


async def test_the_printed_address_accepts_connections_before_the_app_has_started(
    config: Settings,
) -> None:
    """A script that reads the URL line connects at once. Stopped (SIGSTOP) right after it
    prints, the process must already listen: the kernel completes the connection, and the
    request is answered once the process runs again."""
    with started_dashboard(config) as (proc, url):
        proc.send_signal(signal.SIGSTOP)
        try:
            port = int(url.rsplit(":", 1)[-1])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                proc.send_signal(signal.SIGCONT)
                conn.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                conn.settimeout(60)
                assert conn.recv(12) == b"HTTP/1.1 200"
        finally:
            proc.send_signal(signal.SIGCONT)


async def test_api_documents_agree_with_the_cli_json(
    config: Settings, dashboard_process: str
) -> None:
    population: Population = await populate(config)
    async with httpx.AsyncClient(base_url=dashboard_process, timeout=10) as client:

        async def api(path: str) -> object:
            answer = await client.get(path)
            assert answer.status_code == 200, answer.text
            return answer.json()

        info = await api("/api/queues/jobs")
        from_cli = cli_json(config, "info", "--json")
        assert isinstance(info, dict) and isinstance(from_cli, dict)
        assert set(info) == set(from_cli)
        for key in ("queue", "partitions", "statistics", "workers", "limits"):
            assert info[key] == from_cli[key], key

        page = await api("/api/queues/jobs/tasks?state=dead_letter&limit=10")
        assert page == cli_json(config, "task", "list", "--state", "dead_letter", "--json")

        dead = population.ids["dead_letter"][0]
        task = await api(f"/api/queues/jobs/tasks/{dead}")
        shown = cli_json(config, "task", "show", dead, "--json")
        assert isinstance(task, dict) and isinstance(shown, dict)
        assert {k: task[k] for k in shown} == shown

        assert await api("/api/runs") == cli_json(config, "pipeline", "list", "--json")
        run = await api(f"/api/runs/{population.run_id}")
        assert run == cli_json(config, "pipeline", "status", population.run_id, "--json")
