"""`agentic queue pause|resume [TASK_TYPE]`: queue-wide controls (the `queue` group; other
queue-wide commands join it here)."""

from __future__ import annotations

from typing import Any

import click

from .common import CliState, emit_json, pass_state, run

__all__ = ["queue_group"]


@click.group("queue")
def queue_group() -> None:
    """Queue-wide controls: pause and resume claiming."""


async def _toggle(state: CliState, task_type: str | None, pause: bool) -> dict[str, Any]:
    async with state.queue() as queue:
        changed = await (queue.pause(task_type) if pause else queue.resume(task_type))
        paused = await queue.get_paused()
    return {
        "target": task_type or "*",
        "changed": changed,
        "paused": {name: at.isoformat() for name, at in sorted(paused.items())},
    }


def _report(result: dict[str, Any], verb: str, as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    what = "the queue" if result["target"] == "*" else f"task type {result['target']}"
    click.echo(f"{what} {verb}" if result["changed"] else f"{what} was already {verb}")
    if result["paused"]:
        click.echo("paused now: " + ", ".join(result["paused"]))


@queue_group.command("pause")
@click.argument("task_type", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def queue_pause(state: CliState, task_type: str | None, as_json: bool) -> None:
    """Stop workers claiming tasks (of TASK_TYPE only, when given). Running tasks finish,
    enqueue goes on; the pause stays in Redis until `agentic queue resume`."""
    _report(run(lambda: _toggle(state, task_type, True)), "paused", as_json)


@queue_group.command("resume")
@click.argument("task_type", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def queue_resume(state: CliState, task_type: str | None, as_json: bool) -> None:
    """Lift the pause of the queue (or of TASK_TYPE: each is lifted on its own) and wake
    the workers at once."""
    _report(run(lambda: _toggle(state, task_type, False)), "resumed", as_json)
