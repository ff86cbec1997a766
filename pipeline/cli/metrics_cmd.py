"""`agentic metrics`: a standalone Prometheus exporter of a queue's Redis-side gauges."""

from __future__ import annotations

import signal
import threading

import click

from utils.metrics import QueueMetrics, serve_metrics

from .common import CliState, pass_state, redis_collector


@click.command()
@click.option("--port", type=int, default=9108, help="Port of the /metrics endpoint.")
@click.option("--addr", default="0.0.0.0", help="Address to listen on.")
@pass_state
def metrics(state: CliState, port: int, addr: str) -> None:
    """Serve the queue's depth, DLQ, oldest-task age and worker gauges on /metrics, read
    from Redis at every scrape (for deployments that scrape one place)."""
    exporter = QueueMetrics()  # its counters stay 0 here; build info is what it adds
    exporter.registry.register(redis_collector(state.settings))
    server, _ = serve_metrics(port, exporter.registry, addr=addr)
    click.echo(f"serving http://{addr}:{server.server_port}/metrics", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
