"""DistributedPipelineManager: priorities through Redis, run state in Redis, cancel,
resume after the manager is killed, and one trace per run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from agents import build_registry
from pipeline import (
    DistributedPipelineManager,
    RunEvent,
    RunInterrupted,
    RunStatus,
    RunStoreError,
    Stage,
)
from tests.support.pipeline import ROOT, settings, spec
from tests.support.processes import agentic_argv, agentic_env, eventually
from tests.support.redis_server import RedisServer, free_port
from utils.config import Settings
from utils.redis_queue import RedisTaskQueue, RedisUnavailable, TaskState
from utils.redis_queue.handlers import HandlerRegistry, TaskContext
from utils.redis_queue.worker import Worker

pytestmark = pytest.mark.timeout(60)


class EventWaiter:
    """A run's on_event listener with an asyncio.Event per awaited kind of event."""

    def __init__(self) -> None:
        self._wanted: list[tuple[str, str | None, asyncio.Event]] = []
        self._joined: list[tuple[asyncio.Event, list[asyncio.Event]]] = []

    def event(self, kind: str, subtask_id: str | None = None) -> asyncio.Event:
        happened = asyncio.Event()
        self._wanted.append((kind, subtask_id, happened))
        return happened

    def all_dev_queued(self) -> asyncio.Event:
        """Set once both dev subtasks of the example were sent (in either order)."""
        both = asyncio.Event()
        calc, textstats = self.event("submitted", "calc"), self.event("submitted", "textstats")
        self._joined.append((both, [calc, textstats]))
        return both

    def __call__(self, event: RunEvent) -> None:
        for kind, subtask_id, happened in self._wanted:
            if event.kind == kind and subtask_id in (None, event.subtask_id):
                happened.set()
        for both, parts in self._joined:
            if all(part.is_set() for part in parts):
                both.set()


@pytest.fixture
def config(tmp_path: Path, redis_url: str, queue_name: str) -> Settings:
    return settings(tmp_path, redis_url=redis_url, queue_name=queue_name)


@pytest.fixture(autouse=True)
async def _clean_queue(raw_redis: Redis, queue_name: str) -> AsyncIterator[None]:
    yield
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


async def test_subtasks_are_dequeued_by_assigned_priority_then_in_submission_order(
    config: Settings,
) -> None:
    kinds = [
        ("dev", {"description": "new feature"}),  # NORMAL
        ("dev", {"description": "docs", "background": True}),  # LOW
        ("fix", {"description": "unblock the deploy", "blocking": True}),  # CRITICAL
        ("qa", {"description": "check"}),  # HIGH
    ]
    submitted: list[tuple[int, int, str]] = []
    async with DistributedPipelineManager(settings=config, resume=False) as manager:
        for n in range(200):  # interleaved, as a busy pipeline would send them
            stage, subtask = kinds[n * 7 % 4]
            task_id = f"load-{n}"
            await manager.submit_task(stage, task_id, {"id": f"s{n}", **subtask})
            submitted.append((-manager.priority_for(stage, subtask), n, task_id))

        order: list[str] = []

        async def record(ctx: TaskContext) -> None:
            order.append(ctx.task_id)

        registry = HandlerRegistry({"dev": record, "qa": record, "fix": record})
        queue = RedisTaskQueue.from_settings(config)
        async with queue:
            await Worker(queue, registry, concurrency=1, burst=True).run()

    assert order == [task_id for _, _, task_id in sorted(submitted)]
    assert {p for p, _, _ in submitted} == {-0, -1, -2, -3}


async def test_run_state_lives_in_redis_and_another_manager_reads_it(
    config: Settings, raw_redis: Redis, queue_name: str
) -> None:
    manager = DistributedPipelineManager(settings=config, handlers=build_registry(config))
    async with manager:
        result = await manager.run(spec("replay.json"))
    assert result.status is RunStatus.SUCCEEDED

    async with DistributedPipelineManager(settings=config, resume=False) as reader:
        stored = await reader.get_run(result.run_id)
        listed = await reader.list_runs()
    assert stored.status is RunStatus.SUCCEEDED and stored.artifact == result.artifact
    assert [r.task_id for r in stored.subtasks.values()] == [r.task_id for r in result.subtasks]
    assert [r.run_id for r in listed] == [result.run_id]
    base = f"agentic:{{{queue_name}}}:"
    assert await raw_redis.scard(base + "active_runs") == 0
    assert 0 < await raw_redis.ttl(base + f"run:{result.run_id}") <= config.pipeline.run_ttl_seconds
    assert not await raw_redis.exists(base + f"run_lock:{result.run_id}")


async def test_cancel_drops_queued_subtasks_and_ends_the_run_cancelled(config: Settings) -> None:
    on_event = EventWaiter()
    submitted = on_event.all_dev_queued()

    async with DistributedPipelineManager(settings=config, on_event=on_event) as manager:
        run_id = await manager.start_run(spec("replay.json"))  # no worker: they wait
        await submitted.wait()
        assert await manager.cancel_run(run_id) is RunStatus.CANCELLED
        result = await manager.wait_run(run_id)
        tasks = [await manager.redis_queue.get_task(r.task_id) for r in result.subtasks]

    assert result.status is RunStatus.CANCELLED and result.reasons == ["cancelled"]
    assert [t.state for t in tasks if t] == [TaskState.CANCELLED, TaskState.CANCELLED]


async def test_cancel_stops_a_running_subtask(config: Settings) -> None:
    started = asyncio.Event()

    async def endless_dev(ctx: TaskContext) -> None:
        started.set()
        await asyncio.Event().wait()

    handlers = HandlerRegistry({"dev": endless_dev})
    async with DistributedPipelineManager(settings=config, handlers=handlers) as manager:
        one = spec("replay.json")
        one["subtasks"] = one["subtasks"][:1]
        run_id = await manager.start_run(one)
        await started.wait()
        assert await manager.cancel_run(run_id) is RunStatus.CANCELLED
        (record,) = (await manager.get_run(run_id)).subtasks.values()
        task = await manager.redis_queue.get_task(record.task_id)

    assert record.state == "cancelled"
    assert task is not None and task.state == TaskState.CANCELLED


async def test_cancel_from_another_process_is_seen_by_the_driving_manager(
    config: Settings,
) -> None:
    on_event = EventWaiter()
    submitted = on_event.event("submitted")

    async with DistributedPipelineManager(settings=config, on_event=on_event) as driver:
        run_id = await driver.start_run(spec("replay.json"))
        await submitted.wait()
        async with DistributedPipelineManager(settings=config, resume=False) as other:
            assert await other.cancel_run(run_id) is RunStatus.RUNNING  # the driver ends it
        result = await driver.wait_run(run_id)
    assert result.status is RunStatus.CANCELLED


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        _kill_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _manager_env(tmp_path: Path, redis_url: str, queue_name: str, lock_seconds: int) -> Any:
    return agentic_env(
        redis_url,
        queue_name,
        AGENTIC_PIPELINE__RUN_LOCK_SECONDS=str(lock_seconds),
        AGENTIC_PIPELINE__WORKSPACE_ROOT=str(tmp_path / "workspaces"),
        AGENTIC_PIPELINE__DEPLOY_DIR=str(tmp_path / "deploy"),
    )


def _manager_until(
    tmp_path: Path, env: Any, processes: list[subprocess.Popen[bytes]], subtask: bytes
) -> subprocess.Popen[bytes]:
    """`agentic pipeline run` of the example, returned once it printed that `subtask` was
    queued."""
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec("replay.json")))
    argv = agentic_argv("pipeline", "run", str(spec_file), "--workers", "no")
    manager = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    processes.append(manager)
    assert manager.stdout is not None
    for line in iter(manager.stdout.readline, b""):  # its progress lines
        if subtask in line and b"queued" in line:
            return manager
    raise AssertionError(f"the manager ended before {subtask!r} was queued")


async def test_a_killed_manager_is_resumed_without_rerunning_finished_subtasks(
    config: Settings,
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    env = _manager_env(tmp_path, redis_url, queue_name, lock_seconds=1)
    # Only dev is served: the manager gets through dev and then waits on QA.
    dev_worker = agentic_argv("worker", "--app", "agents.app:registry", "--types", "dev")
    processes.append(subprocess.Popen(dev_worker, cwd=ROOT, env=env, start_new_session=True))
    _kill_group(_manager_until(tmp_path, env, processes, b"qa-0"))

    async with DistributedPipelineManager(settings=config, resume=False) as reader:
        (before,) = await reader.list_runs()
    dev_before = {k: r for k, r in before.subtasks.items() if r.stage is Stage.DEV}
    assert before.status is RunStatus.RUNNING and len(dev_before) == 2

    manager = DistributedPipelineManager(settings=config, handlers=build_registry(config))
    async with manager:
        # The dead manager's lock expires after 1 s; then the run can be taken over.
        assert await eventually(manager.resume_runs, timeout=10) == [before.run_id]
        result = await manager.wait_run(before.run_id)
        tasks = {k: await manager.redis_queue.get_task(k) for k in dev_before}

    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert [r.stage for r in result.subtasks][2:] == ["qa", "fix", "qa", "deploy"]
    for task_id, record in dev_before.items():
        after = next(r for r in result.subtasks if r.task_id == task_id)
        assert after.finished_at == record.finished_at  # recorded once, not re-run
        task = tasks[task_id]
        assert task is not None and task.attempts == 1


async def test_resume_right_after_a_kill_says_the_run_is_still_held_and_until_when(
    tmp_path: Path, redis_url: str, queue_name: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = _manager_env(tmp_path, redis_url, queue_name, lock_seconds=60)
    _kill_group(_manager_until(tmp_path, env, processes, b"dev"))  # no worker: it waits on dev
    resume = subprocess.run(
        agentic_argv("pipeline", "resume", "--workers", "no"),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert resume.returncode == 0, resume.stderr
    assert "is still held by manager" in resume.stdout and "until" in resume.stdout
    assert "no run to resume" not in resume.stdout


async def test_one_trace_covers_a_run_its_stages_and_its_subtasks(
    config: Settings, spans: InMemorySpanExporter
) -> None:
    async with DistributedPipelineManager(settings=config, handlers=build_registry(config)) as m:
        result = await m.run(spec("replay.json"))

    finished = list(spans.get_finished_spans())  # settle spans too: each joins its task's trace
    by_id: dict[int, Any] = {s.context.span_id: s for s in finished}
    (root,) = [s for s in finished if s.name == "pipeline.run calculator"]
    assert result.trace_id == format(root.context.trace_id, "032x")
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}
    stages = [s for s in finished if s.name.startswith("pipeline.stage ")]
    assert [s.name.split()[1] for s in sorted(stages, key=lambda s: s.start_time or 0)] == [
        "dev", "qa", "fix", "qa", "deploy",
    ]  # fmt: skip
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in stages)
    sends = [s for s in finished if s.name.startswith("send ")]
    processes = [s for s in finished if s.name.startswith("process ")]
    assert len(sends) == len(processes) == len(result.subtasks) == 6
    for send in sends:
        assert send.parent is not None and by_id[send.parent.span_id] in stages
    for process in processes:
        assert process.parent is not None and by_id[process.parent.span_id] in sends


async def test_a_run_waits_out_a_redis_outage_longer_than_its_lock_and_finishes(
    tmp_path: Path,
) -> None:
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    server.start()
    try:
        config = settings(
            tmp_path, redis_url=server.url, queue_name="outage", pipeline={"run_lock_seconds": 1}
        )
        on_event = EventWaiter()
        submitted = on_event.all_dev_queued()
        waiting = on_event.event("waiting")

        async with DistributedPipelineManager(settings=config, on_event=on_event) as manager:
            run_id = await manager.start_run(spec("replay.json"))
            await submitted.wait()  # the dev subtasks are queued; no worker yet
            server.kill()
            await waiting.wait()  # the run noticed, and waits instead of failing
            await asyncio.sleep(1.2)  # outlast the 1 s run lock: its key expires meanwhile
            server.start()
            queue = RedisTaskQueue.from_settings(config)
            async with queue:
                worker = Worker(queue, build_registry(config), concurrency=4)
                serving = asyncio.create_task(worker.run())
                result = await manager.wait_run(run_id)
                worker.request_stop()
                await serving
    finally:
        server.cleanup()
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert all(r.attempts == 1 for r in result.subtasks)


async def test_a_manager_that_lost_its_lock_stops_driving_and_writes_nothing(
    config: Settings, raw_redis: Redis, queue_name: str
) -> None:
    on_event = EventWaiter()
    submitted = on_event.all_dev_queued()

    first = DistributedPipelineManager(settings=config, on_event=on_event, resume=False)
    second = DistributedPipelineManager(settings=config, resume=False)
    async with first, second:
        run_id = await first.start_run(spec("replay.json"))
        await submitted.wait()
        # The first manager stalls past its lock (simulated: the lock goes) and a second
        # one takes the run over.
        await raw_redis.delete(f"agentic:{{{queue_name}}}:run_lock:{run_id}")
        assert await second.resume_runs() == [run_id]
        queue = RedisTaskQueue.from_settings(config)
        async with queue:
            worker = Worker(queue, build_registry(config), concurrency=4)
            serving = asyncio.create_task(worker.run())
            with pytest.raises(RunInterrupted, match="another manager drives it now"):
                await first.wait_run(run_id)
            result = await second.wait_run(run_id)
            worker.request_stop()
            await serving
            tasks = [await queue.get_task(r.task_id) for r in result.subtasks]

    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert [t.attempts for t in tasks if t] == [1] * 6  # no subtask ran twice


async def test_cancelling_a_run_that_already_ended_leaves_it_as_it_ended(
    config: Settings,
) -> None:
    async with DistributedPipelineManager(settings=config, handlers=build_registry(config)) as m:
        result = await m.run(spec("replay.json"))
    async with DistributedPipelineManager(settings=config, resume=False) as other:
        assert await other.cancel_run(result.run_id) is RunStatus.SUCCEEDED
        stored = await other.get_run(result.run_id)
    assert stored.status is RunStatus.SUCCEEDED and stored.artifact == result.artifact


async def test_cancelling_a_run_nobody_drives_ends_it_and_its_subtasks(
    config: Settings, raw_redis: Redis, queue_name: str
) -> None:
    on_event = EventWaiter()
    submitted = on_event.all_dev_queued()

    driver = DistributedPipelineManager(settings=config, on_event=on_event, resume=False)
    await driver.start()
    run_id = await driver.start_run(spec("replay.json"))
    await submitted.wait()
    waiting = asyncio.create_task(driver.wait_run(run_id))
    await driver.stop()  # the driver goes (its lock with it); the run stays saved
    with pytest.raises(RunInterrupted, match="its manager stopped"):
        await waiting
    async with DistributedPipelineManager(settings=config, resume=False) as other:
        assert (await other.get_run(run_id)).status is RunStatus.RUNNING
        assert await other.cancel_run(run_id) is RunStatus.CANCELLED
        stored = await other.get_run(run_id)
        tasks = [await other.redis_queue.get_task(k) for k in stored.subtasks]
    assert stored.reasons == ["cancelled while no manager drove it"]
    assert [r.state for r in stored.subtasks.values()] == ["cancelled", "cancelled"]
    assert [t.state for t in tasks if t] == [TaskState.CANCELLED] * 2
    assert not await raw_redis.sismember(f"agentic:{{{queue_name}}}:active_runs", run_id)


async def test_a_subtask_that_gives_no_result_in_time_fails_the_run_and_is_cancelled(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    config = settings(
        tmp_path, redis_url=redis_url, queue_name=queue_name,
        pipeline={"subtask_timeout_seconds": 0.3},
    )  # fmt: skip
    async with DistributedPipelineManager(settings=config, resume=False) as manager:
        result = await manager.run(spec("replay.json"))  # no worker serves it
        tasks = [await manager.redis_queue.get_task(r.task_id) for r in result.subtasks]
    assert result.status is RunStatus.FAILED
    assert "still pending after 0.3 s" in result.reasons[0]
    assert [t.state for t in tasks if t] == [TaskState.CANCELLED] * 2  # not run later


async def test_an_unreadable_run_is_reported_and_skipped_not_fatal(
    config: Settings, raw_redis: Redis, queue_name: str
) -> None:
    base = f"agentic:{{{queue_name}}}:"
    await raw_redis.hset(base + "run:broken", "state", "{not json")
    await raw_redis.sadd(base + "active_runs", "broken")
    await raw_redis.zadd(base + "runs", {"broken": 1})
    manager = DistributedPipelineManager(settings=config, handlers=build_registry(config))
    async with manager:  # resume=True: the broken run does not stop the start
        result = await manager.run(spec("replay.json"))
        listed = [r.run_id for r in await manager.list_runs()]
        with pytest.raises(RunStoreError, match="cannot read"):
            await manager.get_run("broken")
    assert result.status is RunStatus.SUCCEEDED and listed == [result.run_id]


async def test_a_start_that_fails_leaves_nothing_running(tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    config = settings(tmp_path, redis_url=nowhere, connect_timeout=0.5)
    manager = DistributedPipelineManager(settings=config, handlers=build_registry(config))
    before = asyncio.all_tasks()
    with pytest.raises(RedisUnavailable):
        await manager.start()
    assert asyncio.all_tasks() == before


async def test_a_run_id_must_be_safe_for_paths_and_keys(config: Settings) -> None:
    async with DistributedPipelineManager(settings=config, resume=False) as manager:
        for bad in ("../escape", "a/b", "-x", "x" * 101):
            with pytest.raises(ValueError, match="invalid run id"):
                await manager.start_run(spec("replay.json"), run_id=bad)


async def test_handlers_on_the_default_queue_never_take_the_pipelines_subtasks(
    tmp_path: Path, redis_url: str, raw_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both at their defaults: user handlers serve agentic_ai, the pipeline agentic_pipeline,
    so a user's own `dev` handler never runs a pipeline's dev subtask."""
    monkeypatch.delenv("AGENTIC_QUEUE_NAME", raising=False)
    monkeypatch.delenv("AGENTIC_PIPELINE__QUEUE_NAME", raising=False)
    config = settings(tmp_path, redis_url=redis_url)
    assert config.queue_name == "agentic_ai"
    assert config.pipeline_queue_name() == "agentic_pipeline"
    assert build_registry(config).default_queue == "agentic_pipeline"
    taken: list[str] = []

    async def user_handler(ctx: TaskContext) -> Any:
        taken.append(ctx.task_id)
        return {"ok": True}

    user_queue = RedisTaskQueue.from_settings(config)
    user_worker = Worker(user_queue, {t: user_handler for t in ("dev", "qa", "fix", "deploy")})
    serving = asyncio.create_task(user_worker.run())
    try:
        manager = DistributedPipelineManager(settings=config, handlers=build_registry(config))
        async with manager:
            assert manager.redis_queue.queue_name == "agentic_pipeline"
            result = await manager.run(spec("replay.json"))
    finally:
        user_worker.request_stop()
        await asyncio.wait_for(serving, 15)
        await user_queue.close()
        for name in ("agentic_ai", "agentic_pipeline"):
            async for key in raw_redis.scan_iter(match=f"agentic:{{{name}}}:*"):
                await raw_redis.delete(key)
    assert result.status is RunStatus.SUCCEEDED and taken == []
    explicit = settings(tmp_path, redis_url=redis_url, queue_name="one-queue")
    assert explicit.pipeline_queue_name() == "one-queue"  # an explicit queue moves both
    apart = settings(tmp_path, redis_url=redis_url, queue_name="a", pipeline={"queue_name": "p"})
    assert apart.pipeline_queue_name() == "p"
