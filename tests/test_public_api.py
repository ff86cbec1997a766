"""The public surface is explicit and stable: the seed's imports work, __all__ is complete."""

from __future__ import annotations

import importlib

import pytest

import utils.redis_queue as rq
from utils.redis_queue import scripts

# The public surface of each package, pinned: a name added or dropped shows up here.
PUBLIC = {
    "utils.redis_queue": {
        "AttemptRecord", "BulkEnqueueError", "ClaimBatch", "CorruptQueue", "DurabilityError",
        "HandlerRegistry", "InvalidLimit", "Limit", "LimitStatus", "MinuteCounts", "RateLimited",
        "InvalidPriority", "InvalidQueueName", "InvalidRedisUrl", "InvalidTaskError",
        "InvalidTaskId", "InvalidTaskType", "LeaseLost", "NotConnected", "PayloadTooLarge",
        "PermanentFailure", "QueueError", "RedisAuthError", "RedisTask", "RedisTaskQueue",
        "RedisUnavailable", "ResultTimeout", "Retry", "RetryPolicy", "SerializationError",
        "Settlement", "TaskCancelled", "TaskContext", "TaskFailed", "TaskNotFound",
        "TaskNotProcessing", "TaskPriority", "TaskState", "TaskStateError", "TopologyError",
        "Worker", "WorkerIdInUse", "WorkerStats", "SearchResult", "TaskPage", "TaskSummary",
        "InvalidSchedule", "Schedule", "ScheduleInfo",
        "OutputChunk", "TaskEvent",
        "DuplicateTask",
        "BlobStore", "DirectoryBlobStore",
        "SyncRedisTaskQueue",
    },
    "pipeline": {
        "DEFAULT_APP", "STAGES", "DistributedPipelineManager", "EnhancedPipelineManager",
        "LocalExecutor", "MemoryRunStore", "PipelineError", "PipelineResult", "PipelineSpec",
        "PriorityAssigner", "PriorityRules", "QueueExecutor", "RedisRunStore",
        "RunAlreadyDriven", "RunEvent", "RunInterrupted", "RunNotFound", "RunOwnershipLost",
        "RunState", "RunStatus", "RunStore", "RunStoreError", "SpecError", "Stage",
        "StageExecutor", "StageRow", "SubtaskRecord", "SubtaskSpec", "SubtaskState", "Usage",
        "load_spec",
    },
    "agents": {
        "Agent", "AgentRequest", "BackendFactory", "DeployAgent", "DevAgent", "FixAgent",
        "InvalidRequest", "ModelAuthError", "ModelBackend", "ModelError", "ModelRateLimited",
        "ModelRejected", "ModelReply", "ModelResponseError", "ModelTimeout", "ModelUnavailable",
        "ModelUsage", "NoFilesInReply", "OpenAIChatBackend", "OutsideBaseDirectory", "QAAgent",
        "ReplayBackend", "ReplayError", "ReplayMissing", "SandboxUnavailable", "UnsafePath",
        "build_backend", "build_registry", "parse_files",
    },
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_each_package_exports_exactly_its_pinned_public_api(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == PUBLIC[package]
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_the_seed_pipeline_import_works() -> None:
    from pipeline import DistributedPipelineManager, EnhancedPipelineManager

    assert issubclass(DistributedPipelineManager, EnhancedPipelineManager)


def test_seed_imports_work() -> None:
    from utils.redis_queue import RedisTask, RedisTaskQueue, TaskPriority, TaskState

    assert [p.value for p in TaskPriority] == [0, 1, 2, 3]
    assert TaskState.DEAD_LETTER == "dead_letter"
    assert RedisTask.__name__ == "RedisTask" and RedisTaskQueue.__name__ == "RedisTaskQueue"


def test_all_is_sorted_and_complete() -> None:
    assert rq.__all__ == sorted(rq.__all__)
    public = {name for name in dir(rq) if not name.startswith("_") and name[0].isupper()}
    assert public == set(rq.__all__)


def test_every_lua_script_has_a_header_and_is_registered() -> None:
    from importlib import resources

    lua = resources.files("utils.redis_queue").joinpath("lua")
    on_disk = sorted(p.name[:-4] for p in lua.iterdir() if p.name.endswith(".lua"))
    assert on_disk == sorted(scripts.SCRIPTS)
    for name in on_disk:
        source = scripts.load_source(name)
        assert source.lstrip().startswith("--[[") and "KEYS[1]" in source and "Returns" in source
        assert "--@include" not in source  # includes were expanded
