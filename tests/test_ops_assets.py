"""The operations assets against the metrics that exist, and a real Prometheus scraping a
real worker. Needs the `prometheus` Debian package (promtool, prometheus), which .ci/run
installs; the tests that need it skip, saying so, where it is absent."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import ROOT, agentic_argv, agentic_env, worker_processes
from tests.support.redis_server import free_port
from utils.metrics import QueueMetrics, RedisQueueCollector
from utils.redis_queue import RedisTaskQueue

ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "agentic-dashboard.json"
METRIC_NAME = re.compile(r"\bagentic_[a-z_]+")

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="the prometheus Debian package is not installed (.ci/run installs it)",
)


def _exposed_sample_names(redis_url: str, queue_name: str) -> set[str]:
    metrics = QueueMetrics()
    metrics.task_enqueued(queue_name, "t")
    metrics.task_finished(queue_name, "t", "completed", 0.1, 0.1)
    metrics.worker_time(queue_name, 1.0, 10.0)
    metrics.registry.register(RedisQueueCollector(redis_url, [queue_name]))
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


async def test_every_dashboard_and_alert_metric_is_served_by_a_shipped_process(
    queue: RedisTaskQueue, redis_url: str, queue_name: str
) -> None:
    """Scrape what ships (a worker with --metrics-port that has run tasks, and the
    standalone `agentic metrics` exporter) and check every name the dashboard and the
    alert rules query against what they served."""
    await queue.enqueue_many(
        [
            {"task_id": "ok", "task_type": "noop", "payload": {}},
            {"task_id": "no", "task_type": "permanent", "payload": {}},
        ]
    )
    worker_port, exporter_port = free_port(), free_port()
    env = agentic_env(redis_url, queue_name)
    worker = subprocess.Popen(
        agentic_argv("worker", "--app", "tests.support.worker_apps:registry",
                     "--metrics-port", str(worker_port)),
        cwd=ROOT, env=env,
    )  # fmt: skip
    exporter = subprocess.Popen(
        agentic_argv("metrics", "--port", str(exporter_port), "--addr", "127.0.0.1"),
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        await queue.wait_for_result("ok", timeout=20)
        finished = "agentic_tasks_finished_total"
        served = await _served_names(worker_port, lambda names: finished in names)
        served |= await _served_names(exporter_port, lambda names: "agentic_queue_tasks" in names)
    finally:
        for proc in (worker, exporter):
            proc.terminate()
            proc.wait(20)
    used = set()
    for text in [*_dashboard_exprs(), ALERTS.read_text()]:
        used |= set(METRIC_NAME.findall(text))
    assert used and used <= served, f"queried but served by no shipped process: {used - served}"


async def _served_names(port: int, ready: Callable[[set[str]], bool]) -> set[str]:
    deadline = time.monotonic() + 20
    while True:  # another process is starting or working: nothing in Redis says when
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
            # a family declared without a sample is not served: nothing answers a query
            names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
            if ready(names):
                return names
        except OSError:
            pass
        assert time.monotonic() < deadline, f"port {port}: no scrape matched in time"
        await asyncio.sleep(0.05)


async def test_dashboard_and_alerts_only_use_metrics_that_exist(
    queue: RedisTaskQueue, redis_url: str, queue_name: str
) -> None:
    exposed = _exposed_sample_names(redis_url, queue_name)
    used = set()
    for text in [*_dashboard_exprs(), ALERTS.read_text()]:
        used |= set(METRIC_NAME.findall(text))
    assert used, "no metric names found"
    assert used <= exposed, f"unknown metrics: {sorted(used - exposed)}"
    # and every panel has a title and at least one query
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        assert panel["title"] and panel["targets"]


@needs_prometheus
def test_alert_rules_pass_promtool() -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@needs_prometheus
@pytest.mark.timeout(90)
async def test_prometheus_scrapes_a_worker_and_sees_depth_and_counters(
    queue: RedisTaskQueue, redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    await queue.enqueue_many(
        {"task_id": f"p{i}", "task_type": "noop", "payload": {}} for i in range(7)
    )
    await queue.enqueue("unserved", "nobody_serves_this", {})
    metrics_port, web_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        "  - job_name: agentic\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{web_port}"
    try:
        with worker_processes(redis_url, queue_name) as procs:
            procs.start("--types", "noop", "--metrics-port", str(metrics_port))
            q = f'queue="{queue_name}"'
            completed = await _eventually_query(
                api, f'agentic_tasks_finished_total{{{q},outcome="completed"}}', 7.0
            )
            pending = await _eventually_query(
                api, f'agentic_queue_tasks{{{q},state="pending"}}', 1.0
            )
            live = await _eventually_query(api, f"agentic_workers_live{{{q}}}", 1.0)
        assert completed == 7.0 and pending == 1.0 and live == 1.0
        with urllib.request.urlopen(f"{api}/api/v1/rules", timeout=5) as response:
            groups = json.loads(response.read())["data"]["groups"]
        assert [g["name"] for g in groups] == ["agentic-pipeline"]
        assert len(groups[0]["rules"]) == 7
    finally:
        prometheus.terminate()
        prometheus.wait(10)


async def _eventually_query(api: str, expr: str, expected: float) -> float:
    """Prometheus scrapes every second: wait until it has seen the expected value."""
    deadline = time.monotonic() + 30
    value = None
    while time.monotonic() < deadline:
        try:
            result = _query(api, expr)
            value = float(result[0]["value"][1]) if result else None
        except OSError:
            value = None  # Prometheus is still starting
        if value == expected:
            return value
        await asyncio.sleep(0.25)
    raise AssertionError(f"{expr} = {value}, expected {expected}")


def test_no_registry_is_left_shared(queue_name: str) -> None:
    # Every QueueMetrics has its own registry, so tests and processes never collide.
    assert QueueMetrics().registry is not QueueMetrics().registry
    assert isinstance(QueueMetrics().registry, CollectorRegistry)
