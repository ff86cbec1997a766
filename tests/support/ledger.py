"""The ledger: evidence kept outside the Redis under test, in append-only files.

Every process writes its own file in one directory (no interleaving, nothing to lock):
producers `acks-<pid>-<name>.log`, worker processes `runs-<pid>.log`. One line per event:

    ack   <task_id> <t>                              an enqueue Redis acknowledged
    start <task_id> <attempt> <pid> <token> <t>      a handler began
    done  <task_id> <attempt> <pid> <token> <t>      a handler returned successfully
    fail  <task_id> <attempt> <pid> <token> <t>      a handler raised

<t> is time.monotonic() (system-wide on Linux, so comparable across processes). Lines are
written with one write(2) each on an O_APPEND descriptor, so they survive SIGKILL of the
writer (the kernel holds them); AGENTIC_FAULT_LEDGER_FSYNC=1 also fsyncs every line, for
soak runs that must survive a host crash.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

LEDGER_ENV = "AGENTIC_FAULT_LEDGER"
FSYNC_ENV = "AGENTIC_FAULT_LEDGER_FSYNC"


class LedgerWriter:
    """One append-only ledger file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fsync = os.environ.get(FSYNC_ENV) == "1"

    def write(self, *fields: object) -> None:
        os.write(self._fd, (" ".join(str(f) for f in fields) + "\n").encode())
        if self._fsync:
            os.fsync(self._fd)

    def ack(self, task_ids: list[str]) -> None:
        """Record acknowledged enqueues (one write for the batch)."""
        if not task_ids:
            return
        now = time.monotonic()
        os.write(self._fd, "".join(f"ack {t} {now:.6f}\n" for t in task_ids).encode())
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class Run:
    kind: str  # start, done or fail
    task_id: str
    attempt: int
    pid: int
    token: int
    at: float


class Ledger:
    """A ledger directory: writers for this process, readers for the checker."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def producer(self, name: str = "producer") -> LedgerWriter:
        return LedgerWriter(self.root / f"acks-{os.getpid()}-{name}.log")

    def _lines(self, pattern: str) -> list[list[str]]:
        out = []
        for path in sorted(self.root.glob(pattern)):
            for line in path.read_text().splitlines():
                parts = line.split()
                if parts:
                    out.append(parts)
        return out

    def acks(self) -> dict[str, float]:
        """Acknowledged task ids with the time of their acknowledgement."""
        return {p[1]: float(p[2]) for p in self._lines("acks-*.log") if p[0] == "ack"}

    def runs(self) -> list[Run]:
        """Every handler event of every worker, in time order."""
        runs = [
            Run(p[0], p[1], int(p[2]), int(p[3]), int(p[4]), float(p[5]))
            for p in self._lines("runs-*.log")
            if len(p) == 6
        ]
        return sorted(runs, key=lambda r: r.at)

    def by_pid(self, pid: int, kind: str = "start") -> set[str]:
        """Ids for which process `pid` wrote a `kind` line."""
        return {r.task_id for r in self.runs() if r.pid == pid and r.kind == kind}

    def successes(self) -> dict[str, list[Run]]:
        """Successful handler runs by task id."""
        out: dict[str, list[Run]] = defaultdict(list)
        for run in self.runs():
            if run.kind == "done":
                out[run.task_id].append(run)
        return out


def worker_writer() -> LedgerWriter | None:
    """This worker process's runs file, when the ledger directory is set."""
    root = os.environ.get(LEDGER_ENV)
    return LedgerWriter(Path(root) / f"runs-{os.getpid()}.log") if root else None
