"""Worker processes for a pipeline run started from the command line: one
`agentic worker` per stage's task type, serving the agents, stopped (SIGTERM) afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from .enhanced import DEFAULT_APP
from .supervisor import Command, WorkerPool

__all__ = ["DEFAULT_CONCURRENCY", "StageWorkers"]

# dev subtasks of a run go in parallel; QA, fix and deploy come one at a time per run
DEFAULT_CONCURRENCY = {"dev": 4, "qa": 2, "fix": 2, "deploy": 1}


class StageWorkers(WorkerPool):
    """A WorkerPool with one `agentic worker --types <type>` slot per task type."""

    def __init__(
        self,
        redis_url: str,
        queue_name: str,
        *,
        app: str = DEFAULT_APP,
        concurrency: Mapping[str, int] | None = None,
        grace_seconds: float = 10.0,
        cluster: bool = False,
        partitions: int = 1,
    ) -> None:
        # their logs would interleave with the run's progress (the manager warns itself)
        env = {
            **os.environ,
            "AGENTIC_REDIS_URL": redis_url,
            "AGENTIC_LOG_LEVEL": "ERROR",
            # the manager's topology, however it was given (options or environment)
            "AGENTIC_REDIS_CLUSTER": "1" if cluster else "0",
            "AGENTIC_PARTITIONS": str(partitions),
        }
        commands = {}
        for task_type, count in (concurrency or DEFAULT_CONCURRENCY).items():
            argv = [sys.executable, "-m", "pipeline.cli", "--queue", queue_name, "worker"]
            argv += ["--app", app, "--types", task_type, "--concurrency", str(count)]
            argv += ["--grace", str(grace_seconds)]
            commands[task_type] = Command(argv, env)
        super().__init__(commands, grace_seconds=grace_seconds, stdout=subprocess.DEVNULL)
