"""What queue_bench.py prints and writes: the results, cost and worker-process tables,
profiles, the environment measured in, and the JSON report."""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import pstats
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from redis.utils import HIREDIS_AVAILABLE

from bench.harness.config import ROOT, Sizes
from bench.harness.context import Bench, Row, fmt_rate


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def results_table(rows: list[Row]) -> str:
    headers = ["", "scenario", "measured", "baseline", "ratio", "target", "result"]
    return table(headers, [r.cells() for r in rows])


def cost_table(rows: list[Row]) -> str:
    headers = [
        "",
        "wall us/task",
        "client CPU us/task",
        "server CPU us/task",
        "EVALSHA/task",
        "EVALSHA us/call",
    ]
    body = [[r.key, *r.cost.as_row()] for r in rows if r.cost is not None]
    return table(headers, body)


def profile_summary(path: Path, limit: int = 15, sort: str = "tottime") -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats(sort).print_stats(limit)
    return out.getvalue()


def process_table_text(rows: list[Row]) -> str:
    roles = ["driver", "worker", "keeper", "supervisor"]
    headers = ["", *(f"{r} CPU" for r in roles), "start-up ms", "rate with start-up", "exit"]
    body = []
    for row in rows:
        cpu = row.data["process_cpu_us_per_task"]
        startup = row.data.get("startup_ms")
        with_startup = row.data.get("tasks_per_s_with_startup")
        body.append(
            [
                row.key,
                *(f"{cpu[r]:,.1f}" if r in cpu else "-" for r in roles),
                "-" if startup is None else f"{startup:,.0f}",
                "-" if with_startup is None else fmt_rate(with_startup, "tasks"),
                str(row.data.get("worker_exit")),
            ]
        )
    return table(headers, body)


def command_summary(row: Row) -> str:
    """Redis commands per task, most time first: name calls/task x usec/call."""
    if row.cost is None:
        return "-"
    by_time = sorted(
        row.cost.commands.items(),
        key=lambda item: item[1]["calls_per_task"] * item[1]["usec_per_call"],
        reverse=True,
    )
    return ", ".join(
        f"{name} {c['calls_per_task']:.3g} x {c['usec_per_call']:.1f} us"
        for name, c in by_time
        if c["calls_per_task"] >= 0.001
    )


def breakdown_text(row: Row) -> str | None:
    """C with --profile-workers: per task, by piece, the worker's CPU and Redis's time."""
    data = row.data.get("breakdown")
    if not data:
        return None
    if "error" in data:
        return f"{row.key} breakdown: {data['error']}"
    from bench.harness.breakdown import PARTS, PIECES  # here: the report imports no harness

    server = data.get("server_us") or {}
    body = []
    for piece in PIECES:
        worker = data["worker_us"][piece]
        extra = data["keeper_cpu_us"] if piece == "heartbeat" else 0.0
        redis_us = server.get(piece if piece != "loop, rest" else "rest")
        cells = [f"{worker:,.1f}", f"{data['timed_us'][piece]:,.1f}"]
        cells.append(f"{extra:,.1f}" if extra else "-")
        cells.append("-" if redis_us is None else f"{redis_us:,.1f}")
        total = worker + extra + (redis_us or 0.0)
        body.append([piece, *cells, f"{total:,.1f}"])
        scale = worker / data["timed_us"][piece] if data["timed_us"][piece] else 0.0
        for part in PARTS.get(piece, ()):
            timed = data["timed_us"].get(f"{piece}: {part}", 0.0)
            body.append([f"  {part}", f"{timed * scale:,.1f}", f"{timed:,.1f}", "", "", ""])
    total_server = sum(server.values()) if server else None
    body.append(
        [
            "total",
            f"{data['worker_cpu_us']:,.1f}",
            f"{sum(data['timed_us'][p] for p in PIECES):,.1f}",
            f"{data['keeper_cpu_us']:,.1f}",
            "-" if total_server is None else f"{total_server:,.1f}",
            f"{data['worker_cpu_us'] + data['keeper_cpu_us'] + (total_server or 0.0):,.1f}",
        ]
    )
    headers = [
        "piece (us/task)",
        "worker CPU",
        "timed run",
        "keeper CPU",
        "Redis",
        "sum",
    ]
    lines = [
        f"\n{row.key}: where a task's time goes (us per task; worker CPU = the timed run's"
        " shares x the untimed run's worker CPU;",
        "Redis = the untimed run's SLOWLOG time of the scripts claim, settle_many, extend;"
        " wake = BLPOP from INFO commandstats)",
        table(headers, body),
        f"timed run: {data['timed_rate']:,.0f} tasks/s; its pieces: {data['timing']}",
    ]
    detail = data.get("server_commands")
    if detail:
        by_time = sorted(
            detail.items(), key=lambda kv: kv[1]["calls_per_task"] * kv[1]["usec_per_call"]
        )
        lines.append(
            "Redis by command: "
            + ", ".join(
                f"{name} {c['calls_per_task']:.3g} x {c['usec_per_call']:.1f} us"
                for name, c in reversed(by_time)
                if c["calls_per_task"] >= 0.001
            )
        )
        if data.get("slowlog_full"):
            lines.append("WARNING: the SLOWLOG overflowed; the Redis column is partial")
    return "\n".join(lines)


def git_state() -> str:
    """The commit measured, with "+dirty" when the engine has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "utils"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit or 'unknown'}{'+dirty' if dirty else ''}"


async def environment(bench: Bench, own_server: bool) -> dict[str, Any]:
    server = await bench.admin.info("server")
    return {
        "redis_server": f"{server.get('redis_version')} ({server.get('redis_mode', '')})",
        "own_server": own_server,
        "redis_py": redis.__version__,
        "hiredis": HIREDIS_AVAILABLE,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "queue_name": bench.queue_name,
        "events": bench.events,
        "tracing": bench.tracing,
        "metrics": bench.metrics is not None,
        "git": git_state(),
    }


def busy_warning(env: dict[str, Any]) -> str | None:
    """Other processes competing for the CPUs make every number here noisy."""
    samples = [*env["busy_cpus"].values(), *env["others_cpus"].values()]
    busy = max((b for b in samples if b is not None), default=0.0)
    if busy < 0.25:
        return None
    return (
        f"WARNING: other processes kept up to {busy:.2f} of {env['cpus']} CPUs busy; "
        "the numbers are noisy, rerun on an idle machine"
    )


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def report_dict(env: dict[str, Any], sizes: Sizes, rows: list[Row]) -> dict[str, Any]:
    return {
        "created": datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "environment": env,
        "sizes": asdict(sizes),
        "results": {
            r.key: {
                "name": r.name,
                "measured": r.measured,
                "target": r.target,
                "hit": r.hit,
                "cost_per_task": asdict(r.cost) if r.cost else None,
                **r.data,
            }
            for r in rows
        },
    }


def print_report(
    rows: list[Row],
    args: argparse.Namespace,
    sizes: Sizes,
    env: dict[str, Any],
    profile_dir: Path | None,
) -> None:
    mode = "quick" if args.quick else "full"
    print(f"\nqueue benchmark ({mode}; Redis {env['redis_server']}, hiredis {env['hiredis']})")
    events = "on" if env.get("events", True) else "off"
    telemetry = [name for name in ("tracing", "metrics") if env.get(name)]
    on = f"; {' and '.join(telemetry)} on" if telemetry else ""
    print(f"sizes: {asdict(sizes)}; git {env['git']}; task events {events}{on}")
    print(f"load average (1/5/15 min): {env['loadavg']}")
    print(f"CPUs busy with other processes before each scenario: {env['busy_cpus']}")
    print(f"CPUs busy with other processes during each scenario: {env['others_cpus']}")
    warning = busy_warning(env)
    if warning:
        print(warning)
    print(results_table(rows))
    print("\nC0: each task costs 2 script round trips (claim + complete) and 10 run at once.")
    print("C/D: rate = (N-1) / (last - first completion), from the `completed` set's server-time")
    print("   scores, so start-up (spawn -> first completion) is excluded; shown apart.")
    print("E0/E: the critical path is enqueue, BLPOP wake-up, claim, complete, BLMOVE, HGETALL.")
    print("\nwhere the time goes (per task; server CPU = INFO cpu delta, EVALSHA = Lua):")
    print(cost_table(rows))
    print("client CPU: A, B, C0, E0 this process only; C, D the worker processes (worker,")
    print("lease keeper, supervisor); E this process plus the worker processes.")
    worker_rows = [r for r in rows if "process_cpu_us_per_task" in r.data]
    if worker_rows:
        print("\nworker processes (CPU us per task from /proc; C/D between first and last")
        print("completion, E over the measured trips) and Redis commands per task:")
        print(process_table_text(worker_rows))
        for row in worker_rows:
            print(f"{row.key}: {command_summary(row)}")
        for row in worker_rows:
            text = breakdown_text(row)
            if text:
                print(text)
        for row in worker_rows:
            if row.data.get("worker_exit") != 0:
                print(f"WARNING: {row.key}'s worker exited with {row.data.get('worker_exit')}")
    for row in rows:
        if row.key == "G":
            from bench.cluster_report import g_text  # here: it imports table() from this

            print(g_text(row))
        if row.key == "I":
            from bench.dashboard_report import i_text  # here: it imports table() from this

            print(i_text(row))
        if row.key == "T":
            from bench.scenarios.sustained import t_text  # imports table() from this

            print(t_text(row))
    if profile_dir is not None:
        print("\nprofiled: the rates above include cProfile overhead")
        for path in sorted(profile_dir.glob("profile-*.prof")):
            print(f"\n== {path.name}\n{profile_summary(path)}")
    profiles = [r.data["worker_profile"] for r in worker_rows if r.data.get("worker_profile")]
    if profiles:
        print("\nworker profiled (cProfile): its rates and latencies include the overhead")
        for name in profiles:
            if Path(name).exists():
                print(f"\n== {name}\n{profile_summary(Path(name), sort='cumulative', limit=25)}")
                print(profile_summary(Path(name)))
            else:
                print(f"\n== {name}: not written (the worker did not exit cleanly)")
