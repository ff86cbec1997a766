"""Dependencies between dev subtasks (`depends_on`), on both managers: dependency order
with independent branches in parallel, a failed dependency failing its dependants, the
spec's graph checked before anything runs, the priority rule, cancel and resume mid-DAG."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline import (
    DistributedPipelineManager,
    EnhancedPipelineManager,
    PriorityAssigner,
    RunStatus,
    SpecError,
)
from pipeline.dag import dependants, graph_problems
from pipeline.spec import parse_spec
from tests.support.pipeline import EXAMPLE, ROOT, settings
from tests.support.processes import agentic_argv
from utils.redis_queue.handlers import HandlerRegistry, PermanentFailure, TaskContext

pytestmark = pytest.mark.timeout(60)
ManagerFactory = Callable[..., EnhancedPipelineManager]
DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def dag_spec(edges: dict[str, list[str]], **extra: Any) -> dict[str, Any]:
    subtasks = [{"id": k, "description": f"do {k}", "depends_on": v} for k, v in edges.items()]
    return {"name": "dag", "subtasks": subtasks, **extra}


class Recorder:
    """Handlers for every stage that record when each dev subtask ran."""

    def __init__(self, dev_seconds: float = 0.2, fail: set[str] | None = None) -> None:
        self.dev_seconds = dev_seconds
        self.fail = fail or set()
        self.spans: dict[str, tuple[float, float]] = {}
        self.gates: dict[str, asyncio.Event] = {}

    async def dev(self, ctx: TaskContext) -> dict[str, Any]:
        subtask = ctx.payload["subtask"]["id"]
        started = time.monotonic()
        if subtask in self.gates:
            await self.gates[subtask].wait()
        await asyncio.sleep(self.dev_seconds)
        if subtask in self.fail:
            raise PermanentFailure(f"{subtask} cannot be built")
        self.spans[subtask] = (started, time.monotonic())
        return {"ok": True, "summary": subtask, "files": []}

    async def qa(self, ctx: TaskContext) -> dict[str, Any]:
        return {"ok": True, "passed": True, "summary": "all green"}

    async def deploy(self, ctx: TaskContext) -> dict[str, Any]:
        return {"ok": True, "artifact": "dag.tar.gz"}

    def registry(self) -> HandlerRegistry:
        return HandlerRegistry({"dev": self.dev, "qa": self.qa, "deploy": self.deploy})


async def test_a_diamond_runs_in_dependency_order_with_its_branches_in_parallel(
    pipeline_managers: ManagerFactory,
) -> None:
    recorder = Recorder()
    async with pipeline_managers(recorder.registry()) as manager:
        result = await manager.run(dag_spec(DIAMOND))
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    spans = recorder.spans
    assert spans["b"][0] >= spans["a"][1] and spans["c"][0] >= spans["a"][1]
    assert spans["d"][0] >= max(spans["b"][1], spans["c"][1])
    assert spans["b"][0] < spans["c"][1] and spans["c"][0] < spans["b"][1], "b and c overlap"
    assert [r.subtask_id for r in result.subtasks][-2:] == ["qa-0", "deploy"]


async def test_a_failed_dependency_fails_its_dependants_with_the_reason(
    pipeline_managers: ManagerFactory,
) -> None:
    recorder = Recorder(dev_seconds=0.05, fail={"a"})
    edges = {**DIAMOND, "e": []}  # e does not depend on a: it runs
    async with pipeline_managers(recorder.registry()) as manager:
        result = await manager.run(dag_spec(edges))
    assert result.status is RunStatus.FAILED
    states = {r.subtask_id: (str(r.state), r.error) for r in result.subtasks}
    assert states["a"][0] == "failed" and "cannot be built" in (states["a"][1] or "")
    assert states["b"] == ("failed", "its dependency a failed")
    assert states["c"] == ("failed", "its dependency a failed")
    assert states["d"][0] == "failed" and "dependency" in (states["d"][1] or "")
    assert states["e"][0] == "completed" and set(recorder.spans) == {"e"}
    reason = result.reasons[0]
    assert "dev subtask b was not run: its dependency a failed" in reason
    assert not any(r.stage == "qa" for r in result.subtasks)


async def test_cancel_mid_dag_ends_the_run_and_submits_nothing_more(
    pipeline_managers: ManagerFactory,
) -> None:
    recorder = Recorder(dev_seconds=0.01)
    recorder.gates["a"] = asyncio.Event()  # a never finishes on its own
    async with pipeline_managers(recorder.registry()) as manager:
        run_id = await manager.start_run(dag_spec(DIAMOND))
        while not any(
            r.subtask_id == "a" for r in (await manager.get_run(run_id)).subtasks.values()
        ):
            await asyncio.sleep(0.01)  # until a was submitted (no event to await here)
        await manager.cancel_run(run_id)
        result = await manager.wait_run(run_id)
    assert result.status is RunStatus.CANCELLED
    assert {r.subtask_id for r in result.subtasks} == {"a"}, "b, c and d were never submitted"


async def test_a_resumed_run_goes_on_mid_dag_without_rerunning_what_passed(
    tmp_path: Path, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    config = settings(tmp_path, redis_url=redis_url, queue_name=queue_name)
    first = Recorder(dev_seconds=0.01)
    first.gates["b"] = asyncio.Event()  # b hangs in the first manager's worker
    async with DistributedPipelineManager(settings=config, handlers=first.registry()) as m:
        run_id = await m.start_run(dag_spec(DIAMOND))
        while "c" not in first.spans:
            await asyncio.sleep(0.01)  # a and c have passed
    assert set(first.spans) == {"a", "c"}
    second = Recorder(dev_seconds=0.01)
    manager = DistributedPipelineManager(settings=config, handlers=second.registry(), resume=False)
    async with manager:
        assert await manager.resume_run(run_id)
        result = await manager.wait_run(run_id)
        tasks = {
            s.subtask_id: await manager.redis_queue.get_task(s.task_id) for s in result.subtasks
        }
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert set(second.spans) == {"b", "d"}, "a and c are not run again"
    assert tasks["a"] is not None and tasks["a"].attempts == 1
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


@pytest.mark.parametrize(
    ("edges", "named"),
    [
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "dependency cycle: a -> b -> c -> a"),
        ({"a": ["ghost"]}, "unknown subtask(s) ghost"),
        ({"a": ["a"]}, "'a' depends on itself"),
        ({"a": [], "b": ["a", "a"]}, "lists a more than once"),
    ],
)
def test_a_bad_graph_is_refused_naming_the_ids(edges: dict[str, list[str]], named: str) -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec(dag_spec(edges))
    assert named in str(refused.value)


def test_a_duplicate_subtask_id_is_refused() -> None:
    data = {"name": "dup", "subtasks": [{"id": "a", "description": "x"}] * 2}
    with pytest.raises(SpecError, match="repeated: a"):
        parse_spec(data)


def test_graph_checks_at_the_extremes() -> None:
    chain = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(10_000)}
    assert graph_problems(chain) == []
    counts = dependants(chain)
    assert counts["s0"] == 9_999 and counts["s9999"] == 0
    loop = {f"s{i}": [f"s{(i + 1) % 10_000}"] for i in range(10_000)}
    (problem,) = graph_problems(loop)
    assert problem.startswith("dependency cycle: ") and "(10000 subtasks)" in problem
    assert len(problem) < 300
    wide = {f"w{i}": ["root"] for i in range(10_000)} | {"root": []}
    assert dependants(wide)["root"] == 10_000


def test_a_subtask_many_others_wait_on_is_more_urgent() -> None:
    assigner = PriorityAssigner()
    counts = dependants(DIAMOND)
    assert counts == {"a": 3, "b": 1, "c": 1, "d": 0}
    base = assigner.assign_priority({"stage": "dev"})
    assert assigner.assign_priority({"stage": "dev", "dependants": counts["a"]}) == base + 1
    assert assigner.assign_priority({"stage": "dev", "dependants": counts["b"]}) == base


def test_the_cli_refuses_a_bad_graph_with_exit_2_and_validate_checks_files(
    tmp_path: Path, config_env: dict[str, str]
) -> None:
    bad = tmp_path / "cycle.json"
    bad.write_text(json.dumps(dag_spec({"a": ["b"], "b": ["a"]})))
    for command in (["pipeline", "run", str(bad), "--local"], ["pipeline", "validate", str(bad)]):
        done = subprocess.run(
            agentic_argv(*command), cwd=ROOT, env=config_env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "dependency cycle: a -> b -> a" in done.stderr
        assert "Traceback" not in done.stderr
    missing = tmp_path / "missing_replay.json"
    missing.write_text(
        json.dumps(dag_spec(DIAMOND, model={"backend": "replay", "replay_file": "nope.json"}))
    )
    done = subprocess.run(
        agentic_argv("pipeline", "validate", str(missing)), cwd=ROOT, env=config_env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "nope.json" in done.stderr
    good = subprocess.run(
        agentic_argv("pipeline", "validate", str(EXAMPLE / "spec.json")), cwd=ROOT,
        env=config_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert good.returncode == 0 and "ok (2 dev subtask(s), 0 dependency edge(s))" in good.stdout


@pytest.fixture
def config_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIC_")}
    env["AGENTIC_PIPELINE__WORKSPACE_ROOT"] = str(tmp_path / "ws")
    env["AGENTIC_PIPELINE__DEPLOY_DIR"] = str(tmp_path / "deploy")
    return env
