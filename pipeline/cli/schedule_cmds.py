"""`agentic schedule add|list|remove`: periodic tasks, run by every worker's scheduler
(unless started with --no-scheduler)."""

from __future__ import annotations

import click

from utils.redis_queue import ScheduleInfo

from .common import CliState, emit_json, fail, pass_state, run
from .queue_cmds import PriorityParam, _load_payload

__all__ = ["schedule"]


@click.group()
def schedule() -> None:
    """Periodic tasks: a task enqueued on a cron expression or every N seconds."""


@schedule.command("add")
@click.argument("name")
@click.argument("task_type")
@click.option("--cron", default=None, help='Cron expression, e.g. "*/5 * * * *".')
@click.option("--every", type=float, default=None, help="Interval in seconds.")
@click.option("--payload", default="{}", show_default=True, help="JSON object, or @file.")
@click.option("--priority", type=PriorityParam(), default="normal", show_default=True)
@click.option("--timezone", "tz", default="UTC", show_default=True, help="IANA zone of --cron.")
@click.option(
    "--catch-up",
    type=int,
    default=1,
    show_default=True,
    help="After an outage, enqueue at most this many of the missed ticks (the latest).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the schedule as JSON.")
@pass_state
def schedule_add(
    state: CliState,
    name: str,
    task_type: str,
    cron: str | None,
    every: float | None,
    payload: str,
    priority: int,
    tz: str,
    catch_up: int,
    as_json: bool,
) -> None:
    """Add (or replace) schedule NAME, enqueueing a TASK_TYPE task on --cron or --every.
    Example: agentic schedule add nightly-report report --cron "0 2 * * *" --timezone
    Europe/Paris"""
    if (cron is None) == (every is None):
        fail("give exactly one of --cron and --every", 2)
    body = _load_payload(payload)

    async def go() -> ScheduleInfo:
        async with state.queue() as queue:
            return await queue.schedule(
                name,
                cron=cron,
                every=every,
                task_type=task_type,
                payload=body,
                priority=priority,
                timezone=tz,
                catch_up=catch_up,
            )

    info = run(go)
    if as_json:
        emit_json(info.to_dict())
    else:
        click.echo(f"schedule {name}: next tick {info.to_dict()['next_due']}")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def schedule_list(state: CliState, as_json: bool) -> None:
    """Every schedule with its next due time, last tick and skipped ticks."""

    async def go() -> list[ScheduleInfo]:
        async with state.queue() as queue:
            return await queue.list_schedules()

    found = [info.to_dict() for info in run(go)]
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no schedules")
        return
    for row in found:
        when = (
            f"cron {row['cron']!r} ({row['timezone']})"
            if row["cron"]
            else f"every {row['every']} s"
        )
        click.echo(
            f"{row['name']:<20} {row['task_type']:<12} {when:<32} next {row['next_due']}"
            f"  last {row['last_tick'] or '-'}  skipped {row['skipped']}"
        )


@schedule.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def schedule_remove(state: CliState, name: str, as_json: bool) -> None:
    """Remove schedule NAME (ticks already enqueued stay). Exit 1 if there is none."""

    async def go() -> bool:
        async with state.queue() as queue:
            return await queue.unschedule(name)

    removed = run(go)
    if as_json:
        emit_json({"name": name, "removed": removed})
    elif removed:
        click.echo(f"schedule {name} removed")
    if not removed:
        fail(f"no schedule named {name!r}")
