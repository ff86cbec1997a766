"""`bench/queue_bench.py --quick` runs end to end against the session's Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "queue_bench.py"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_benchmark_prints_the_table(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--redis-url", redis_url, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| scenario" in proc.stdout and "| target" in proc.stdout
    for name in ("enqueue(), awaited", "enqueue_many()", "dequeue()", "wait_for_result", "memory"):
        assert name in proc.stdout, proc.stdout
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"a", "b", "A", "B", "C", "E", "F"}
