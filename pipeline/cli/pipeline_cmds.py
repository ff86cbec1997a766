"""`agentic pipeline run|resume|status|list|cancel`: pipeline runs from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import click
from prometheus_client import CollectorRegistry

from utils.config import Settings
from utils.embedded_redis import EmbeddedRedisError, redis_for
from utils.metrics import (
    PipelineMetrics,
    install_model_metrics,
    serve_metrics,
)
from utils.redis_queue import QueueError, RedisTaskQueue
from utils.redis_queue.registry import list_workers
from utils.tracing import TRACES_FILE_ENV

from ..budget import budget_line
from ..distributed import DistributedPipelineManager
from ..enhanced import EnhancedPipelineManager
from ..errors import SpecError
from ..launcher import StageWorkers
from ..runs import PipelineResult, RunStatus, Stage
from ..spec import PipelineSpec, file_problems, load_spec
from .common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    CliState,
    emit_json,
    fail,
    pass_state,
    redis_collector,
    run,
)
from .follow import LocalOutputPrinter, OutputFollower
from .progress import ProgressPrinter, render_summary, run_row

__all__ = ["pipeline"]

WATCHDOG_SECONDS = 1.0
EVENTS_DRAIN_SECONDS = 10.0  # how long the progress lines may trail the run's end
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT
log = logging.getLogger("agentic.pipeline")


@click.group()
def pipeline() -> None:
    """Run and inspect agentic pipelines (dev -> QA -> fix -> deploy)."""


_redis_option = click.option(
    "--redis",
    "redis_mode",
    type=click.Choice(["auto", "external", "embedded"]),
    default="auto",
    help="auto: the configured Redis if it answers, else start an embedded one.",
)
_workers_option = click.option(
    "--workers",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    help="Start a worker process per task type (auto: when no live worker serves them).",
)
_concurrency_option = click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Tasks each started worker runs at once, every stage (model calls are what agents "
    "wait on)  [default: AGENTIC_WORKER__CONCURRENCY when set, else dev 4, qa 2, fix 2, "
    "deploy 1]",
)
_metrics_option = click.option(
    "--metrics-port", type=int, default=None, help="Serve /metrics while it runs (0: any port)."
)


@pipeline.command("run")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--local", is_flag=True, help="Run in this process, without Redis.")
@_redis_option
@_workers_option
@_concurrency_option
@_metrics_option
@click.option(
    "--follow",
    is_flag=True,
    envvar="AGENTIC_PIPELINE_FOLLOW",
    help="Print each subtask's output (model tokens, logs, progress) as it arrives "
    "(not with --json)  [env: AGENTIC_PIPELINE_FOLLOW]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def run_cmd(
    state: CliState,
    spec_path: str,
    local: bool,
    redis_mode: str,
    workers: str,
    concurrency: int | None,
    metrics_port: int | None,
    follow: bool,
    as_json: bool,
) -> None:
    """Run the pipeline SPEC (a JSON file) to its end, showing progress per stage."""
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        fail(str(exc), EXIT_USAGE)
    session = _Session(state.settings, redis_mode, workers, metrics_port, as_json, concurrency)
    session.follow = follow and not as_json
    try:
        if local:
            result = run(lambda: session.run_local(spec))
        else:
            result = run(lambda: session.run_distributed(spec))
    except KeyboardInterrupt:
        resumable = "" if local else "; `agentic pipeline resume` drives it on"
        fail(f"interrupted: the run stopped{resumable}", EXIT_INTERRUPTED)
    _finish([result], session, as_json)


@pipeline.command("validate")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@pass_state
def validate_cmd(state: CliState, spec_path: str) -> None:
    """Check SPEC without running it: its fields, its dependency graph (no cycle, no
    unknown or self dependency) and its replay file. Exit 0 when it would run, else 2."""
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        fail(str(exc), EXIT_USAGE)
    model = state.settings.model
    problems = file_problems(spec, model.backend, model.replay_file)
    if problems:
        fail(f"{spec_path}: " + "; ".join(problems), EXIT_USAGE)
    edges = sum(len(s.depends_on) for s in spec.subtasks)
    click.echo(f"{spec_path}: ok ({len(spec.subtasks)} dev subtask(s), {edges} dependency edge(s))")


@pipeline.command("resume")
@_redis_option
@_workers_option
@_concurrency_option
@_metrics_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@pass_state
def resume_cmd(
    state: CliState,
    redis_mode: str,
    workers: str,
    concurrency: int | None,
    metrics_port: int | None,
    as_json: bool,
) -> None:
    """Drive every unfinished run whose manager is gone to its end."""
    session = _Session(state.settings, redis_mode, workers, metrics_port, as_json, concurrency)
    results = run(session.resume)
    if not results and not as_json and not session.held:
        click.echo("no run to resume")
    _finish(results, session, as_json)


@pipeline.command("status")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run's whole state as JSON.")
@pass_state
def status_cmd(state: CliState, run_id: str, as_json: bool) -> None:
    """Show one run: its stage, subtasks, attempts and results."""

    async def status() -> Any:
        async with _manager(state.settings) as manager:
            return await manager.get_run(run_id)

    found = run(status)
    if as_json:
        emit_json(found.model_dump(mode="json"))
        return
    row = run_row(found)
    for name in ("run_id", "name", "status", "stage", "fix_rounds", "tokens", "artifact"):
        click.echo(f"{name:<11} {row[name]}")
    for reason in found.reasons:
        click.echo(f"{'reason':<11} {reason}")
    used = budget_line(found)
    if used is not None:
        click.echo(f"{'budget':<11} {used}")
    gate = found.approval
    if gate is not None:
        if gate.decision is None:
            until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(gate.deadline or 0))
            said = f"waiting until {until} (then {gate.on_timeout})"
        else:
            said = f"{gate.decision} by {gate.decided_by}" + (
                f": {gate.comment}" if gate.comment else ""
            )
        click.echo(f"{'approval':<11} before {gate.stage}: {said}")
        click.echo(f"{'to ship':<11} {', '.join(gate.summary.get('files', [])) or '-'}")
    for record in found.subtasks.values():
        took = f"{record.duration_seconds:.1f}s" if record.duration_seconds is not None else ""
        click.echo(
            f"  {record.stage:<7} {record.subtask_id:<10} {record.state:<10} "
            f"attempts {record.attempts}  {took}"
        )


@pipeline.command("list")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, help="How many of the newest runs."
)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def list_cmd(state: CliState, limit: int, as_json: bool) -> None:
    """List the newest runs."""

    async def recent() -> list[dict[str, Any]]:
        async with _manager(state.settings) as manager:
            return [run_row(r) for r in await manager.list_runs(limit)]

    rows = run(recent)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        click.echo(
            f"{row['run_id']:<40} {row['status']:<10} {row['stage']:<7} "
            f"fix rounds {row['fix_rounds']}  {row['created_at']}"
        )


@pipeline.command("approve")
@click.argument("run_id")
@click.option("--comment", default=None, help="Why, for the run's record.")
@click.option("--by", "by", default=None, help="Who approves  [default: user@host]")
@pass_state
def approve_cmd(state: CliState, run_id: str, comment: str | None, by: str | None) -> None:
    """Approve RUN_ID at its approval gate: it goes on to the gated stage."""
    _decide(state, run_id, "approved", by, comment)


@pipeline.command("reject")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why: the run's failure reason.")
@click.option("--by", "by", default=None, help="Who rejects  [default: user@host]")
@pass_state
def reject_cmd(state: CliState, run_id: str, reason: str, by: str | None) -> None:
    """Reject RUN_ID at its approval gate: it ends failed with REASON."""
    _decide(state, run_id, "rejected", by, reason)


def _decide(state: CliState, run_id: str, kind: str, by: str | None, text: str | None) -> None:
    async def decide() -> dict[str, Any]:
        async with _manager(state.settings) as manager:
            if kind == "approved":
                return await manager.approve_run(run_id, by=by, comment=text)
            return await manager.reject_run(run_id, text or "", by=by)

    standing = run(decide)
    if standing["decision"] != kind:
        fail(f"{run_id}: already {standing['decision']} by {standing.get('by')}")
    click.echo(f"{run_id}: {kind} by {standing.get('by')}")


@pipeline.command("cancel")
@click.argument("run_id")
@pass_state
def cancel_cmd(state: CliState, run_id: str) -> None:
    """Cancel a run: its queued subtasks are dropped and running ones stopped."""

    async def cancel() -> RunStatus:
        async with _manager(state.settings) as manager:
            return await manager.cancel_run(run_id)

    status = run(cancel)
    if not status.is_final:
        click.echo(f"{run_id}: cancel requested; the manager driving it ends it")
    else:
        click.echo(f"{run_id}: {status}")


@asynccontextmanager
async def _manager(settings: Settings) -> AsyncIterator[DistributedPipelineManager]:
    """A manager that only reads and cancels: it drives nothing and resumes nothing."""
    manager = DistributedPipelineManager(settings=settings, resume=False)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


class _Session:
    """One `run` or `resume`: the Redis, the worker processes and /metrics it needs."""

    def __init__(
        self,
        settings: Settings,
        redis_mode: str,
        workers: str,
        metrics_port: int | None,
        quiet: bool,
        concurrency: int | None = None,
    ) -> None:
        self.settings = settings
        self.redis_mode = redis_mode
        self.workers = workers
        if concurrency is None and "concurrency" in settings.worker.model_fields_set:
            concurrency = settings.worker.concurrency
        self.concurrency = concurrency
        self.metrics_port = metrics_port
        self.quiet = quiet
        self.registry = CollectorRegistry()
        self.metrics = PipelineMetrics(self.registry)
        self.held: list[tuple[str, str, float]] = []  # runs another manager still holds
        self.metrics_url: str | None = None
        self.follow = False  # print the subtasks' output as it arrives (run --follow)

    async def run_local(self, spec: PipelineSpec) -> PipelineResult:
        self._serve_metrics()
        self._say(f"{spec.name} {spec.version}: in this process (no Redis)")
        manager = EnhancedPipelineManager(
            settings=self.settings,
            metrics=self.metrics,
            on_event=self._printer(),
            workers=self.concurrency,  # worker coroutines of the in-process manager
        )
        if self.follow:  # the subtasks' output arrives as "output" events here
            manager.add_listener(LocalOutputPrinter())
        async with manager:
            return await manager.run(spec)

    async def run_distributed(self, spec: PipelineSpec) -> PipelineResult:
        """The run, its progress lines (and with --follow its subtasks' output) printed
        from its event stream in Redis, the one source every reader of a run shares."""
        async with self._distributed(listen=False) as manager:
            self._say(f"{spec.name} {spec.version}: {len(spec.subtasks)} dev subtask(s)")
            run_id = await manager.start_run(spec)
            follower = OutputFollower(manager.redis_queue) if self.follow else None
            reader = asyncio.create_task(self._print_events(manager, run_id, follower))
            try:
                return await manager.wait_run(run_id)
            finally:
                await manager.events.aclose()  # the run's "ended" is written: the reader ends
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(reader, EVENTS_DRAIN_SECONDS)
                if follower is not None:
                    await follower.aclose()

    async def _print_events(
        self,
        manager: DistributedPipelineManager,
        run_id: str,
        follower: OutputFollower | None,
    ) -> None:
        printer = self._printer()
        if printer is None and follower is None:
            return
        try:
            async for event in manager.events.follow(run_id):
                if printer is not None:
                    printer(event)
                if follower is not None:
                    follower(event)
        except QueueError as exc:  # a display must not break the run
            log.warning("cannot read run %s's events: %s", run_id, exc)

    async def resume(self) -> list[PipelineResult]:
        async with self._distributed() as manager:
            run_ids = await manager.resume_runs()
            if not run_ids:
                self.held = await manager.held_runs()
                for run_id, owner, seconds in self.held:
                    until = time.strftime("%H:%M:%S", time.localtime(time.time() + seconds))
                    self._say(
                        f"run {run_id} is still held by manager {owner} for {seconds:.0f} s "
                        f"more (until {until}): resume it then, or once that manager stops"
                    )
            return [await manager.wait_run(run_id) for run_id in run_ids]

    @asynccontextmanager
    async def _distributed(
        self, *, listen: bool = True
    ) -> AsyncIterator[DistributedPipelineManager]:
        try:
            context = redis_for(self.settings.redis_url, self.redis_mode, self.settings.password())  # type: ignore[arg-type]
            async with context as url:
                settings = self.settings
                where = "configured"
                if url != settings.redis_url:
                    settings = settings.model_copy(
                        update={"redis_url": url, "redis_password": None}
                    )
                    where = "embedded, stopped at the end"
                queue = RedisTaskQueue.from_settings(
                    settings, queue_name=settings.pipeline_queue_name()
                )
                manager = DistributedPipelineManager(
                    queue=queue,
                    settings=settings,
                    metrics=self.metrics,
                    on_event=self._printer() if listen else None,
                    resume=False,
                )
                async with manager:
                    self._say(f"redis: {queue.url} ({where}), queue {queue.queue_name}")
                    self._serve_metrics(settings)
                    workers: StageWorkers | None = None
                    watchdog: asyncio.Task[None] | None = None
                    try:
                        workers = await self._start_workers(manager.redis_queue)
                        if workers is not None:
                            watchdog = asyncio.create_task(_keep_alive(workers))
                        yield manager
                    finally:
                        if watchdog is not None:
                            watchdog.cancel()
                        if workers is not None:
                            await asyncio.to_thread(workers.stop)
        except EmbeddedRedisError as exc:
            fail(str(exc))

    async def _start_workers(self, queue: RedisTaskQueue) -> StageWorkers | None:
        if self.workers == "no":
            return None
        if self.workers == "auto":
            served = {t for w in await list_workers(queue) if w.alive for t in w.task_types}
            if {str(s) for s in Stage} <= served:
                self._say("workers: the live workers already serving this queue")
                return None
        per_stage = None if self.concurrency is None else {str(s): self.concurrency for s in Stage}
        workers = StageWorkers(
            queue.redis_url,
            queue.queue_name,
            cluster=queue.cluster,
            partitions=queue.partitions,
            concurrency=per_stage,
        )
        workers.start()
        types = ", ".join(workers.processes)
        self._say(f"workers: started one `agentic worker` process per task type ({types})")
        return workers

    def _serve_metrics(self, settings: Settings | None = None) -> None:
        if self.metrics_port is None:
            return
        if settings is not None:
            self.registry.register(redis_collector(settings, settings.pipeline_queue_name()))
        install_model_metrics(self.registry)  # --local runs the agents in this process
        try:
            server, _ = serve_metrics(self.metrics_port, self.registry, addr="127.0.0.1")
        except OSError as exc:
            fail(f"cannot serve metrics on port {self.metrics_port}: {exc.strerror}", EXIT_USAGE)
        self.metrics_url = f"http://127.0.0.1:{server.server_port}/metrics"
        self._say(f"metrics: {self.metrics_url}")

    def _printer(self) -> ProgressPrinter | None:
        if self.quiet:
            return None
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.getLogger("agentic.agents").setLevel(logging.WARNING)  # the lines say it
        return ProgressPrinter()

    def _say(self, line: str) -> None:
        if not self.quiet:
            click.echo(line)


async def _keep_alive(workers: StageWorkers) -> None:
    """Restart a worker process that died (a crash, or an agent that killed it), so
    its task type is not left unserved until the subtask timeout."""
    while True:
        await asyncio.sleep(WATCHDOG_SECONDS)  # watching child processes: no event to await
        for task_type in workers.respawn_dead():
            log.warning("the %s worker process died; started a new one", task_type)


def _finish(results: list[PipelineResult], session: _Session, as_json: bool) -> None:
    if as_json:
        emit_json([r.model_dump(mode="json") for r in results])
    else:
        traces = os.environ.get(TRACES_FILE_ENV)
        for result in results:
            click.echo("")
            click.echo(render_summary(result, metrics_url=session.metrics_url, traces_file=traces))
    if any(not r.succeeded for r in results):
        sys.exit(EXIT_FAILURE)
