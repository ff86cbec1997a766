"""Bulk actions: `agentic queue purge --state S`, `agentic task delete ID` and the
`--type` form of `agentic task cancel`. What deletes or cancels many tasks asks first on
a terminal and needs --yes anywhere else."""

from __future__ import annotations

import sys

import click

from utils.redis_queue import TaskState, TaskStateError

from .common import CliState, emit_json, fail, pass_state, run

__all__ = ["cancel_by_type", "queue_purge", "task_delete"]

PURGE_STATES = ("pending", "delayed", "dlq", "completed", "failed", "cancelled")


def confirm(question: str, yes: bool) -> None:
    """Go on with --yes; on a terminal ask; otherwise refuse (exit 2): a script that
    meant it says --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError("this deletes or cancels tasks for good: pass --yes")
    if not click.confirm(question, default=False):
        fail("nothing done")


@click.command("purge")
@click.option(
    "--state", "state_name", type=click.Choice(PURGE_STATES), required=True, help="Which tasks."
)
@click.option("--yes", is_flag=True, help="Do not ask (needed when stdin is not a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print {state, purged} as JSON.")
@pass_state
def queue_purge(state: CliState, state_name: str, yes: bool, as_json: bool) -> None:
    """Delete every task in one state, each with every key kept for it, in batches
    (running tasks are never purged: `agentic task delete ID --force`)."""
    confirm(f"Delete every {state_name} task of queue {state.settings.queue_name!r}?", yes)

    async def go() -> int:
        async with state.queue() as queue:
            return await queue.purge(state_name)

    purged = run(go)
    if as_json:
        emit_json({"state": state_name, "purged": purged})
    else:
        click.echo(f"purged {purged} {state_name} task(s)")


@click.command("delete")
@click.argument("task_id")
@click.option("--force", is_flag=True, help="Delete a running task too (its worker is told).")
@click.option("--json", "as_json", is_flag=True, help="Print {task_id, was} as JSON.")
@pass_state
def task_delete(state: CliState, task_id: str, force: bool, as_json: bool) -> None:
    """Delete one task and every key kept for it, in whatever state but running (unless
    --force); its unique_for window and debounce hold go with it."""

    async def go() -> TaskState:
        async with state.queue() as queue:
            try:
                return await queue.delete_task(task_id, force=force)
            except TaskStateError as exc:
                fail(f"{exc}: it is running (pass --force to delete it anyway)")

    was = run(go)
    if as_json:
        emit_json({"task_id": task_id, "was": was.value})
    else:
        click.echo(f"deleted {task_id} (was {was.value})")


def cancel_by_type(state: CliState, task_type: str, yes: bool, as_json: bool) -> None:
    """`agentic task cancel --type T`: every queued task of T, as one cancel each."""
    confirm(f"Cancel every pending and delayed {task_type!r} task?", yes)

    async def go() -> int:
        async with state.queue() as queue:
            return await queue.cancel_by_type(task_type)

    cancelled = run(go)
    if as_json:
        emit_json({"task_type": task_type, "cancelled": cancelled})
    else:
        click.echo(f"cancelled {cancelled} {task_type} task(s)")
