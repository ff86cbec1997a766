"""`bench/queue_bench.py --quick` runs end to end against the session's Redis."""

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
@pytest.mark.timeout(150)
def test_quick_benchmark_prints_the_table(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--redis-url", redis_url, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=140,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| scenario" in proc.stdout and "| target" in proc.stdout
    names = (
        "enqueue(), awaited",
        "SyncRedisTaskQueue.enqueue()",
        "enqueue_many()",
        "seed loop: dequeue()",
        "one `agentic worker` process",
        "2 worker processes",
        "seed loop: enqueue -> wait_for_result",
        "wait_for_result via `agentic worker`",
        "memory",
        "limits configured, not binding",
    )
    for name in names:
        assert name in proc.stdout, proc.stdout
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"a", "b", "A", "S", "B", "C0", "C", "D", "E0", "E", "F", "H"}
    results = report["results"]
    for key in ("C", "D"):  # every pre-enqueued task ran through `agentic worker`
        assert results[key]["tasks_per_s"] > 0 and results[key]["startup_ms"] > 0
        assert results[key]["worker_exit"] == 0, proc.stdout + proc.stderr
    assert results["E"]["p50_ms"] > 0 and results["E"]["worker_exit"] == 0
    assert set(results["H"]["claim_settle_us_per_task"]) == {"0", "1", "3", "10"}
    assert results["S"]["tasks_per_s"] > 0 and results["S"]["raw_sync_interleaved_ops_per_s"] > 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_task_types_scenario_m(redis_url: str, tmp_path: Path) -> None:
    """M claims against 1 to 1,000 pending types, many registered types and depth, on
    queues of its own that it deletes afterwards."""
    out = tmp_path / "bench-m.json"
    args = ["--quick", "--scenarios", "M", "--redis-url", redis_url, "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=110, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "claim 10 + settle, against task types and depth" in proc.stdout
    cases = json.loads(out.read_text())["results"]["M"]["cases"]
    labels = [c["case"] for c in cases]
    assert labels == ["t1", "t10", "t100", "t1000", "reg", "regall", "d1000", "d10000"]
    assert all(c["tasks_per_s"] > 0 and c["claim_ms"] > 0 for c in cases)
    assert cases[0]["ratio"] == 1.0 and cases[4]["registered"] == 1_000
    client = Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match="agentic:{bench-*-m*", count=1_000)) == []
        assert not [n for n in client.smembers("agentic:queues") if b"-m" in n]
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_quick_cluster_scenario_g(redis_url: str, tmp_path: Path) -> None:
    """G starts its own Redis Cluster and compares three layouts of one queue."""
    out = tmp_path / "bench-g.json"
    args = ["--quick", "--scenarios", "G", "--redis-url", redis_url, "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "G: one workload on three layouts" in proc.stdout, proc.stdout
    assert "rank error (3)" in proc.stdout and "durable enqueue()" in proc.stdout
    g = json.loads(out.read_text())["results"]["G"]
    for workload in ("enqueue_one", "enqueue_many"):
        assert {"1", "2", "3"} <= set(g[workload]), g[workload]
    for runs in g["drain"].values():  # every pre-enqueued task ran on every layout
        for key in ("1", "2", "3"):
            assert runs[key]["tasks_per_s"] > 0 and runs[key]["worker_exit"] == 0
        assert len(runs["3"]["primary_share"]) == 3
    assert 0.0 <= g["rank"]["3"]["rank_error"] <= 1.0
    assert sorted(g["partitions_per_primary"].values()) == [2, 2, 2]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_dashboard_scenario_i(redis_url: str, tmp_path: Path) -> None:
    """I serves a filled queue with `agentic dashboard` and opens it in headless Chromium."""
    out = tmp_path / "bench-i.json"
    args = ["--quick", "--scenarios", "I", "--redis-url", redis_url, "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "I: the dashboard" in proc.stdout and "idle load" in proc.stdout, proc.stdout
    i = json.loads(out.read_text())["results"]["I"]
    for name, page in i["pages"].items():  # every page answered 200, every time
        assert page["n"] >= 20 and page["p95_ms"] > 0, name
    assert i["deep_page"]["tasks"] == 50
    assert i["search"]["no_match"]["scanned"] > 0 and i["search"]["no_match"]["found"] == 0
    assert i["search"]["early_hit"]["found"] == 50
    assert i["idle"]["browser_requests"].get("/?partial=1", 0) >= 1  # it refreshed itself
    assert i["idle"]["net_commands_per_s"] > 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_wide_run_scenario_j(redis_url: str, tmp_path: Path) -> None:
    """J runs pipelines of 10, 50 and 200 dev subtasks and reports ms per subtask."""
    out = tmp_path / "bench-j.json"
    args = ["--quick", "--scenarios", "J", "--redis-url", redis_url, "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    j = json.loads(out.read_text())["results"]["J"]
    assert set(j["ms_per_subtask"]) == {"10", "50", "200"}
    assert all(ms > 0 for ms in j["ms_per_subtask"].values())


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_feature_scenarios_n_o_p_q(redis_url: str, tmp_path: Path) -> None:
    """N (payload memory), O (output streams), P (pause/resume through 3 worker
    processes, scheduler steps) and Q (enqueue windows), each against its raw baseline,
    on queues of their own that they delete afterwards."""
    out = tmp_path / "bench-nopq.json"
    args = ["--quick", "--scenarios", "N,O,P,Q", "--redis-url", redis_url, "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=140, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())["results"]
    sizes = results["N"]["sizes"]
    assert list(sizes) == ["1 KiB", "16 KiB", "64 KiB", "1 MiB", "10 MiB"]
    for case in sizes.values():  # never below the bare hash of the same payload
        for mode in ("inline", "claim-check"):
            assert case[mode]["bytes_per_task"] >= 0.99 * case["raw_hash_bytes"] > 0
    assert sizes["1 MiB"]["claim-check"]["hash_fields"] < 20  # the payload is a blob key
    assert results["N"]["large_10mib"]["get_task_ms"] > 0
    o = results["O"]
    assert o["stream_entries"] == o["n"] == 1_000 and o["stream_bytes"] > 0
    assert o["emits_per_s_concurrent"] > 0 and o["latency_p99_ms"] >= o["latency_p50_ms"] > 0
    p = results["P"]
    # A handler claimed just before pause() may start a moment after it returned on a
    # loaded machine; none starts during the hold (tests/test_pause.py checks the leases).
    assert max(p["pause"]["latest_start_after_pause_ms"]) < 200, p["pause"]
    assert p["pause"]["claimed_after_pause"] == [0, 0], p["pause"]
    assert p["pause"]["worker_exit"] == 0 and p["pause"]["started"] >= 50
    assert len(p["pause"]["first_start_after_resume_ms"]) == 2
    assert p["scheduler"]["due"] == 200 and p["scheduler"]["idle_step_ms"] > 0
    q = results["Q"]["us_per_call"]
    assert set(q) == {"plain", "unique_for", "debounce", "duplicate", "replace"}
    client = Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match="agentic:{bench-*", count=1_000)) == []
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_worker_breakdown_of_scenario_c(redis_url: str, tmp_path: Path) -> None:
    """C with --profile-workers: a second, timed drain splits the worker's CPU per task
    by piece (claim, dispatch, settle, heartbeat, ...), adding up to its worker CPU."""
    out = tmp_path / "bench-c.json"
    args = ["--quick", "--scenarios", "C", "--profile-workers", "--redis-url", redis_url]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=140,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "C: where a task's time goes" in proc.stdout, proc.stdout
    c = json.loads(out.read_text())["results"]["C"]
    assert c["worker_exit"] == 0 and c["tasks_per_s"] > 0
    breakdown = c["breakdown"]
    pieces = ("claim", "dispatch", "settle", "heartbeat", "wake", "socket reads", "loop, rest")
    assert set(pieces) <= set(breakdown["worker_us"])
    assert all(breakdown["timed_us"][p] > 0 for p in ("claim", "dispatch", "settle"))
    total = sum(breakdown["worker_us"][p] for p in pieces)
    assert total == pytest.approx(breakdown["worker_cpu_us"], rel=1e-6)
    parts = ("decode", "start", "run", "finished")
    dispatch = sum(breakdown["timed_us"][f"dispatch: {p}"] for p in parts)
    assert dispatch == pytest.approx(breakdown["timed_us"]["dispatch"], rel=1e-6)
    assert breakdown["server_us"] is None  # SLOWLOG only on the bench's own server
