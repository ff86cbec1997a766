"""The fault suite: every test under tests/faults/ is marked `faults` (run them alone with
`pytest -m faults`). Fixtures give each test its own Redis to crash, its ledger directory,
worker processes, and a session tally printed at the end (faults injected, tasks, lost,
duplicated) that the README's Guarantees section quotes."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.checker import Report
from tests.support.fault_servers import FaultRedis, Persistence
from tests.support.fault_workers import FaultWorkers
from tests.support.ledger import Ledger
from utils.redis_queue import RedisTaskQueue, RetryPolicy

HERE = Path(__file__).parent
FAST_RETRY = RetryPolicy(first_immediate=True, base_seconds=0.05, factor=2.0, cap_seconds=0.2)
TOTALS_ENV = "AGENTIC_FAULT_TOTALS"  # also write the session tally as JSON here


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.faults)


@dataclass
class Totals:
    cases: dict[str, dict[str, int]] = field(default_factory=dict)

    def record(self, case: str, report: Report, faults: int, measured: bool = False) -> None:
        """`measured`: a configuration that may lose acknowledged writes (appendfsync
        everysec, no persistence); its loss is tallied apart, as `lost_measured`."""
        self.cases[case] = {
            "faults": faults,
            "tasks": report.acknowledged,
            "runs": report.runs,
            "lost": 0 if measured else len(report.lost),
            "lost_measured": len(report.lost) if measured else 0,
            "duplicated": len(report.duplicated),
            "structural": len(report.structural),
        }

    def total(self) -> dict[str, int]:
        keys = ("faults", "tasks", "runs", "lost", "lost_measured", "duplicated", "structural")
        return {k: sum(c[k] for c in self.cases.values()) for k in keys}


_TOTALS = Totals()


@pytest.fixture
def fault_totals(request: pytest.FixtureRequest) -> Callable[..., None]:
    """record(report, faults, measured=False): add this test's checked numbers to the
    session tally."""

    def record(report: Report, faults: int, measured: bool = False) -> None:
        _TOTALS.record(request.node.name, report, faults, measured)

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TOTALS.cases:
        return
    tr = terminalreporter
    tr.section("fault suite ledger totals")
    for case, row in _TOTALS.cases.items():
        tr.write_line(f"{case}: {row}")
    total = _TOTALS.total()
    tr.write_line(
        "TOTAL: {faults} faults injected, {tasks} acknowledged tasks, {runs} successful runs, "
        "{lost} lost, {duplicated} duplicated, {structural} structural errors; "
        "{lost_measured} lost where the configuration allows it (everysec, no persistence)"
        "".format(**total)
    )
    path = os.environ.get(TOTALS_ENV)
    if path:
        Path(path).write_text(json.dumps({"cases": _TOTALS.cases, "total": total}, indent=2))


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger")


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., FaultRedis]]:
    """FaultRedis(persistence, *extra_args), started; cleaned up after the test."""
    made: list[FaultRedis] = []

    def factory(persistence: Persistence = "none", *extra: str) -> FaultRedis:
        server = FaultRedis(persistence, *extra)
        made.append(server)
        server.start()
        return server

    yield factory
    for server in made:
        if server.proc is not None and server.proc.poll() is None:
            server.thaw()  # a stopped server ignores SIGTERM
        server.cleanup()


@pytest.fixture
def fault_redis(redis_factory: Callable[..., FaultRedis]) -> FaultRedis:
    return redis_factory("none")


@pytest.fixture
def workers_factory(ledger: Ledger) -> Iterator[Callable[..., FaultWorkers]]:
    made: list[FaultWorkers] = []

    def factory(server: FaultRedis, queue_name: str = "faults", **options: Any) -> FaultWorkers:
        w = FaultWorkers(server.url, queue_name, ledger.root, **options)
        made.append(w)
        return w

    yield factory
    for w in made:
        w.cleanup()


@pytest.fixture
async def queue_factory() -> AsyncIterator[Callable[..., Any]]:
    """Connected queues (the test's producer and inspector), closed afterwards."""
    made: list[RedisTaskQueue] = []

    async def factory(server: FaultRedis, queue_name: str = "faults", **kw: Any) -> RedisTaskQueue:
        options: dict[str, Any] = {
            "queue_name": queue_name,
            "redis_url": server.url,
            "retry_policy": FAST_RETRY,
            "socket_timeout": 1.0,
            "connect_timeout": 1.0,
            **kw,
        }
        q = RedisTaskQueue(**options)
        await q.connect()
        made.append(q)
        return q

    yield factory
    for q in made:
        await q.close()
