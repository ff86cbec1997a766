"""Scenario L: what the sandbox costs per QA run. The QA agent (compile + unittest) on a
small passing workspace, in this process, 20 rounds after a warm-up one, each round one
run per mode in turn (so the host's load hits each alike): the median ms of a run with
bubblewrap, with the unshare fallback and with none, and what each adds over none. Modes
this host cannot run are left out."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agents import QAAgent
from agents.sandbox import SandboxUnavailable, available_mode
from bench.harness.context import Bench, Row
from utils.config import ModelSettings, PipelineSettings
from utils.redis_queue.handlers import TaskContext
from utils.redis_queue.models import RedisTask

RUNS = 20
MODES = ("none", "unshare", "bubblewrap")
FILES = {
    "calc.py": "def add(a, b):\n    return a + b\n",
    "test_calc.py": (
        "import unittest\nfrom calc import add\n\n"
        "class T(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
    ),
}


def workspace(root: Path, mode: str) -> Path:
    ws = root / mode
    ws.mkdir()
    for name, text in FILES.items():
        (ws / name).write_text(text)
    return ws


async def one_run(agent: QAAgent, ws: Path, mode: str, i: int) -> float:
    payload: dict[str, Any] = {"subtask": {"id": "calc"}, "run_id": "bench", "workspace": str(ws)}
    task = RedisTask(f"qa-{i}", "qa", payload, 1, "processing", attempts=1)
    started = time.perf_counter()
    result = await agent(TaskContext(task, "bench", "bench", 1))
    took = time.perf_counter() - started
    if result["passed"] is not True or result["sandbox"] != mode:
        raise RuntimeError(f"QA under {mode} did not pass: {result['summary']}")
    return took * 1000


def runnable(mode: str) -> bool:
    try:
        return available_mode(mode) == mode
    except SandboxUnavailable:
        return False


async def scenario_l(bench: Bench) -> Row:
    modes = [m for m in MODES if runnable(m)]
    times: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as scratch:
        root = Path(scratch)
        agents = {
            m: QAAgent(ModelSettings(), PipelineSettings(workspace_root=root, sandbox=m))  # type: ignore[arg-type]
            for m in modes
        }
        spaces = {m: workspace(root, m) for m in modes}
        for i in range(RUNS + 1):  # the modes in turn, so load on the host hits each alike
            for mode in modes:
                took = await one_run(agents[mode], spaces[mode], mode, i)
                if i:  # the first round warms the caches and the mode probe
                    times[mode].append(took)
    medians = {m: statistics.median(t) for m, t in times.items()}
    base = medians["none"]
    shown = ", ".join(
        f"{mode} {ms:.0f} ms" + ("" if mode == "none" else f" ({ms - base:+.0f})")
        for mode, ms in medians.items()
    )
    return Row(
        "L",
        f"QA run (compile + 1 test), median of {RUNS}, by sandbox",
        shown,
        baseline=f"none {base:.0f} ms",
        ratio=" ".join(f"{m}: {ms / base:.2f}x" for m, ms in medians.items() if m != "none"),
        data={"median_ms": medians, "runs": RUNS},
    )
