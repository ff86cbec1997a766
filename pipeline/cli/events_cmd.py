"""`agentic pipeline events RUN_ID`: a run's events as its manager recorded them (the
stream `pipeline run` prints its progress lines from), optionally as they come."""

from __future__ import annotations

import json

import click

from utils.redis_queue import RedisTaskQueue

from ..events import RunEventLog, event_dict
from ..runs import RunEvent
from .common import CliState, pass_state, run
from .progress import ProgressPrinter

__all__ = ["events_cmd"]


@click.command("events")
@click.argument("run_id")
@click.option(
    "--follow", is_flag=True, help="Keep printing events as they come, until the run ends."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@pass_state
def events_cmd(state: CliState, run_id: str, follow: bool, as_json: bool) -> None:
    """Print a pipeline run's events (started, stage, submitted, finished, failed,
    approval, budget_warning, ended, ...) from its event stream in Redis."""
    settings = state.settings
    printer = ProgressPrinter()

    def show(event: RunEvent) -> None:
        if as_json:
            click.echo(json.dumps(event_dict(event), default=str))
        else:
            printer(event)

    async def go() -> int:
        queue = RedisTaskQueue.from_settings(settings, queue_name=settings.pipeline_queue_name())
        async with queue:
            log = RunEventLog(queue)
            shown = 0
            if follow:
                async for event in log.follow(run_id):
                    show(event)
                    shown += 1
                return shown
            after = "0-0"
            while True:
                batch = await log.read(run_id, after=after)
                for entry_id, event in batch:
                    show(event)
                    after = entry_id
                shown += len(batch)
                if len(batch) < 1000:
                    return shown

    if run(go) == 0:
        click.echo(f"error: no events of run {run_id!r} (none yet, or they expired)", err=True)
        raise SystemExit(1)
