"""Throughput, latency and memory of RedisTaskQueue against raw redis-py baselines.

    .venv/bin/python bench/queue_bench.py            # or: make bench
    .venv/bin/python bench/queue_bench.py --quick --scenarios AE
    .venv/bin/python bench/queue_bench.py --scenarios C,D,E --profile-workers
    .venv/bin/python bench/queue_bench.py --redis-url redis://host:6379/0
    .venv/bin/python bench/queue_bench.py --scenarios G      # the cluster layouts (~2 min)
    .venv/bin/python bench/queue_bench.py --scenarios I      # the dashboard (~5 min)
    .venv/bin/python bench/queue_bench.py --scenarios AC --no-events  # events' cost: vs on
    .venv/bin/python bench/queue_bench.py --scenarios ASB --tracing  # its cost; or --metrics
    .venv/bin/python bench/queue_bench.py --scenarios N,O,P,Q  # figures the README quotes
    .venv/bin/python bench/queue_bench.py --scenarios T      # the soak (C, then 10 min)

Starts a private redis-server (no persistence) on a free port unless --redis-url is
given; then it uses a queue name of its own and deletes only keys matching
`agentic:{<queue>}:*` (the raw baselines write there too). Payloads are ~100 bytes of
JSON, task ids are uuid4().hex.

Baselines:  (a) LPUSH awaited one at a time   (b) LPUSH in pipelines of 1,000
Scenarios:  A  enqueue() one at a time         B  enqueue_many() in chunks of 1,000
            C0 seed loop: dequeue + complete_task, 10 coroutines, queue pre-filled
            C  one `agentic worker` process (--concurrency 10, no-op handler) drains
               pre-enqueued tasks; rate from the server-time completion scores
            D  the same with two worker processes (`agentic worker --processes 2`)
            E0 enqueue -> wait_for_result round trip, seed loop in a subprocess
            E  enqueue -> wait_for_result round trip, idle `agentic worker` subprocess
            F  used_memory per pending task (enqueue_many, no worker)
            G  (on request only) the same workload on (1) the bench's Redis, 1 partition,
               (2) a private 3-primary cluster, 1 partition, (3) that cluster, 6
               partitions: enqueue() and enqueue_many() rates in interleaved blocks (raw
               LPUSH on both servers too), `agentic worker` drains (1 and 2 processes),
               Redis CPU per task per primary and (3)'s share per primary; durable
               enqueue (WAIT, 1 replica) against plain on (3); and the rank error of
               3,000 mixed-priority tasks drained by 2 processes on (3), with (1) as control
            H  C with limits configured but not binding
            I  (on request only) `agentic dashboard` over one queue of 100,000 tasks in
               mixed states (and a small one): p50/p95/p99 of each page over HTTP against
               PING/HGETALL baselines, Redis commands, Redis time and dashboard CPU per
               request, and the Redis commands per second of one idle headless Chromium
               on the overview (~5 min; needs /usr/bin/chromium and Playwright)
            J to Q (on request only): see bench/scenarios/__init__.py
            T  (on request only) issue 18's "scenario H", a bounded soak: a paced open-loop
               producer at 80% of the C rate (C measured first unless it ran or
               --soak-rate N) into one `agentic worker` for --soak-minutes (10; 1 with
               --quick), finished tasks cleaned by AGENTIC_TASK_TTL_SECONDS (--soak-ttl);
               per --soak-window: latency p50/p99/max, used_memory, worker RSS, backlog;
               flat = the last third within +10% (p99 +50%) of the first, after warm-up

C, D and E run `python -m pipeline.cli worker --app bench.apps:registry` with
AGENTIC_REDIS_URL / AGENTIC_QUEUE_NAME set (other AGENTIC_* variables removed) and stop it
with SIGTERM. Prints a table with targets, a cost breakdown (client CPU, server CPU, EVALSHA
time per task), the worker processes' CPU per task, and writes everything as JSON to
bench/results/queue-bench-<timestamp>.json. --profile-workers runs the single-process
workers of C and E under cProfile and prints their top functions; C then drains twice (its
rate from the unprofiled run) and prints where a task's time goes, by piece: the worker's
CPU (claim, handler dispatch, settle, heartbeat, wake, the rest) and, on a private server,
the Redis time per script from SLOWLOG (bench/harness/breakdown.py).

Load: the machine may be shared (2 cores here), so the report records the CPUs other
processes kept busy before each scenario (sampled while this one idles) and during it
(all busy time minus what this process and everything it started used), plus the load
average, and warns when either reaches a quarter of a CPU.

Code: this file is the entry point (arguments, running the scenarios, the report);
bench/harness/ measures (sizes, payloads, probes, worker processes, machine load),
bench/scenarios/ holds the baselines and scenarios, bench/report.py prints and writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

# Run as a script (`python bench/queue_bench.py`): the repository root must be importable.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from bench.harness.config import FULL, QUICK, SoakSettings  # noqa: E402
from bench.harness.context import Bench, clear_keys  # noqa: E402
from bench.harness.load import busy_cpus, load_average, load_sample, others_cpus  # noqa: E402
from bench.harness.telemetry import bench_metrics, bench_tracing  # noqa: E402
from bench.report import environment, print_report, report_dict, write_json  # noqa: E402
from bench.scenarios import ALL_SCENARIOS, DEFAULT_SCENARIOS, SCENARIOS  # noqa: E402
from bench.scenarios.baselines import run_baselines  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="use this Redis instead of a private server")
    parser.add_argument("--quick", action="store_true", help="small N, for a smoke run")
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"subset of {','.join(ALL_SCENARIOS)} (e.g. AE, C0,E0 or CDE; default: all but G,"
        " which starts a Redis Cluster of its own, I, which opens a browser, J to Q and T)",
    )
    parser.add_argument("--json", type=Path, help="results file (default: bench/results/)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile each measured section (slower!)"
    )
    parser.add_argument(
        "--profile-workers",
        action="store_true",
        help="run the single-process workers of C and E under cProfile (slower!); C: where"
        " a task's time goes, by piece",
    )
    parser.add_argument(
        "--no-events",
        action="store_true",
        help="task lifecycle events off (AGENTIC_EVENTS=false), to measure what they cost",
    )
    soak = parser.add_argument_group("scenario T (the soak)")
    soak.add_argument("--soak-minutes", type=float, help="how long T sends (10; --quick: 1)")
    soak.add_argument("--soak-rate", type=float, help="tasks/s for T (default 80%% of C)")
    soak.add_argument("--soak-window", type=float, help="T's window in s (a 20th of the run)")
    soak.add_argument("--soak-ttl", type=int, help="T's AGENTIC_TASK_TTL_SECONDS (60)")
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="the engine's tracing on (an SDK provider whose exporter drops the spans), "
        "to measure what it costs",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="the queue's Prometheus metrics on in this process, to measure what they cost",
    )
    args = parser.parse_args(argv)
    for name in ("soak_minutes", "soak_rate", "soak_window", "soak_ttl"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    scenarios = parse_scenarios(args.scenarios)
    if scenarios is None:
        parser.error(f"--scenarios takes {','.join(ALL_SCENARIOS)}, got {args.scenarios!r}")
    args.scenarios = scenarios
    return args


def parse_scenarios(text: str) -> list[str] | None:
    """Scenario keys in run order from "AC0E", "A,C0,E" or "c0 e0"; None if invalid."""
    compact = re.sub(r"[\s,]", "", text.upper())
    if not compact or not re.fullmatch(r"(?:[A-Z]0?)+", compact):
        return None
    wanted = set(re.findall(r"[A-Z]0?", compact))
    if wanted - set(ALL_SCENARIOS):
        return None
    return [key for key in ALL_SCENARIOS if key in wanted]


@contextlib.contextmanager
def redis_target(url: str | None) -> Iterator[tuple[str, bool]]:
    """(url, own_server): the given URL, or a private no-persistence redis-server."""
    if url:
        yield url, False
        return
    server = RedisServer("--save", "", "--appendonly", "no")
    server.start()
    try:
        yield server.url, True
    finally:
        server.cleanup()


async def run_all(args: argparse.Namespace, url: str, own_server: bool, stamp: str) -> int:
    sizes = QUICK if args.quick else FULL
    queue_name = "bench" if own_server else f"bench-{uuid.uuid4().hex[:10]}"
    profile_dir = RESULTS_DIR / f"profile-{stamp}" if args.profile else None
    worker_profile_dir = RESULTS_DIR / f"profile-{stamp}" if args.profile_workers else None
    for directory in (profile_dir, worker_profile_dir):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    admin = Redis.from_url(url)
    bench = Bench(url, admin, queue_name, sizes, profile_dir)
    bench.worker_profile_dir = worker_profile_dir
    bench.own_server = own_server
    bench.events = not args.no_events
    minutes = args.soak_minutes or (1.0 if args.quick else 10.0)
    bench.soak = SoakSettings(minutes, args.soak_rate, args.soak_window, args.soak_ttl)
    bench.tracing = args.tracing
    bench.metrics = bench_metrics(args.metrics)
    try:
        await clear_keys(admin, queue_name)
        env = await environment(bench, own_server)
        print(f"queue_bench: {env}", flush=True)
        busy = env["busy_cpus"] = {"ab": await busy_cpus()}  # before each, all idle here
        others = env["others_cpus"] = {}  # during each: busy CPUs minus what ours used
        load = env["loadavg"] = {"start": load_average()}
        sample = load_sample()
        rows = await run_baselines(bench)
        others["ab"] = others_cpus(sample, load_sample())
        for key in args.scenarios:
            busy[key] = await busy_cpus()
            print(f"running {key} ...", flush=True)
            sample = load_sample()
            row = await SCENARIOS[key](bench)
            others[key] = others_cpus(sample, load_sample())
            bench.rows[key] = row
            rows.append(row)
            await clear_keys(admin, queue_name)
    finally:
        await clear_keys(admin, queue_name)
        await admin.aclose()
    busy["end"] = await busy_cpus()
    load["end"] = load_average()
    print_report(rows, args, sizes, env, profile_dir)
    out = args.json or RESULTS_DIR / f"queue-bench-{stamp}.json"
    write_json(out, report_dict(env, sizes, rows))
    print(f"\nresults: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with redis_target(args.redis_url) as (url, own_server), bench_tracing(args.tracing):
        return asyncio.run(run_all(args, url, own_server, stamp))


if __name__ == "__main__":
    sys.exit(main())
