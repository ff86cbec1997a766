"""The approval gate, on both managers: a run waits before deploy for approve / reject /
its timeout / a cancel, and the decision is part of its record; through Redis the wait
survives a manager killed with -9 and restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from agents import build_registry
from pipeline import (
    DistributedPipelineManager,
    EnhancedPipelineManager,
    PipelineError,
    RunEvent,
    RunStatus,
)
from tests.support.pipeline import EXAMPLE, ROOT, settings, spec
from tests.support.processes import agentic_argv, agentic_env, eventually
from tests.test_pipeline_dag import (
    DIAMOND,
    Recorder,
    dag_spec,
)
from utils.redis_queue import RedisTaskQueue
from utils.redis_queue.registry import list_workers

pytestmark = pytest.mark.timeout(90)
ManagerFactory = Callable[..., EnhancedPipelineManager]


class Gatekeeper:
    """An on_event listener that notes when a run reaches its gate."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()

    def __call__(self, event: RunEvent) -> None:
        if event.kind == "approval":
            self.waiting.set()


def gated(**approval: Any) -> dict[str, Any]:
    return dag_spec({"a": [], "b": ["a"]}, approval=approval)


async def test_approve_lets_the_run_deploy_and_is_recorded(
    pipeline_managers: ManagerFactory,
) -> None:
    gate = Gatekeeper()
    async with pipeline_managers(Recorder(dev_seconds=0.01).registry(), on_event=gate) as manager:
        run_id = await manager.start_run(gated())
        await gate.waiting.wait()
        waiting = await manager.get_run(run_id)
        assert waiting.status is RunStatus.AWAITING_APPROVAL
        assert not any(r.stage == "deploy" for r in waiting.subtasks.values())
        assert waiting.approval is not None and waiting.approval.summary["qa"]["passed"] is True
        standing = await manager.approve_run(run_id, by="alice", comment="ship it")
        assert standing["decision"] == "approved" and standing["by"] == "alice"
        result = await manager.wait_run(run_id)
        record = await manager.get_run(run_id)
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert result.subtasks[-1].stage == "deploy"
    gate_record = record.approval
    assert gate_record is not None and gate_record.decision == "approved"
    assert (gate_record.decided_by, gate_record.comment) == ("alice", "ship it")
    assert gate_record.decided_at is not None and gate_record.decided_at >= gate_record.requested_at


async def test_reject_fails_the_run_with_the_reason(pipeline_managers: ManagerFactory) -> None:
    gate = Gatekeeper()
    async with pipeline_managers(Recorder(dev_seconds=0.01).registry(), on_event=gate) as manager:
        run_id = await manager.start_run(gated())
        await gate.waiting.wait()
        await manager.reject_run(run_id, "not on a Friday", by="bob")
        again = await manager.approve_run(run_id, by="carol")  # the first decision stands
        result = await manager.wait_run(run_id)
        with pytest.raises(PipelineError, match="has ended"):
            await manager.approve_run(run_id)
    assert again["decision"] == "rejected" and again["by"] == "bob"
    assert result.status is RunStatus.FAILED
    assert result.reasons == ["deploy was rejected by bob: not on a Friday"]
    assert not any(r.stage == "deploy" for r in result.subtasks)


@pytest.mark.parametrize(("on_timeout", "status"), [("fail", "failed"), ("approve", "succeeded")])
async def test_a_gate_nobody_answers_times_out_as_configured(
    pipeline_managers: ManagerFactory, on_timeout: str, status: str
) -> None:
    async with pipeline_managers(Recorder(dev_seconds=0.01).registry()) as manager:
        result = await manager.run(gated(timeout_seconds=0.5, on_timeout=on_timeout))
        record = await manager.get_run(result.run_id)
    assert result.status == status, result.reasons
    assert record.approval is not None and record.approval.decided_by == "timeout"
    if on_timeout == "fail":
        assert result.reasons == ["deploy was timed out by timeout"]


async def test_cancel_ends_a_run_waiting_at_its_gate(pipeline_managers: ManagerFactory) -> None:
    gate = Gatekeeper()
    async with pipeline_managers(Recorder(dev_seconds=0.01).registry(), on_event=gate) as manager:
        run_id = await manager.start_run(gated())
        await gate.waiting.wait()
        await manager.cancel_run(run_id)
        result = await asyncio.wait_for(manager.wait_run(run_id), 10)
    assert result.status is RunStatus.CANCELLED


async def test_a_run_without_a_gate_cannot_be_approved(pipeline_managers: ManagerFactory) -> None:
    async with pipeline_managers(Recorder(dev_seconds=0.01).registry()) as manager:
        result = await manager.run(dag_spec(DIAMOND))
        with pytest.raises(PipelineError, match="no approval gate"):
            await manager.approve_run(result.run_id)


async def test_a_killed_manager_restarted_at_the_gate_goes_on_once_approved(
    tmp_path: Path, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    env = agentic_env(
        redis_url,
        queue_name,
        AGENTIC_PIPELINE__RUN_LOCK_SECONDS="1",
        AGENTIC_PIPELINE__WORKSPACE_ROOT=str(tmp_path / "workspaces"),
        AGENTIC_PIPELINE__DEPLOY_DIR=str(tmp_path / "deploy"),
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec("replay.json", approval={"stage": "deploy"})))
    manager_argv = agentic_argv("pipeline", "run", str(spec_file))
    with subprocess.Popen(
        manager_argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, start_new_session=True
    ) as first:
        assert first.stdout is not None
        run_id = ""
        for line in iter(first.stdout.readline, b""):
            if b"awaiting approval" in line:
                run_id = line.decode().split()[-1]
                break
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    assert run_id, "the run reached its gate"

    config = settings(tmp_path, redis_url=redis_url, queue_name=queue_name)
    manager = DistributedPipelineManager(settings=config, handlers=build_registry(config))
    async with manager:
        assert await eventually(manager.resume_runs, timeout=10) == [run_id]
        waiting = await manager.get_run(run_id)
        assert waiting.status is RunStatus.AWAITING_APPROVAL
        approve = subprocess.run(
            agentic_argv("pipeline", "approve", run_id, "--comment", "looks good", "--by", "dana"),
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert approve.returncode == 0, approve.stderr
        assert f"{run_id}: approved by dana" in approve.stdout
        result = await asyncio.wait_for(manager.wait_run(run_id), 60)
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    status = subprocess.run(
        agentic_argv("pipeline", "status", run_id),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "approval    before deploy: approved by dana: looks good" in status.stdout
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


async def test_the_gated_example_runs_in_order_and_waits_for_its_approval(
    tmp_path: Path, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    config = settings(tmp_path, redis_url=redis_url, queue_name=queue_name)
    gate = Gatekeeper()
    manager = DistributedPipelineManager(
        settings=config, handlers=build_registry(config), on_event=gate, resume=False
    )
    async with manager:
        run_id = await manager.start_run(EXAMPLE / "spec-gated.json")
        await gate.waiting.wait()
        await manager.approve_run(run_id, by="test")
        result = await asyncio.wait_for(manager.wait_run(run_id), 60)
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    dev = {r.subtask_id: r for r in result.subtasks if r.stage == "dev"}
    assert dev["textstats"].submitted_at >= (dev["calc"].finished_at or 0)
    assert result.artifact is not None
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


async def test_pipeline_run_starts_its_workers_with_the_concurrency_asked_for(
    tmp_path: Path, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    env = agentic_env(
        redis_url,
        queue_name,
        AGENTIC_PIPELINE__WORKSPACE_ROOT=str(tmp_path / "workspaces"),
        AGENTIC_PIPELINE__DEPLOY_DIR=str(tmp_path / "deploy"),
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec("replay.json", approval={"stage": "deploy"})))
    argv = agentic_argv(
        "pipeline", "run", str(spec_file), "--workers", "yes", "--concurrency", "12"
    )
    with subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, start_new_session=True
    ) as manager:
        assert manager.stdout is not None
        for line in iter(manager.stdout.readline, b""):
            if b"awaiting approval" in line:
                break  # the run waits at its gate: its workers are up
        config = settings(tmp_path, redis_url=redis_url, queue_name=queue_name)
        queue = RedisTaskQueue.from_settings(config, queue_name=config.pipeline_queue_name())
        async with queue:
            workers = [w for w in await list_workers(queue) if w.alive]
        os.killpg(manager.pid, signal.SIGKILL)
        manager.wait(10)
    assert {t for w in workers for t in w.task_types} == {"dev", "qa", "fix", "deploy"}
    assert {w.concurrency for w in workers} == {12}
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)
