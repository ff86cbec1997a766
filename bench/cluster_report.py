"""What queue_bench.py prints for scenario G: one line per workload and layout (rates as
ratios to layout (1) and to the raw baselines, Redis CPU per task per primary), then the
durable enqueue cost, the CPU shares on (3), the rank error and the nodes' idle CPU."""

from __future__ import annotations

from typing import Any

from bench.harness.context import Row, fmt_rate
from bench.report import table  # report.py imports this module when it prints G
from bench.scenarios.cluster import SHARE_TOLERANCE, share_ok

PRIORITIES = ("LOW", "NORMAL", "HIGH", "CRITICAL")
RAW_LABELS = {
    "a": "raw LPUSH (a), single Redis",
    "a'": "raw LPUSH (a'), cluster",
    "b": "raw LPUSH pipelined (b), single",
    "b'": "raw LPUSH pipelined (b'), cluster",
}


def g_text(row: Row) -> str:
    data = row.data
    labels = {k: f"({k}) {v['label']}" for k, v in data["layouts"].items()}
    body: list[list[str]] = []
    for workload, name, raws in (
        ("enqueue_one", "enqueue(), 1 at a time", ("a", "a'")),
        ("enqueue_many", "enqueue_many(), 1,000", ("b", "b'")),
    ):
        results = data[workload]
        body += [raw_line(name, RAW_LABELS[r], results[r]) for r in raws]
        body += [layout_line(name, labels[k], results[k]) for k in ("1", "2", "3")]
        if workload == "enqueue_one":
            body.append(layout_line(name, "(3) durable=True, 1 replica", results["3d"]))
    for processes, runs in data["drain"].items():
        name = f"drain, {processes} process{'es' if processes != '1' else ''}"
        body += [layout_line(name, labels[k], runs[k]) for k in ("1", "2", "3")]
    headers = [
        "workload", "layout", "rate", "x (1)", "x raw", "p50 / start-up", "client CPU us",
        "Redis CPU us", "per primary us", "share per primary", "replicas us",
    ]  # fmt: skip
    ports = ", ".join(data["cluster_primaries"])
    lines = [
        "\nG: one workload on three layouts, same run. x (1): to layout (1); x raw: to raw",
        "LPUSH interleaved with the same blocks ((a)/(b) on the single Redis, (a')/(b') via",
        "RedisCluster on one cluster node), drains to (a) at the start of the run. p50: per",
        "call (enqueue_many: per chunk). Redis CPU: INFO cpu deltas per task, net of each",
        f"node's idle CPU; primaries summed, then each (ports {ports}); replicas: all three",
        "summed (the single Redis has none). Client CPU: this process (drains: the worker",
        "processes). Drain rates: first to last completion (server time).",
        table(headers, body),
        *summary_lines(data),
    ]
    return "\n".join(lines)


def raw_line(workload: str, label: str, r: dict[str, Any]) -> list[str]:
    return [
        workload, label, fmt_rate(r["tasks_per_s"], "ops"), "-", "-", f"{r['p50_ms']:.3f} ms",
        f"{r['client_cpu_us_per_task']:,.1f}", f"{r['redis_cpu_us_per_task']:,.1f}",
        per_primary(r), shares(r), f"{r['replica_cpu_us_per_task']:,.1f}",
    ]  # fmt: skip


def layout_line(workload: str, label: str, r: dict[str, Any]) -> list[str]:
    if "startup_ms" in r:
        latency = f"{r['startup_ms']:,.0f} ms start-up"
        client = sum(r["worker_cpu_us_per_task"].values())
    else:
        latency, client = f"{r['p50_ms']:.3f} ms", r["client_cpu_us_per_task"]
    to_raw = ", ".join(f"{v:.2f}x ({k})" for k, v in r.get("ratio_to_raw", {}).items())
    single = r.get("ratio_to_single")
    return [
        workload, label, fmt_rate(r["tasks_per_s"], "tasks"),
        "-" if single is None else f"{single:.2f}x", to_raw or "-", latency,
        f"{client:,.1f}", f"{r['redis_cpu_us_per_task']:,.1f}", per_primary(r), shares(r),
        f"{r['replica_cpu_us_per_task']:,.1f}",
    ]  # fmt: skip


def per_primary(r: dict[str, Any]) -> str:
    values = list(r["primary_cpu_us_per_task"].values())
    return " / ".join(f"{v:,.1f}" for v in values) if len(values) > 1 else "-"


def shares(r: dict[str, Any]) -> str:
    values = list(r["primary_share"].values())
    return " / ".join(f"{v:.0%}" for v in values) if len(values) > 1 else "-"


def summary_lines(data: dict[str, Any]) -> list[str]:
    one = data["enqueue_one"]
    durable = data["durable"]
    lines = [
        f"\ndurable enqueue() on (3), WAIT for {durable['min_replicas']} replica: "
        f"{fmt_rate(one['3d']['tasks_per_s'], 'tasks')} = {durable['rate_ratio']:.2f}x plain "
        f"enqueue() on (3) in the same blocks ({fmt_rate(one['3']['tasks_per_s'], 'tasks')});"
        f" p50 {one['3d']['p50_ms']:.3f} ms vs {one['3']['p50_ms']:.3f} ms "
        f"({durable['p50_ratio']:.2f}x)",
        f"CPU share per primary on (3), target each within {SHARE_TOLERANCE:.0%} of a third "
        f"({(1 - SHARE_TOLERANCE) / 3:.1%}-{(1 + SHARE_TOLERANCE) / 3:.1%}):",
    ]
    checked = [("enqueue()", one["3"]), ("enqueue_many()", data["enqueue_many"]["3"])]
    checked += [(f"drain, {p} proc", runs["3"]) for p, runs in data["drain"].items()]
    for name, r in checked:
        lines.append(f"  {name}: {shares(r)} -> {'hit' if share_ok(r) else 'MISS'}")
    for key, rank in data["rank"].items():
        by = ", ".join(
            f"{name} {bad}/{count}"
            for name, bad, count in zip(
                PRIORITIES, rank["out_of_rank_by_priority"], rank["tasks_by_priority"], strict=True
            )
        )
        role = "" if key == "3" else " (control)"
        lines.append(
            f"rank error ({key}){role}, {rank['n']:,} tasks of mixed priority enqueued before "
            f"{rank['processes']} worker processes started: {rank['rank_error']:.2%} of tasks "
            f"started while a higher-priority task had not ({rank['out_of_rank']:,}; {by}); "
            f"{rank['rank_error_with_ties']:.2%} counting {rank['tied_with_higher']} that "
            f"started in the same ms as a higher one; pairs out of order "
            f"{rank['pair_error']:.2%} of {rank['pairs_differing']:,}"
        )
    spread = ", ".join(f"{port}: {n}" for port, n in data["partitions_per_primary"].items())
    lines.append(f"(3)'s {data['partitions']} partitions per primary: {spread}")
    idle = ", ".join(f"{k} {v:.1f}" for k, v in data["idle_cpu_ms_per_s"].items())
    lines.append(f"idle Redis CPU per node (ms per s, taken out above): {idle}")
    return lines
