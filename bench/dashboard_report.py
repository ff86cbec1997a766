"""What queue_bench.py prints for scenario I: each dashboard page's latency and what one
request of it costs (Redis commands and time, the dashboard's CPU), the searches' scan
bounds, and the Redis load of one idle browser."""

from __future__ import annotations

from typing import Any

from bench.harness.context import Row
from bench.report import table  # report.py imports this module when it prints I
from bench.scenarios.dashboard import FLOOR, FRESH, TARGET_P95_MS

SHOWN = ("pending", "delayed", "processing", "completed", "dlq", "cancelled")


def i_text(row: Row) -> str:
    data = row.data
    ping = data["raw"]["PING"]["p50_ms"]
    sizes = data["populate"]
    big, small = list(sizes)
    headers = [
        "page", "p50 ms", "p95 ms", "p99 ms", "max ms", "p50 / PING", "KB",
        "Redis cmds/req", "Redis ms/req", "dashboard CPU ms/req", "goal",
    ]  # fmt: skip
    body = [_page_line(name, p, ping) for name, p in data["pages"].items()]
    for name, r in data["raw"].items():
        label = name if name.startswith("GET") else f"raw {name} (redis.asyncio)"
        body.append([label, *_ms(r), f"{r['p50_ms'] / ping:.1f}x"] + ["-"] * 5)
    idle = data["idle"]
    bg, br = idle["background"], idle["browser"]
    top = ", ".join(f"{n} {per_s:,.1f}/s ({us:.1f} us)" for n, per_s, us in idle["top_commands"])
    requests = ", ".join(f"{k} x{v}" for k, v in sorted(idle["browser_requests"].items()))
    search = data["search"]
    lines = [
        f"\nI: the dashboard (`agentic dashboard` subprocess) over queue {big!r}: "
        f"{_sizes(sizes[big]['sizes'])}, plus a queue of "
        f"{sum(sizes[small]['sizes'][k] for k in SHOWN):,} tasks; filled in "
        f"{sum(s['seconds'] for s in sizes.values()):.1f} s.",
        f"{data['pages']['overview /']['n']} requests per page over one keep-alive httpx "
        "connection, one at a time, pages shuffled each round; PING and HGETALL (of a DLQ",
        "task's hash) timed in the same rounds. Redis cmds and ms/req (INFO commandstats,",
        "script-called commands included) and the dashboard's CPU (/proc): each page",
        f"requested alone {data['sizes_i']['per_page']} times. goal: p95 < "
        f"{TARGET_P95_MS:.0f} ms (overview and list pages).",
        table(headers, body),
        f"keep-alive floor: /healthz p50 {data['pages'][FLOOR]['p50_ms']:.1f} ms on the reused "
        f"connection, {data['raw'][FRESH]['p50_ms']:.1f} ms on a new one each time; what a",
        "reused connection adds (if anything) is in every page's figure above.",
        f"deep page: next_cursor followed {data['deep_page']['hops']} times "
        f"({data['deep_page']['ms_per_hop']:.1f} ms per hop via /api/), "
        f"{data['deep_page']['tasks']} tasks on it.",
        f"search, no match: scanned {search['no_match']['scanned']:,} task records, complete="
        f"{search['no_match']['complete']}; early hit: scanned "
        f"{search['early_hit']['scanned']:,}, found {search['early_hit']['found']}, "
        f"complete={search['early_hit']['complete']}.",
        f"\nidle load ({idle['seconds']:.0f} s windows): dashboard alone "
        f"{bg['commands_per_s']:,.2f} Redis cmds/s; with the overview open in headless "
        f"Chromium {br['commands_per_s']:,.1f} cmds/s: +{idle['net_commands_per_s']:,.1f} "
        "cmds/s for one browser",
        f"  Redis CPU +{idle['redis_cpu_pct']:.2f}% of a core, dashboard process "
        f"{idle['dashboard_cpu_pct']:.1f}% of a core; {idle['charts']} charts on the page",
        f"  top commands (net /s, Redis us per call): {top}",
        f"  the page's requests in the window: {requests}",
    ]
    if "profiled" in data:
        lines.append("\nin-process (--profile, cProfile on): Redis round trips per request")
        lines += [
            f"  {name}: {p['round_trips']:,.1f} round trips, {p['wall_ms_profiled']:,.1f} ms "
            f"({p['profile']})"
            for name, p in data["profiled"].items()
        ]
    return "\n".join(lines)


def _ms(p: dict[str, Any]) -> list[str]:
    return [f"{p[k]:,.1f}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]


def _page_line(name: str, p: dict[str, Any], ping: float) -> list[str]:
    goal = ("hit" if p["p95_ms"] < TARGET_P95_MS else "MISS") if p["goal"] else "-"
    return [
        name,
        *_ms(p),
        f"{p['p50_ms'] / ping:,.0f}x",
        f"{p['bytes'] / 1024:,.1f}",
        f"{p['redis_commands']:,.0f}",
        f"{p['redis_ms']:,.1f}",
        f"{p['dashboard_cpu_ms']:,.1f}",
        goal,
    ]


def _sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{sizes[k]:,} {k}" for k in SHOWN)
