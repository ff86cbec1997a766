"""Scenario I's tools: an `agentic dashboard` subprocess, timed HTTP requests against it,
Redis command counts per second, and a headless Chromium that keeps a page open."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis

from bench.harness.config import ROOT
from bench.harness.payloads import percentile
from bench.harness.probe import ServerCounters, server_counters
from bench.harness.processes import descendants, process_table

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT = 30.0  # spawn -> "dashboard on http://..." on a loaded machine
STOP_TIMEOUT = 15.0
_BANNER = re.compile(r"dashboard on (http://\S+?)/?(?:\s|$)")


@dataclass
class DashboardProc:
    """`agentic dashboard --port 0` in a process group of its own."""

    proc: asyncio.subprocess.Process
    url: str  # http://127.0.0.1:PORT, no trailing slash
    log_path: Path
    returncode: int | None = None

    def cpu_s(self) -> float:
        """CPU seconds the dashboard's process tree used so far (from /proc)."""
        table = process_table()
        return sum(table[pid][1] for pid in descendants(self.proc.pid, table))

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        assert self.proc.returncode is not None
        self.returncode = self.proc.returncode
        return self.returncode


def dashboard_env(redis_url: str, key_prefix: str, queue_name: str) -> dict[str, str]:
    """The dashboard's environment: this benchmark's Redis, prefix and queue, none of the
    caller's other AGENTIC_* settings (a `.env` file in the repository would still apply)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIC_")}
    env["AGENTIC_REDIS_URL"] = redis_url
    env["AGENTIC_KEY_PREFIX"] = key_prefix
    env["AGENTIC_QUEUE_NAME"] = queue_name
    return env


@contextlib.asynccontextmanager
async def agentic_dashboard(
    redis_url: str, key_prefix: str, queue_name: str
) -> AsyncIterator[DashboardProc]:
    """`python -m pipeline.cli dashboard --port 0`; yields once its first stdout line
    ("dashboard on http://127.0.0.1:PORT/") names the port, and /healthz answers."""
    fd, log_name = tempfile.mkstemp(prefix="bench-dashboard-", suffix=".log")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline.cli",
            "dashboard",
            "--port",
            "0",
            cwd=ROOT,
            env=dashboard_env(redis_url, key_prefix, queue_name),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=fd,
            start_new_session=True,  # a group of its own, so a kill reaches its children
        )
    finally:
        os.close(fd)
    dashboard: DashboardProc | None = None
    drain: asyncio.Task[None] | None = None
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        match = _BANNER.search(line.decode(errors="replace"))
        if match is None:
            raise RuntimeError(f"agentic dashboard printed {line!r}, not its URL")
        dashboard = DashboardProc(proc, match.group(1).rstrip("/"), Path(log_name))
        drain = asyncio.create_task(_drain(proc.stdout))  # nothing more is expected
        await _until_healthy(dashboard.url)
        yield dashboard
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        print(f"dashboard log ({log_name}):\n{Path(log_name).read_text()}", file=sys.stderr)
        raise
    finally:
        if dashboard is not None:
            await dashboard.stop()
        else:
            await proc.wait()
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
    if proc.returncode not in (0, -signal.SIGTERM):
        print(f"dashboard exited with {proc.returncode}:\n{dashboard.log_tail()}", file=sys.stderr)
    else:
        Path(log_name).unlink(missing_ok=True)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def _until_healthy(url: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)  # uvicorn binds before it serves: poll briefly


# -- latency ---------------------------------------------------------------------------


@dataclass
class Timings:
    """Wall times (seconds) of one request kind, and the bytes of its last response."""

    seconds: list[float] = field(default_factory=list)
    bytes: int = 0

    def summary(self) -> dict[str, float]:
        ms = [s * 1e3 for s in self.seconds]
        return {
            "n": len(ms),
            "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99),
            "mean_ms": sum(ms) / len(ms),
            "max_ms": max(ms),
        }


async def timed_get(client: httpx.AsyncClient, path: str, into: Timings) -> httpx.Response:
    """GET `path`, the whole body read; its wall time added to `into`; non-200 raises."""
    t0 = time.perf_counter()
    response = await client.get(path)
    into.seconds.append(time.perf_counter() - t0)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
    into.bytes = len(response.content)
    return response


async def fresh_get(url: str, path: str) -> float:
    """Seconds for GET `path` on a new TCP connection (Connection: close), read to EOF: a
    floor without keep-alive, so without whatever a reused connection adds."""
    parts = urlsplit(url)
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        reply = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    seconds = time.perf_counter() - t0
    if not reply.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path}: {reply[:100]!r}")
    return seconds


# -- Redis commands ----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandRate:
    """Redis commands per second over a window (INFO commandstats deltas; commands the
    scripts call count too), with Redis' CPU seconds per second."""

    seconds: float
    calls: dict[str, int]  # command -> calls in the window
    usec: dict[str, int]  # command -> Redis time in the window
    redis_cpu_s: float

    @property
    def total_per_s(self) -> float:
        return sum(self.calls.values()) / self.seconds

    def per_s(self) -> dict[str, float]:
        return {name: n / self.seconds for name, n in self.calls.items()}


def command_delta(start: ServerCounters, end: ServerCounters, seconds: float) -> CommandRate:
    delta = end.minus(start)
    delta.pop("info", None)  # the probe's own INFO calls
    return CommandRate(
        seconds=seconds,
        calls={name: calls for name, (calls, _) in delta.items()},
        usec={name: usec for name, (_, usec) in delta.items()},
        redis_cpu_s=end.cpu_s - start.cpu_s,
    )


async def count_commands(admin: Redis, seconds: float) -> CommandRate:
    """What Redis ran in the next `seconds` (whoever sent it)."""
    start = await server_counters(admin)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)  # a measuring window: nothing to wait for
    end = await server_counters(admin)
    return command_delta(start, end, time.perf_counter() - t0)


# -- a browser ---------------------------------------------------------------------------


@dataclass
class BrowserWindow:
    """What one open page did to Redis over a window, and what it fetched."""

    commands: CommandRate
    requests: dict[str, int]  # request path (query cut) -> count in the window
    dashboard_cpu_s: float
    charts: int  # charts the page drew before the window opened


async def browser_window(
    admin: Redis, dashboard: DashboardProc, path: str, seconds: float
) -> BrowserWindow:
    """Open `path` in headless Chromium, wait until its charts are drawn, then count
    Redis' commands, the page's requests and the dashboard's CPU for `seconds`."""
    from playwright.async_api import Request, async_playwright  # only scenario I needs it

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 900})
            counting = False
            requests: dict[str, int] = {}

            def seen(request: Request) -> None:
                if counting:
                    key = request.url.split("?", 1)[0].removeprefix(dashboard.url)
                    if "partial=1" in request.url:
                        key += "?partial=1"
                    requests[key] = requests.get(key, 0) + 1

            page.on("request", seen)
            await page.goto(f"{dashboard.url}{path}", wait_until="load")
            charts = await page.locator(".chart[data-history]").count()
            await page.wait_for_function(
                "n => document.querySelectorAll('.chart[data-drawn=\"1\"]').length >= n",
                arg=charts,
                timeout=30_000,
            )
            visible = await page.evaluate("document.visibilityState")
            if visible != "visible":
                raise RuntimeError(f"the page is {visible}: it would not refresh itself")
            counting = True
            cpu0 = dashboard.cpu_s()
            rate = await count_commands(admin, seconds)
            cpu = dashboard.cpu_s() - cpu0
            counting = False
        finally:
            await browser.close()
    return BrowserWindow(rate, requests, cpu, charts)


def top_commands(rate: CommandRate, minus: CommandRate | None, n: int = 5) -> list[list[Any]]:
    """[name, calls/s net of `minus`, usec per call] of the n most frequent commands."""
    base = minus.per_s() if minus is not None else {}
    net = {name: per_s - base.get(name, 0.0) for name, per_s in rate.per_s().items()}
    ranked = sorted(net.items(), key=lambda item: item[1], reverse=True)[:n]
    return [
        [name, round(per_s, 2), round(rate.usec[name] / rate.calls[name], 2)]
        for name, per_s in ranked
    ]


def as_dict(rate: CommandRate) -> dict[str, Any]:
    return {
        "seconds": round(rate.seconds, 3),
        "commands_per_s": round(rate.total_per_s, 3),
        "redis_cpu_s": round(rate.redis_cpu_s, 4),
        "calls": dict(sorted(rate.calls.items())),
        "usec": dict(sorted(rate.usec.items())),
    }
