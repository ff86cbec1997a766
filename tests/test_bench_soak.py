"""Scenario T, issue 18's bounded soak, runs end to end for a few seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "queue_bench.py"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_soak_scenario_t_reports_windows_and_cleans_finished_tasks(
    redis_url: str, tmp_path: Path
) -> None:
    """T measures C first (no --soak-rate), sends at 80% of it for 6 s into one `agentic
    worker` with a task TTL of 1 s, and reports every window; the completion trim keeps
    far fewer finished tasks than were sent, and the bench deletes its keys afterwards."""
    out = tmp_path / "bench-t.json"
    args = ["--quick", "--scenarios", "T", "--soak-minutes", "0.1", "--soak-ttl", "1"]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args, "--redis-url", redis_url, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "T, per window" in proc.stdout and "issue 18's H" in proc.stdout
    t = json.loads(out.read_text())["results"]["T"]
    assert t["c"]["source"] == "measured by T, as C" and t["c"]["tasks_per_s"] > 0
    assert t["rate"] == pytest.approx(0.8 * t["c"]["tasks_per_s"])
    assert t["worker_exit"] == 0 and t["stopped_early"] is None
    assert t["sent"] == t["total"] == t["completed"] > 0
    assert t["task_ttl_seconds"] == 1 and t["completed_kept_at_end"] < t["sent"]
    windows = t["windows"]
    assert len(windows) == 12 and t["window_s"] == 0.5
    assert sum(w["sent"] for w in windows) + t["drain"]["sent"] == t["sent"]  # late: drain
    for w in windows:
        assert w["used_memory"] > 0 and w["rss"] > 0 and w["held_tasks"] >= 0
    done = [w for w in windows if w["completed_per_s"]]
    assert done and all(w["max_ms"] >= w["p99_ms"] >= w["p50_ms"] >= 0 for w in done)
    assert set(t["verdict"]) == {"used_memory", "rss", "p99_ms", "bytes_per_held_task"}
    assert all(v is not None and v["tolerance"] > 0 for v in t["verdict"].values())
    client = Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match="agentic:{bench-*", count=1_000)) == []
    finally:
        client.close()
