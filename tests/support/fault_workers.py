"""Worker processes for the fault suite (tests.support.fault_worker), each in its own process
group (the worker and its lease keeper), with its output in the ledger directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.ledger import LEDGER_ENV
from tests.support.processes import SpawnedWorkers, wait_exit


class FaultWorkers(SpawnedWorkers):
    """tests.support.fault_worker processes, their output in the ledger directory."""

    def __init__(
        self,
        redis_url: str,
        queue_name: str,
        ledger_dir: Path,
        *,
        lease: float = 1.0,
        max_lease_losses: int = 3,
        concurrency: int = 10,
        grace: float = 5.0,
        socket_timeout: float = 2.0,
    ) -> None:
        super().__init__()
        self.ledger_dir = ledger_dir
        self.env = dict(os.environ)
        for name in [k for k in self.env if k.startswith(("AGENTIC_", "FAULT_"))]:
            del self.env[name]
        self.env.update(
            FAULT_REDIS_URL=redis_url,
            FAULT_QUEUE=queue_name,
            FAULT_LEASE=str(lease),
            FAULT_MAX_LEASE_LOSSES=str(max_lease_losses),
            FAULT_CONCURRENCY=str(concurrency),
            FAULT_GRACE=str(grace),
            FAULT_SOCKET_TIMEOUT=str(socket_timeout),
            PYTHONUNBUFFERED="1",
        )
        self.env[LEDGER_ENV] = str(ledger_dir)
        self.faults = 0  # kills and stops injected
        self.started = 0

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        self.started += 1
        with (self.ledger_dir / f"worker-{self.started}.log").open("ab") as log:
            argv = [sys.executable, "-m", "tests.support.fault_worker"]
            return self.spawn(argv, {**self.env, **env}, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its lease keeper (its process group): a fault."""
        self.faults += 1
        super().kill(proc)

    def freeze(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGSTOP the worker only: its lease keeper sees it stopped and stops renewing."""
        self.faults += 1
        os.kill(proc.pid, signal.SIGSTOP)

    def thaw(self, proc: subprocess.Popen[bytes]) -> None:
        os.kill(proc.pid, signal.SIGCONT)

    def terminate(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        return await wait_exit(proc, timeout)

    def logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.ledger_dir.glob("worker-*.log"))
        )
