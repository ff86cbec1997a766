"""The stage flow end to end with the real agents and the replay backend, on both
managers: in-process (EnhancedPipelineManager) and through Redis
(DistributedPipelineManager with a Worker serving the agents)."""

from __future__ import annotations

import asyncio
import json
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from agents import build_registry
from pipeline import (
    DistributedPipelineManager,
    EnhancedPipelineManager,
    PipelineResult,
    RunEvent,
    RunStatus,
    Stage,
)
from tests.support.pipeline import FIXED_DIV, passing_replay, settings, spec
from utils.metrics import PipelineMetrics
from utils.redis_queue import TaskFailed, TaskNotFound
from utils.redis_queue.handlers import PermanentFailure, TaskContext

pytestmark = pytest.mark.timeout(60)
ManagerFactory = Callable[..., EnhancedPipelineManager]


@pytest.fixture(params=["local", "redis"])
async def make_manager(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    raw_redis: Redis,
) -> AsyncIterator[ManagerFactory]:
    def factory(**kwargs: Any) -> EnhancedPipelineManager:
        config = settings(
            tmp_path, redis_url=redis_url, queue_name=queue_name, **kwargs.pop("config", {})
        )
        handlers = kwargs.pop("handlers", None) or build_registry(config)
        if request.param == "local":
            return EnhancedPipelineManager(handlers, settings=config, **kwargs)
        return DistributedPipelineManager(
            settings=config, handlers=handlers, resume=False, **kwargs
        )

    yield factory
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


def flow(result: PipelineResult) -> list[str]:
    return [f"{r.stage}:{r.subtask_id}" for r in sorted(result.subtasks, key=_order)]


def _order(record: Any) -> tuple[float, str]:
    return (record.submitted_at, record.subtask_id)


async def test_a_run_that_passes_qa_first_time_goes_straight_to_deploy(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    async with make_manager() as manager:
        result = await manager.run(spec(passing_replay(tmp_path)))

    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert flow(result) == ["dev:calc", "dev:textstats", "qa:qa-0", "deploy:deploy"]
    assert result.fix_rounds == 0 and result.reasons == []
    dev = result.results(Stage.DEV)
    assert sorted(f for r in dev for f in r["files"]) == [
        "calc.py", "test_calc.py", "test_textstats.py", "textstats.py",
    ]  # fmt: skip
    assert all(r.attempts == 1 and r.state == "completed" for r in result.subtasks)
    assert (
        result.usage.total_tokens
        == sum(r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"] for r in dev)
        > 0
    )
    (deploy,) = result.results(Stage.DEPLOY)
    assert Path(result.artifact or "").is_file() and deploy["artifact"] == result.artifact
    manifest = json.loads(Path(deploy["manifest"]).read_text())
    assert manifest["run_id"] == result.run_id
    assert manifest["qa_evidence"]["passed"] is True


async def test_failing_qa_runs_the_fix_loop_and_deploys_the_fixed_code(
    make_manager: ManagerFactory,
) -> None:
    events: list[RunEvent] = []
    async with make_manager(on_event=events.append) as manager:
        result = await manager.run(spec("replay.json"))

    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert flow(result)[2:] == ["qa:qa-0", "fix:fix-1", "qa:qa-1", "deploy:deploy"]
    assert result.fix_rounds == 1
    first_qa, second_qa = result.results(Stage.QA)
    assert first_qa["passed"] is False and "test_div_by_zero" in first_qa["output"]
    assert second_qa["passed"] is True and second_qa["tests_run"] == first_qa["tests_run"]
    with tarfile.open(result.artifact or "") as tar:
        names = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers()}
        calc = tar.extractfile(names["calc.py"])
        assert calc is not None and FIXED_DIV.split(" from")[0] in calc.read().decode()
    kinds = [(e.kind, e.stage) for e in events if e.kind in ("stage", "ended")]
    assert kinds == [
        ("stage", Stage.DEV), ("stage", Stage.QA), ("stage", Stage.FIX), ("stage", Stage.QA),
        ("stage", Stage.DEPLOY), ("ended", None),
    ]  # fmt: skip


async def test_a_run_that_never_passes_fails_with_the_reasons_and_deploys_nothing(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    async with make_manager(config={"pipeline": {"max_fix_rounds": 2}}) as manager:
        result = await manager.run(spec("replay_never_passes.json", max_fix_rounds=None))

    assert result.status is RunStatus.FAILED
    assert result.fix_rounds == 2
    assert flow(result)[2:] == ["qa:qa-0", "fix:fix-1", "qa:qa-1", "fix:fix-2", "qa:qa-2"]
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith("QA still fails after 2 fix round(s)")
    assert result.artifact is None and not (tmp_path / "deploy").exists()


async def test_a_subtask_that_keeps_failing_fails_the_run_with_its_error(
    make_manager: ManagerFactory,
) -> None:
    broken = spec("replay.json")
    broken["subtasks"][1]["id"] = "not-recorded"  # the replay has no reply for it
    async with make_manager(config={"max_retries": 0}) as manager:
        result = await manager.run(broken)

    assert result.status is RunStatus.FAILED
    assert "dev subtask not-recorded failed" in result.reasons[0]
    assert "dev:not-recorded" in result.reasons[0]  # the missing replay key is named
    assert [r.stage for r in result.subtasks] == [Stage.DEV, Stage.DEV]  # QA never ran


async def test_a_failed_subtask_counts_every_attempt_in_the_run_record(
    make_manager: ManagerFactory,
) -> None:
    runs: list[int] = []

    async def always_fails(ctx: TaskContext) -> Any:
        runs.append(ctx.attempt)
        raise RuntimeError(f"attempt {ctx.attempt} broke")

    async with make_manager(config={"max_retries": 2}, handlers={"dev": always_fails}) as manager:
        result = await manager.run(spec("replay.json"))
        state = await manager.get_run(result.run_id)

    assert result.status is RunStatus.FAILED
    records = [r for r in state.subtasks.values() if r.stage == Stage.DEV]
    assert records and all(r.attempts == 3 for r in records), [r.attempts for r in records]
    assert all(r.state == "failed" and "attempt 3 broke" in (r.error or "") for r in records)
    assert len(runs) == 3 * len(records)


async def test_runs_are_counted_by_outcome_and_stages_timed(make_manager: ManagerFactory) -> None:
    registry = CollectorRegistry()
    async with make_manager(metrics=PipelineMetrics(registry)) as manager:
        await manager.run(spec("replay.json"))
        await manager.run(spec("replay_never_passes.json", max_fix_rounds=0))

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert value("agentic_pipeline_runs_total", outcome="succeeded") == 1
    assert value("agentic_pipeline_runs_total", outcome="failed") == 1
    assert value("agentic_pipeline_runs_active") == 0
    assert value("agentic_pipeline_stage_seconds_count", task_type="qa") == 3
    assert value("agentic_pipeline_stage_seconds_count", task_type="deploy") == 1
    # the recorded usage: dev 801 + 870 tokens in both runs, fix 1,765 in the first only
    assert value("agentic_pipeline_tokens_total", task_type="dev") == 2 * (801 + 870)
    assert value("agentic_pipeline_tokens_total", task_type="fix") == 1765


async def test_many_runs_at_once_each_get_their_own_workspace_and_artifact(
    make_manager: ManagerFactory,
) -> None:
    async with make_manager() as manager:
        run_ids = [await manager.start_run(spec("replay.json")) for _ in range(3)]
        results = [await manager.wait_run(run_id) for run_id in run_ids]
        listed = [r.run_id for r in await manager.list_runs()]

    assert [r.status for r in results] == [RunStatus.SUCCEEDED] * 3
    assert len({r.artifact for r in results}) == 3
    assert sorted(listed[:3]) == sorted(run_ids)


async def test_the_in_process_queue_runs_subtasks_by_priority_then_fifo(tmp_path: Path) -> None:
    started, gate = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def record(ctx: TaskContext) -> str:
        if ctx.task_id == "first":
            started.set()
            await gate.wait()  # holds the only worker while the rest queue up
        order.append(ctx.task_id)
        return ctx.task_id

    kinds = [("dev", {}), ("dev", {"background": True}), ("fix", {"blocking": True}), ("qa", {})]
    handlers = {"dev": record, "qa": record, "fix": record}
    manager = EnhancedPipelineManager(handlers, settings=settings(tmp_path), workers=1)
    async with manager:
        await manager.submit_dev_task("first", {"id": "first"})
        await started.wait()
        expected = []
        for n in range(100):
            stage, flags = kinds[n * 7 % 4]
            await manager.submit_task(stage, f"t{n}", {"id": f"s{n}", **flags})
            expected.append((-manager.priority_for(stage, flags), n, f"t{n}"))
        gate.set()
        results = [await manager.collect_result(f"t{n}") for n in range(100)]

    assert results == [f"t{n}" for n in range(100)]
    assert order == ["first"] + [task_id for _, _, task_id in sorted(expected)]


async def test_the_in_process_queue_retries_like_the_redis_queue(tmp_path: Path) -> None:
    calls: dict[str, int] = {}

    async def flaky(ctx: TaskContext) -> int:
        calls[ctx.task_id] = calls.get(ctx.task_id, 0) + 1
        if ctx.task_id == "poison":
            raise PermanentFailure("cannot be done")
        if calls[ctx.task_id] < 3:
            raise RuntimeError("transient")
        return ctx.attempt

    config = settings(tmp_path, retry={"base_seconds": 0.01, "cap_seconds": 0.02})
    async with EnhancedPipelineManager({"dev": flaky}, settings=config) as manager:
        await manager.submit_dev_task("flaky", {"id": "flaky"})
        await manager.submit_dev_task("poison", {"id": "poison"})
        await manager.submit_qa_task("no-handler", {"id": "x"})
        assert await manager.collect_result("flaky") == 3
        with pytest.raises(TaskFailed, match="dead_letter: PermanentFailure: cannot be done"):
            await manager.collect_result("poison")
        with pytest.raises(TaskFailed, match="no handler for task type 'qa'"):
            await manager.collect_result("no-handler")
        with pytest.raises(TaskNotFound):
            await manager.collect_result("never-submitted")
    assert calls == {"flaky": 3, "poison": 1}


async def test_stopping_the_in_process_manager_mid_run_ends_the_run_cancelled(
    tmp_path: Path,
) -> None:
    started = asyncio.Event()

    async def endless(ctx: TaskContext) -> None:
        started.set()
        await asyncio.Event().wait()

    manager = EnhancedPipelineManager({"dev": endless}, settings=settings(tmp_path))
    await manager.start()
    run_id = await manager.start_run(spec("replay.json"))
    waiting = asyncio.create_task(manager.wait_run(run_id))
    await started.wait()
    await manager.stop()  # nothing could resume a run kept in memory
    result = await waiting
    assert result.status is RunStatus.CANCELLED and result.reasons == ["the manager stopped"]
    assert (await manager.get_run(run_id)).status is RunStatus.CANCELLED
