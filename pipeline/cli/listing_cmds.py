"""`agentic task list|search` and `agentic dlq list`: paged listings and a bounded search.

--json prints exactly what the engine's to_dict() gives (TaskPage, SearchResult), the
same shapes as the dashboard's JSON API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from utils.redis_queue import SearchResult, TaskPage, TaskPriority, TaskState, TaskSummary
from utils.redis_queue.queue.listing import MAX_PAGE, MAX_SCAN, MAX_SEARCH_TEXT
from utils.redis_queue.summaries import decode_cursor

from .common import CliState, emit_json, pass_state, run

__all__ = ["dlq_list", "render_summaries", "task_list", "task_search"]

T = TypeVar("T")
STATES = [s.value for s in TaskState]
_PRIORITY_NAMES = {p.value: p.name.lower() for p in TaskPriority}


def _checked_cursor(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a malformed cursor (exit 2) before connecting."""
    if value is not None:
        state = TaskState(ctx.params.get("state", TaskState.DEAD_LETTER))
        try:
            decode_cursor(value, state)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _checked_text(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not 1 <= len(value) <= MAX_SEARCH_TEXT:
        raise click.BadParameter(f"must be 1-{MAX_SEARCH_TEXT} characters")
    return value


state_option = click.option(
    "--state",
    type=click.Choice(STATES),
    default="pending",
    is_eager=True,  # read before --cursor, which must belong to it
    help="Which tasks.",
)
type_option = click.option("--type", "task_type", default=None, help="Only tasks of this type.")
limit_option = click.option(
    "--limit", type=click.IntRange(1, MAX_PAGE), default=50, help="Tasks per page."
)
cursor_option = click.option(
    "--cursor",
    default=None,
    callback=_checked_cursor,
    help="Continue after the page that printed this cursor.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """`90`, `90s`, `30m`, `2h` or `7d` as seconds."""
    if value is None:
        return None
    text = value.strip().lower()
    unit = _UNITS.get(text[-1:], 0)
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise click.BadParameter(f"{value!r} is not a duration: use e.g. 90, 90s, 30m, 2h, 7d")
    return seconds


@click.command("list")
@state_option
@type_option
@limit_option
@cursor_option
@click.option(
    "--older-than",
    callback=_duration,
    default=None,
    help="Only tasks created this long ago or more (finished ones: finished), e.g. 2h.",
)
@json_option
@pass_state
def task_list(
    cli: CliState,
    state: str,
    task_type: str | None,
    limit: int,
    cursor: str | None,
    older_than: float | None,
    as_json: bool,
) -> None:
    """Tasks in a state, a page at a time, in that state's order: pending in dequeue
    order, delayed by due time, processing by lease deadline, finished and dead-lettered
    newest first."""
    _print_page(cli, TaskState(state), task_type, limit, cursor, as_json, older_than)


@click.command("list")
@type_option
@limit_option
@cursor_option
@json_option
@pass_state
def dlq_list(
    state: CliState, task_type: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """Dead-lettered tasks, newest first, with the first line of their last error."""
    _print_page(state, TaskState.DEAD_LETTER, task_type, limit, cursor, as_json)


@click.command("search")
@click.argument("text", callback=_checked_text)
@click.option("--state", type=click.Choice(STATES), default=None, help="Only this state.")
@type_option
@click.option(
    "--scan-limit",
    type=click.IntRange(1, MAX_SCAN),
    default=10_000,
    help="Read at most this many task records (each is one hash read in Redis).",
)
@click.option("--limit", type=click.IntRange(1, MAX_PAGE), default=50, help="Matches at most.")
@json_option
@pass_state
def task_search(
    cli: CliState,
    text: str,
    state: str | None,
    task_type: str | None,
    scan_limit: int,
    limit: int,
    as_json: bool,
) -> None:
    """Tasks whose id, payload, result or error contain TEXT (any case): the task with
    that id first, then the others in listing order (running, pending, delayed,
    dead-lettered, failed, completed, cancelled), reading at most --scan-limit records."""

    async def go() -> SearchResult:
        async with cli.queue() as queue:
            return await queue.search_tasks(
                text, state=state, task_type=task_type, scan_limit=scan_limit, limit=limit
            )

    found = _usage_checked(go)
    if as_json:
        emit_json(found.to_dict())
        return
    click.echo(render_summaries(found.tasks))
    scope = "all of them" if found.complete else "stopped there (--scan-limit, --limit)"
    click.echo(f"{len(found.tasks)} match(es); {found.scanned:,} task(s) read, {scope}")


def _print_page(
    state: CliState,
    listed: TaskState,
    task_type: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    older_than: float | None = None,
) -> None:
    async def go() -> TaskPage:
        async with state.queue() as queue:
            return await queue.page_tasks(
                listed, task_type=task_type, limit=limit, cursor=cursor, older_than=older_than
            )

    page = _usage_checked(go)
    if as_json:
        emit_json(page.to_dict())
        return
    click.echo(render_summaries(page.tasks))
    total = "?" if page.total is None else f"{page.total:,}"
    click.echo(f"{len(page.tasks)} of {total} {listed} task(s)")
    if page.next_cursor is not None:
        click.echo(f"next page: --cursor {page.next_cursor}")


def _usage_checked(go: Callable[[], Awaitable[T]]) -> T:
    """run(), with an argument the engine refused (ValueError) as a usage error (exit 2)."""
    try:
        return run(go)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def render_summaries(tasks: list[TaskSummary]) -> str:
    """A table: id, type, priority, state, attempts, time of the list's order, error."""
    if not tasks:
        return "no tasks"
    rows = [("ID", "TYPE", "PRIORITY", "STATE", "ATTEMPTS", "AT", "ERROR")]
    for t in tasks:
        rows.append(
            (
                t.task_id,
                t.task_type,
                _PRIORITY_NAMES.get(t.priority, str(t.priority)),
                t.state,
                str(t.attempts),
                (t.at or "")[:23],  # to the millisecond
                t.error_line or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
