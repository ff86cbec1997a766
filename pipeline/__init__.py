"""Pipeline orchestration: runs that send dev, QA, fix and deploy subtasks to agents.

    from pipeline import DistributedPipelineManager

    async with DistributedPipelineManager("redis://localhost:6379") as manager:
        result = await manager.run("examples/calculator/spec.json")
        print(result.status, result.artifact)

EnhancedPipelineManager runs the same flow in one process, without Redis.
"""

from .distributed import DistributedPipelineManager
from .enhanced import DEFAULT_APP, EnhancedPipelineManager
from .errors import RunInterrupted, RunNotFound, RunOwnershipLost, RunStoreError
from .priority import PriorityAssigner, PriorityRules
from .runs import PipelineResult, RunEvent, RunState, RunStatus, Stage, SubtaskRecord, Usage
from .spec import PipelineSpec, SpecError, SubtaskSpec, load_spec
from .store import MemoryRunStore, RedisRunStore, RunStore

__all__ = [
    "DEFAULT_APP",
    "DistributedPipelineManager",
    "EnhancedPipelineManager",
    "MemoryRunStore",
    "PipelineResult",
    "PipelineSpec",
    "PriorityAssigner",
    "PriorityRules",
    "RedisRunStore",
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
    "SubtaskRecord",
    "SubtaskSpec",
    "Usage",
    "load_spec",
]
