"""`agentic worker`: serve handlers, in one process or N under a restarting supervisor.

Signals: SIGTERM, SIGINT and SIGHUP each stop gracefully within --grace (see
utils/redis_queue/signals.py and pipeline/supervisor.py). Under `-p N`, child i of
`--worker-id X` is `X.i` (1-based); a worker id a live worker holds is refused (exit 2)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable

import click
from prometheus_client.multiprocess import mark_process_dead

from utils.metrics import (
    QueueMetrics,
    aggregating_registry,
    install_model_metrics,
    multiprocess_dir,
    serve_metrics,
)
from utils.parent_death import SUPERVISOR_PID_ENV, die_with_parent
from utils.redis_queue import handlers
from utils.redis_queue.handlers import HandlerRegistry
from utils.redis_queue.signals import install_signal_handlers, remember_early_stops
from utils.redis_queue.worker import Worker, WorkerStats

from ..supervisor import Command, WorkerPool
from .common import EXIT_USAGE, CliState, pass_state, redis_collector, run

log = logging.getLogger("agentic.supervisor")


def serve_process_metrics(state: CliState, port: int) -> QueueMetrics:
    """This process's counters plus the Redis gauges, on http://0.0.0.0:port/metrics."""
    metrics = QueueMetrics()
    metrics.registry.register(redis_collector(state.settings))
    serve_metrics(port, metrics.registry)
    log.info("serving metrics on port %d", port)
    return metrics


def _supervise_with_metrics(
    state: CliState, processes: int, port: int | None, grace: float, burst: bool
) -> int:
    """Supervise; with a metrics port, the children write their counters to a shared
    directory (prometheus_client multiprocess mode) and this process serves the sum."""
    if port is None:
        return supervise(sys.argv[1:], processes, grace=grace, burst=burst)
    path = tempfile.mkdtemp(prefix="agentic-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # inherited by the children
    registry = aggregating_registry(path)
    registry.register(redis_collector(state.settings))
    serve_metrics(port, registry)
    log.info("serving the metrics of %d processes on port %d", processes, port)
    try:
        return supervise(
            sys.argv[1:],
            processes,
            grace=grace,
            burst=burst,
            on_exit=lambda pid: mark_process_dead(pid, path),  # type: ignore[no-untyped-call]
        )
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load_app(path: str) -> HandlerRegistry:
    """The handlers MODULE:ATTR names, as a usage error when it cannot be loaded."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: apps next to the caller import
    try:
        return handlers.load_app(path)
    except handlers.AppLoadError as exc:
        raise click.BadParameter(str(exc), param_hint="--app") from exc


@click.command()
@click.option(
    "--app",
    default=None,
    help="Handlers, MODULE:ATTR",
    envvar="AGENTIC_WORKER__APP",
    show_envvar=True,
)
@click.option(
    "--types",
    default=None,
    help="Task types to serve, comma-separated",
    envvar="AGENTIC_WORKER__TYPES",
    show_envvar=True,
)
@click.option(
    "-c",
    "--concurrency",
    type=int,
    default=None,
    help="Tasks at once per process",
    envvar="AGENTIC_WORKER__CONCURRENCY",
    show_envvar=True,
)
@click.option(
    "-p",
    "--processes",
    type=int,
    default=None,
    help="Worker processes",
    envvar="AGENTIC_WORKER__PROCESSES",
    show_envvar=True,
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Default task timeout (s)",
    envvar="AGENTIC_WORKER__TIMEOUT_SECONDS",
    show_envvar=True,
)
@click.option(
    "--grace",
    type=float,
    default=None,
    help="Shutdown grace (s)",
    envvar="AGENTIC_WORKER__GRACE_SECONDS",
    show_envvar=True,
)
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.option("--burst", is_flag=True, help="Drain the queue, then exit.")
@click.option("--worker-id", default=None, help="Worker id (default: host:pid).")
@click.option(
    "--exit-on-unavailable",
    is_flag=True,
    default=None,
    help="Exit (69) if Redis is unreachable at start-up (default: wait and retry).",
)
@click.option(
    "--scheduler/--no-scheduler",
    default=None,
    help="Run the queue's periodic schedules in this worker (default: on).",
    envvar="AGENTIC_WORKER__SCHEDULER",
    show_envvar=True,
)
@pass_state
def worker(
    state: CliState,
    app: str | None,
    types: str | None,
    concurrency: int | None,
    processes: int | None,
    timeout: float | None,
    grace: float | None,
    metrics_port: int | None,
    burst: bool,
    worker_id: str | None,
    exit_on_unavailable: bool | None,
    scheduler: bool | None,
) -> None:
    """Run a worker serving the handlers of --app."""
    early_stops = remember_early_stops()  # a stop while it starts is a graceful one
    supervisor = os.environ.pop(SUPERVISOR_PID_ENV, None)  # not for this worker's children
    if supervisor is not None:  # a pool's child stops (gracefully) when the pool's process dies
        die_with_parent(signal.SIGTERM, int(supervisor))
    ws = state.settings.worker
    app = app or ws.app
    if not app:
        raise click.UsageError("--app MODULE:ATTR is required (or AGENTIC_WORKER__APP)")
    registry = load_app(app)
    state.default_queue(registry.default_queue)  # the app's own queue (the pipeline's agents)
    processes = processes or ws.processes
    grace = ws.grace_seconds if grace is None else grace
    if processes > 1:
        if early_stops:  # stopped before it started anything
            sys.exit(0)
        sys.exit(_supervise_with_metrics(state, processes, metrics_port, grace, burst))
    metrics: QueueMetrics | None = None
    if multiprocess_dir():  # a supervisor's child: it aggregates and serves
        metrics = QueueMetrics()
    elif metrics_port is not None:
        metrics = serve_process_metrics(state, metrics_port)
    if metrics is not None:  # the agents' model usage goes to the same /metrics
        install_model_metrics(metrics.registry)
    task_types = [t.strip() for t in (types or ws.types or "").split(",") if t.strip()] or None
    try:
        w = Worker(
            state.queue(metrics=metrics),
            registry,
            worker_id=worker_id,
            concurrency=concurrency or ws.concurrency,
            task_types=task_types,
            default_timeout=timeout or ws.timeout_seconds,
            shutdown_grace=grace,
            burst=burst,
            exit_on_unavailable=exit_on_unavailable or ws.exit_on_unavailable,
            scheduler=ws.scheduler if scheduler is None else scheduler,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    # WorkerIdInUse exits 2 (common.run): a usage error, like a bad --app
    stats = run(lambda: _serve(w, supervised=supervisor is not None, early=early_stops))
    logging.getLogger("agentic.worker").info("worker %s stopped: %s", w.worker_id, stats)


async def _serve(w: Worker, *, supervised: bool, early: list[int]) -> WorkerStats:
    install_signal_handlers(w, supervised=supervised, early=early)
    stats = await w.run()
    if w.still_running:
        # Their tasks are settled; waiting for them (asyncio.run's clean-up, the thread
        # pool's join at exit) could take forever, so the process ends here.
        log.warning(
            "worker %s stopped: %s; exiting with %d handler(s) still running that could "
            "not be stopped",
            w.worker_id, stats, w.still_running,
        )  # fmt: skip
        logging.shutdown()
        os._exit(0)
    return stats


# what only the supervisor handles: each child runs one process, the supervisor serves the
# children's metrics, and each child gets its own worker id
_SUPERVISOR_ONLY = ("-p", "--processes", "--metrics-port", "--worker-id")


def _child_argv(argv: list[str], number: int) -> list[str]:
    """The supervisor's own arguments for child `number` (1-based): without the options
    only the supervisor handles, and `--worker-id X.number` if it was given `X`."""
    out, worker_id, i = [], None, 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name not in _SUPERVISOR_ONLY:
            out.append(argv[i])
        elif not eq:  # `--name value`: the value is the next argument
            value = argv[i + 1] if i + 1 < len(argv) else ""
            i += 1
        if name == "--worker-id":
            worker_id = value
        i += 1
    if worker_id is not None:  # one id per process, or they would share one registry entry
        out += ["--worker-id", f"{worker_id}.{number}"]
    return [sys.executable, "-m", "pipeline.cli", *out, "--processes", "1"]


def supervise(
    argv: list[str],
    processes: int,
    *,
    grace: float,
    burst: bool = False,
    on_exit: Callable[[int], None] | None = None,
) -> int:
    """Run `processes` children of `agentic <argv>` under a WorkerPool (restarts, one
    graceful stop per signal, a kill after the grace); 0 once every child stopped cleanly,
    1 if one had to be killed or failed, 2 if one was refused its worker id."""
    commands = {
        str(slot): Command(
            _child_argv(argv, slot + 1), dict(os.environ, AGENTIC_WORKER_SLOT=str(slot))
        )
        for slot in range(processes)
    }
    pool = WorkerPool(
        commands,
        grace_seconds=grace,
        on_exit=on_exit,
        restart_clean_exits=not burst,  # a burst child exits 0 when the queue is drained
        fatal_codes={EXIT_USAGE},  # a usage error (an id in use) does not heal by restarting
    )
    return pool.run()
