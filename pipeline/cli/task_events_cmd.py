"""`agentic events`: the queue's task lifecycle events (enqueued, started, retried,
completed, failed, dead_lettered, cancelled, ...), from every partition, optionally as
they are written."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from utils.redis_queue import TaskEvent
from utils.redis_queue.lifecycle import EVENT_NAMES, since_position

from .common import CliState, pass_state, run

__all__ = ["task_events"]


def _line(event: TaskEvent) -> str:
    at = datetime.fromtimestamp(event.at_ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    text = f"{at} p{event.partition} {event.event:<13} {event.task_id} {event.task_type}"
    text += f" attempt={event.attempt}"
    return f"{text} error={event.error}" if event.error else text


@click.command("events")
@click.option("--follow", "-f", is_flag=True, help="Keep printing events as they are written.")
@click.option(
    "--since",
    default=None,
    help="'$' (new events only), '0' (the oldest kept), a stream id <ms>-<seq>, an ISO 8601 "
    "time or seconds since the epoch. Default: '0', with --follow '$'.",
)
@click.option("--type", "task_types", multiple=True, help="Only tasks of this type (repeatable).")
@click.option(
    "--event",
    "names",
    multiple=True,
    type=click.Choice(EVENT_NAMES),
    help="Only this event (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@pass_state
def task_events(
    state: CliState,
    follow: bool,
    since: str | None,
    task_types: tuple[str, ...],
    names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Print the queue's task events from each partition's bounded events stream
    (AGENTIC_EVENTS=false turns writing them off; AGENTIC_EVENTS_MAX_LEN bounds each
    stream). Without --follow it prints what the streams hold and exits 0."""
    start = since if since is not None else ("$" if follow else "0")
    try:
        since_position(start)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None

    async def go() -> None:
        async with state.queue() as queue:
            async for event in queue.events(
                start, follow=follow, task_types=task_types, names=names
            ):
                click.echo(json.dumps(event.to_dict()) if as_json else _line(event))

    run(go)
