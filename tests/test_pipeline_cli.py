"""`agentic pipeline ...` as a user runs it: real subprocesses, real worker processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.errors import SpecError
from pipeline.spec import load_spec, parse_spec
from tests.support.model_server import RecordedModel
from tests.support.pipeline import EXAMPLE, ROOT, spec
from tests.support.processes import agentic_argv, agentic_env
from tests.support.redis_server import free_port

pytestmark = pytest.mark.timeout(120)


def agentic(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agentic_argv(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(autouse=True)
async def _clean_queue(raw_redis: Redis, queue_name: str) -> AsyncIterator[None]:
    yield
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


def test_the_example_runs_from_a_clean_environment_on_an_embedded_redis(tmp_path: Path) -> None:
    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AGENTIC_REDIS_URL": nothing_listens,
        "OTEL_TRACES_EXPORTER": "console",
        "AGENTIC_TRACES_FILE": str(tmp_path / "traces.jsonl"),
    }
    done = agentic(
        "pipeline", "run", str(EXAMPLE / "spec.json"), "--metrics-port", "0", env=env, cwd=tmp_path
    )

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "embedded, stopped at the end" in out
    assert "started one `agentic worker` process per task type (dev, qa, fix, deploy)" in out
    assert "FAILED: 1 of 8 tests failed" in out and "passed: 8 tests passed" in out
    summary = out[out.index("\nRun ") :]
    assert " succeeded in " in summary
    assert "stages      dev -> qa -> fix -> qa -> deploy" in summary
    assert "subtasks    6 (attempts: 6)" in summary and "fix rounds  1" in summary
    assert "tokens      3,436 (prompt 2,364, completion 1,072)" in summary
    assert "metrics     http://127.0.0.1:" in summary
    artifact = Path(summary.split("artifact", 1)[1].split()[0])
    assert artifact.is_file() and artifact.parent == tmp_path / ".agentic" / "deploy"
    trace_id = summary.split("trace id", 1)[1].split()[0]
    spans = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    in_trace = [s["name"] for s in spans if s["context"]["trace_id"] == "0x" + trace_id]
    assert "pipeline.run calculator" in in_trace
    assert sum(name.startswith("process ") for name in in_trace) == 6  # workers' spans too


def test_run_status_list_and_cancel_speak_json(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    env = agentic_env(redis_url, queue_name)
    ran = agentic(
        "pipeline", "run", str(EXAMPLE / "spec.json"), "--json", "--workers", "yes",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    (result,) = json.loads(ran.stdout)
    run_id = result["run_id"]
    assert result["status"] == "succeeded" and result["fix_rounds"] == 1

    status = agentic("pipeline", "status", run_id, "--json", env=env, cwd=tmp_path)
    stored = json.loads(status.stdout)
    assert stored["status"] == "succeeded" and stored["artifact"] == result["artifact"]
    assert len(stored["subtasks"]) == 6

    listed = json.loads(agentic("pipeline", "list", "--json", env=env, cwd=tmp_path).stdout)
    assert [row["run_id"] for row in listed] == [run_id]
    assert listed[0]["tokens"] == 3436

    human = agentic("pipeline", "status", run_id, env=env, cwd=tmp_path).stdout
    assert "succeeded" in human and "fix     fix-1" in human

    finished = agentic("pipeline", "cancel", run_id, env=env, cwd=tmp_path)
    assert finished.returncode == 0 and finished.stdout.strip() == f"{run_id}: succeeded"
    missing = agentic("pipeline", "status", "no-such-run", env=env, cwd=tmp_path)
    assert missing.returncode == 1 and "no pipeline run 'no-such-run'" in missing.stderr


def test_a_run_that_never_passes_exits_1_with_its_reason(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec("replay_never_passes.json", max_fix_rounds=1)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = agentic("pipeline", "run", str(spec_file), "--local", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert " failed in " in done.stdout
    assert "reason      QA still fails after 1 fix round(s)" in done.stdout
    assert "artifact    (none)" in done.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"name": "x", "subtasks": []}', "subtasks"),
        ('{"name": "x", "model": {"api_key": "k"}, "subtasks": [{"id": "a", "description": "d"}]}',
         "must not carry model keys"),
    ],
)  # fmt: skip
def test_a_bad_spec_is_a_usage_error(tmp_path: Path, content: str, message: str) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(content)
    done = agentic("pipeline", "run", str(spec_file), "--local", env=dict(os.environ), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr
    missing = agentic("pipeline", "run", "nope.json", "--local", env=dict(os.environ), cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read pipeline spec" in missing.stderr


SENTINEL = "sk-SENTINEL-4f9a2c"


@pytest.mark.parametrize(
    "spec_doc",
    [
        {
            "name": "x",
            "model": {"api_key": SENTINEL},
            "subtasks": [{"id": "a", "description": "d"}],
        },
        {"name": "x", "model": {"API_KEY": SENTINEL, "backend": 3}, "subtasks": []},
        {"name": "x", "subtasks": [{"id": "a", "description": "d", "token": SENTINEL}]},
        {"name": "x", "password": SENTINEL, "subtasks": [{"id": "a"}]},
    ],
    ids=["model-key", "model-key-upper", "extra-subtask-field", "extra-top-field"],
)
def test_a_refused_spec_never_echoes_a_secret(tmp_path: Path, spec_doc: dict[str, Any]) -> None:
    """Neither the CLI's message nor the API's exception (nor its cause) quotes a value."""
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec_doc))
    done = agentic("pipeline", "run", str(spec_file), "--local", env=dict(os.environ), cwd=tmp_path)
    assert done.returncode == 2 and "not a valid pipeline spec" in done.stderr, done.stderr
    assert SENTINEL not in done.stdout + done.stderr and "Traceback" not in done.stderr
    with pytest.raises(SpecError) as refused:
        load_spec(spec_file)
    assert SENTINEL not in str(refused.value) + repr(refused.value)
    assert refused.value.__cause__ is None and refused.value.__context__ is None
    with pytest.raises(SpecError) as refused:
        parse_spec(spec_doc)
    assert SENTINEL not in str(refused.value) and refused.value.__cause__ is None


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "pipeline", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0
    for command in ("run", "resume", "status", "list", "cancel"):
        assert command in done.stdout


async def test_a_worker_serves_the_agents_model_usage_on_its_metrics_port(
    tmp_path: Path, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    from tests.test_metrics import _scrape_when
    from utils.redis_queue import RedisTaskQueue

    payload = {
        "subtask": {"id": "calc", "description": "calculator", "files": ["calc.py"]},
        "run_id": "r-metrics",
        "workspace": str(tmp_path),
        "model": spec()["model"],
    }
    async with RedisTaskQueue(queue_name=queue_name, redis_url=redis_url) as queue:
        await queue.enqueue("r-metrics:dev:calc", "dev", payload)
    port = free_port()
    worker = subprocess.Popen(
        agentic_argv("worker", "--app", "agents.app:registry", "--metrics-port", str(port)),
        cwd=ROOT,
        env=agentic_env(
            redis_url, queue_name, AGENTIC_PIPELINE__WORKSPACE_ROOT=str(tmp_path.parent)
        ),
    )
    try:
        key = ("agentic_model_prompt_tokens_total", (("task_type", "dev"),))
        samples = await _scrape_when(port, lambda s: key in s)
    finally:
        worker.terminate()
        assert worker.wait(15) == 0
    assert samples[key] == 412  # the recorded reply's usage
    assert samples[("agentic_model_completion_tokens_total", (("task_type", "dev"),))] == 389
    assert (tmp_path / "calc.py").is_file()


def test_the_pipeline_runs_on_an_openai_compatible_endpoint_set_on_the_workers(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    model = RecordedModel()
    try:
        without_model = {k: v for k, v in spec().items() if k != "model"}
        (tmp_path / "spec.json").write_text(json.dumps(without_model))
        env = agentic_env(
            redis_url,
            queue_name,
            AGENTIC_MODEL__BACKEND="openai",
            AGENTIC_MODEL__BASE_URL=model.url,
            AGENTIC_MODEL__API_KEY="sk-test-secret",
            AGENTIC_MODEL__PROMPT_PRICE_PER_1K="0.001",
        )
        done = agentic(
            "pipeline", "run", "spec.json", "--workers", "yes", "--json", env=env, cwd=tmp_path
        )
        status = agentic("pipeline", "status", json.loads(done.stdout)[0]["run_id"], "--json",
                         env=env, cwd=tmp_path)  # fmt: skip
    finally:
        model.close()
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["fix_rounds"] == 1
    assert result["usage"]["prompt_tokens"] == 2364
    assert result["usage"]["cost_usd"] == pytest.approx(2364 / 1000 * 0.001)
    assert len(model.authorizations) == 4  # the 429, dev x2, fix
    assert set(model.authorizations) == {"Bearer sk-test-secret"}
    for text in (done.stdout, done.stderr, status.stdout):
        assert "sk-test-secret" not in text


def test_a_busy_metrics_port_is_a_usage_error_that_starts_no_workers(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = agentic(
            "pipeline", "run", str(EXAMPLE / "spec.json"), "--metrics-port", port,
            "--workers", "yes", env=agentic_env(redis_url, queue_name), cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 2 and f"cannot serve metrics on port {port}" in done.stderr
    assert "workers: started" not in done.stdout


async def test_worker_processes_that_die_are_started_again(redis_url: str, queue_name: str) -> None:
    from pipeline.launcher import StageWorkers

    workers = StageWorkers(redis_url, queue_name, concurrency={"dev": 1, "qa": 1})
    workers.start()
    try:
        first = workers.processes["dev"]
        first.kill()
        first.wait(10)
        assert workers.respawn_dead() == ["dev"]
        second = workers.processes["dev"]
        assert second.pid != first.pid and workers.dead() == []
    finally:
        workers.stop()
    assert second.poll() is not None  # stop() ends them all


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_runs_the_example_to_a_deployed_artifact(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AGENTIC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # none: embedded
        "AGENTIC_PIPELINE__WORKSPACE_ROOT": str(tmp_path / "workspaces"),
        "AGENTIC_PIPELINE__DEPLOY_DIR": str(tmp_path / "deploy"),
        "AGENTIC_TRACES_FILE": str(tmp_path / "traces.jsonl"),
    }
    done = subprocess.run(
        ["make", "--no-print-directory", "demo"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout[done.stdout.index("\nRun ") :]
    assert " succeeded in " in summary and "fix rounds  1" in summary
    assert "cost $0.0010" in summary  # priced like gpt-4o-mini by the Makefile
    artifact = Path(summary.split("artifact", 1)[1].split()[0])
    assert artifact.is_file() and artifact.parent == tmp_path / "deploy"
    assert f"spans in {tmp_path / 'traces.jsonl'}" in summary
    # QA ran in the sandbox: bubblewrap where installed (make test installs it)
    manifest = json.loads(Path(str(artifact).replace(".tar.gz", ".manifest.json")).read_text())
    expected = "bubblewrap" if shutil.which("bwrap") else "unshare"
    assert manifest["qa_evidence"]["sandbox"] == expected
    assert manifest["qa_evidence"]["limit"] is None
