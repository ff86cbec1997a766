"""Pipeline orchestration: runs that send dev, QA, fix and deploy subtasks to agents.

    from pipeline import DistributedPipelineManager

    async with DistributedPipelineManager("redis://localhost:6379") as manager:
        result = await manager.run("examples/calculator/spec.json")
        print(result.status, result.artifact)

EnhancedPipelineManager runs the same flow in one process, without Redis.
"""

from .distributed import DistributedPipelineManager
from .enhanced import DEFAULT_APP, EnhancedPipelineManager
from .errors import (
    PipelineError,
    RunAlreadyDriven,
    RunInterrupted,
    RunNotFound,
    RunOwnershipLost,
    RunStoreError,
    SpecError,
)
from .executors import QueueExecutor, StageExecutor
from .local import LocalExecutor
from .priority import PriorityAssigner, PriorityRules
from .runs import (
    PipelineResult,
    RunEvent,
    RunState,
    RunStatus,
    Stage,
    SubtaskRecord,
    SubtaskState,
    Usage,
)
from .spec import PipelineSpec, SubtaskSpec, load_spec
from .stages import STAGES, StageRow
from .store import MemoryRunStore, RedisRunStore, RunStore

__all__ = [
    "DEFAULT_APP",
    "STAGES",
    "DistributedPipelineManager",
    "EnhancedPipelineManager",
    "LocalExecutor",
    "MemoryRunStore",
    "PipelineError",
    "PipelineResult",
    "PipelineSpec",
    "PriorityAssigner",
    "PriorityRules",
    "QueueExecutor",
    "RedisRunStore",
    "RunAlreadyDriven",
    "RunEvent",
    "RunInterrupted",
    "RunNotFound",
    "RunOwnershipLost",
    "RunState",
    "RunStatus",
    "RunStore",
    "RunStoreError",
    "SpecError",
    "Stage",
    "StageExecutor",
    "StageRow",
    "SubtaskRecord",
    "SubtaskSpec",
    "SubtaskState",
    "Usage",
    "load_spec",
]
