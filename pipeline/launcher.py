"""Worker processes for a pipeline run started from the command line: one
`agentic worker` per task type, serving the agents, stopped (SIGTERM) afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping

from .enhanced import DEFAULT_APP

__all__ = ["DEFAULT_CONCURRENCY", "WorkerProcesses"]

# dev subtasks of a run go in parallel; QA, fix and deploy come one at a time per run
DEFAULT_CONCURRENCY = {"dev": 4, "qa": 2, "fix": 2, "deploy": 1}


class WorkerProcesses:
    def __init__(
        self,
        redis_url: str,
        queue_name: str,
        *,
        app: str = DEFAULT_APP,
        concurrency: Mapping[str, int] | None = None,
        grace_seconds: float = 10.0,
    ) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self.app = app
        self.concurrency = dict(concurrency or DEFAULT_CONCURRENCY)
        self.grace_seconds = grace_seconds
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for task_type in self.concurrency:
            self._spawn(task_type)

    def respawn_dead(self) -> list[str]:
        """Start again the workers that exited; returns their task types."""
        dead = self.dead()
        for task_type in dead:
            self._spawn(task_type)
        return dead

    def _spawn(self, task_type: str) -> None:
        args = [sys.executable, "-m", "pipeline.cli", "--queue", self.queue_name, "worker"]
        args += ["--app", self.app, "--types", task_type]
        args += ["--concurrency", str(self.concurrency[task_type])]
        args += ["--grace", str(self.grace_seconds)]
        # their logs would interleave with the run's progress (the manager warns itself)
        env = {**os.environ, "AGENTIC_REDIS_URL": self.redis_url, "AGENTIC_LOG_LEVEL": "ERROR"}
        self.processes[task_type] = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(self.grace_seconds + 5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def dead(self) -> list[str]:
        """Task types whose worker exited (a crash, or a bad --app)."""
        return [t for t, p in self.processes.items() if p.poll() is not None]
