"""Commands that read or change a queue: enqueue, info, task, dlq, health."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from utils.redis_queue import (
    InvalidPriority,
    RedisTask,
    RedisTaskQueue,
    TaskPriority,
    TaskState,
)
from utils.redis_queue.keys import BLOB_NAMES
from utils.redis_queue.models import coerce_priority

from ..reports import gather_info
from .bulk_cmds import cancel_by_type
from .common import (
    EXIT_UNAVAILABLE,
    CliState,
    emit_json,
    fail,
    pass_state,
    run,
)
from .limits_cmd import render_limits

PRIORITIES = [p.name.lower() for p in TaskPriority]


class PriorityParam(click.ParamType[int]):
    """A priority as a name in any case (high, HIGH) or as its number (0-3)."""

    name = "priority"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return coerce_priority(value)
        except InvalidPriority:
            self.fail(f"{value!r}: use one of {', '.join(PRIORITIES)} or 0-3", param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(PRIORITIES) + "|0-3]"


def _load_payload(value: str) -> dict[str, Any]:
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise click.BadParameter(
                f"cannot read {value[1:]}: {reason}", param_hint="--payload"
            ) from exc
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from exc
    if not isinstance(payload, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--payload")
    return payload


# -- enqueue ---------------------------------------------------------------------------------


@click.command()
@click.argument("task_type")
@click.option("--payload", default="{}", show_default=True, help="JSON object, or @file.")
@click.option("--priority", type=PriorityParam(), default="normal", show_default=True)
@click.option("--id", "task_id", default=None, help="Task id (idempotency key); default: random.")
@click.option("--delay", type=float, default=None, help="Run no earlier than this many seconds.")
@click.option("--timeout", type=float, default=None, help="Execution timeout for this task (s).")
@click.option(
    "--limit",
    "limit_keys",
    multiple=True,
    help="A limit key binding it besides its type's (repeatable), e.g. openai.",
)
@click.option("--cost-tokens", type=int, default=None, help="Tokens it expects to use.")
@click.option("--group", default=None, help="Fairness group (e.g. tenant:acme): groups take turns.")
@click.option(
    "--unique-for",
    type=float,
    default=None,
    help="Seconds in which an equal task (same type and unique key) is not enqueued again.",
)
@click.option("--unique-key", default=None, help="What makes tasks equal (default: the payload).")
@click.option(
    "--debounce",
    type=float,
    default=None,
    help="Hold the task this many seconds; an equal enqueue meanwhile replaces it.",
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--wait-timeout", type=float, default=300.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@pass_state
def enqueue(
    state: CliState,
    task_type: str,
    payload: str,
    priority: int,
    task_id: str | None,
    delay: float | None,
    timeout: float | None,
    limit_keys: tuple[str, ...],
    cost_tokens: int | None,
    group: str | None,
    unique_for: float | None,
    unique_key: str | None,
    debounce: float | None,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
) -> None:
    """Add a task of TASK_TYPE to the queue. With --unique-for or --debounce the id
    printed is the task that stands (an equal one's, or the held one's)."""
    data = _load_payload(payload)
    if task_id is not None and not task_id.strip():
        raise click.BadParameter(
            "must not be empty (leave it out for a random id)", param_hint="--id"
        )
    chosen_id = task_id if task_id is not None else uuid.uuid4().hex

    async def go() -> tuple[RedisTask, Any]:
        async with state.queue() as queue:
            task = await queue.enqueue(
                chosen_id,
                task_type,
                data,
                priority,
                delay=delay,
                timeout=timeout,
                limits=list(limit_keys) or None,
                cost_tokens=cost_tokens,
                group=group,
                unique_for=unique_for,
                unique_key=unique_key,
                debounce=debounce,
            )
            result = await queue.wait_for_result(task.task_id, wait_timeout) if wait else None
            return task, result

    task, result = run(go)
    if as_json:
        emit_json({"task": task.to_dict(), "result": result} if wait else task.to_dict())
    elif wait:
        click.echo(json.dumps(result))
    else:
        click.echo(task.task_id)


# -- info ------------------------------------------------------------------------------------


def render_info(info: dict[str, Any], rate: float | None) -> str:
    s = info["statistics"]
    lines = [
        f"queue {info['queue']}"
        + (f" ({info['partitions']} partitions)" if info.get("partitions", 1) > 1 else ""),
        "  pending {pending}  delayed {delayed}  processing {processing}  completed {completed}"
        "  failed {failed}  cancelled {cancelled}  dlq {dlq}".format(**s),
        "  pending by priority: "
        + "  ".join(f"{k} {v}" for k, v in s["pending_by_priority"].items()),
        f"  success rate {s['success_rate']}%  enqueued {s['total_enqueued']}"
        f"  completed {s['total_completed']}  failed {s['total_failed']}"
        f"  retried {s['total_retried']}",
    ]
    hour, oldest = info.get("last_hour"), info.get("oldest_waiting_seconds")
    if hour is not None:
        waited = "-" if oldest is None else f"{oldest:,.1f} s"
        lines.append(
            f"  oldest waiting {waited}  last hour: enqueued {hour['enqueued']}"
            f"  completed {hour['completed']}  failed {hour['failed']}"
            f" ({100 * hour['failure_rate']:.1f}%)"
        )
    if rate is not None:
        lines.append(f"  throughput {rate:,.1f} tasks/s (completed + failed)")
    for name, at in info.get("paused", {}).items():
        what = "the whole queue" if name == "*" else f"task type {name}"
        lines.append(f"  PAUSED: {what} since {at} (agentic queue resume)")
    if info.get("schedules"):
        lines.append(f"schedules: {len(info['schedules'])}")
        for sc in info["schedules"]:
            lines.append(f"  {sc['name']:<20} {sc['task_type']:<12} next {sc['next_due']}")
    alive = [w for w in info["workers"] if w["alive"]]
    lines.append(f"workers: {len(alive)} live, {len(info['workers']) - len(alive)} silent")
    for w in info["workers"]:
        status = "live" if w["alive"] else "SILENT"
        lines.append(
            f"  {w['worker_id']:<28} {status:<6} types {','.join(w['task_types'])}"
            f"  in flight {w['in_flight']}/{w['concurrency']}  done {w['done']}"
            f"  failed {w['failed']}  last beat {w['last_beat_at']}"
        )
    if info.get("_limits"):
        lines.append("limits:")
        lines.append(render_limits(info["_limits"]))
    return "\n".join(lines)


@click.command()
@click.option(
    "-i",
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Refresh every N seconds (> 0).",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def info(state: CliState, interval: float | None, as_json: bool) -> None:
    """Sizes per state and priority, success rate, throughput and live workers."""
    if interval is None:
        data = run(lambda: _once(state))
        if as_json:
            emit_json({k: v for k, v in data.items() if not k.startswith("_")})
        else:
            click.echo(render_info(data, None))
        return
    with contextlib.suppress(KeyboardInterrupt):
        run(lambda: _watch(state, interval, as_json))


async def _once(state: CliState) -> dict[str, Any]:
    async with state.queue() as queue:
        return await gather_info(queue)


async def _watch(state: CliState, interval: float, as_json: bool) -> None:
    async with state.queue() as queue:
        previous: tuple[float, int] | None = None
        while True:
            data = await gather_info(queue)
            s = data["statistics"]
            finished = s["total_completed"] + s["total_failed"] + s["total_retried"]
            now = time.monotonic()
            rate = None
            if previous is not None:
                rate = (finished - previous[1]) / max(now - previous[0], 1e-9)
            previous = (now, finished)
            if as_json:
                shown = {k: v for k, v in data.items() if not k.startswith("_")}
                click.echo(json.dumps({**shown, "throughput": rate}, default=str))
            else:
                click.echo("\x1b[2J\x1b[H" + render_info(data, rate), nl=True)
            await asyncio.sleep(interval)  # the refresh period the user asked for


# -- task ------------------------------------------------------------------------------------


@click.group()
def task() -> None:
    """Inspect or cancel one task."""


@task.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--blobs", is_flag=True, help="Also fetch a payload or result stored claim-check (large)."
)
@pass_state
def task_show(state: CliState, task_id: str, as_json: bool, blobs: bool) -> None:
    """Print a task's state, payload, result and error. A payload or result stored
    claim-check (above the blob threshold) is shown as its size and key unless --blobs."""

    async def go() -> tuple[RedisTask | None, dict[str, str]]:
        async with state.queue() as queue:
            found = await queue.get_task(task_id, blobs=blobs)
            keys = queue.keys_for(task_id)
            names = [n for n in BLOB_NAMES if found and n in found.blobs]
            return found, {name: keys.blob(task_id, name) for name in names}

    found, blob_keys = run(go)
    if found is None:
        fail(f"no task {task_id!r}")
    doc = found.to_dict()
    if not blobs:
        for name, key in blob_keys.items():
            doc[name] = f"<claim-check: {found.blobs[name]:,} bytes in {key}; --blobs prints it>"
    if as_json:
        emit_json({**doc, "blob_keys": blob_keys})
        return
    for key, value in doc.items():
        click.echo(f"{key:>16}: {json.dumps(value) if isinstance(value, dict | list) else value}")


@task.command("cancel")
@click.argument("task_id", required=False)
@click.option("--type", "task_type", default=None, help="Cancel every queued task of this type.")
@click.option("--yes", is_flag=True, help="With --type: do not ask.")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def task_cancel(
    state: CliState, task_id: str | None, task_type: str | None, yes: bool, as_json: bool
) -> None:
    """Cancel a queued task, or ask the worker running it to stop; with --type T, every
    pending and delayed task of type T (running ones are left alone)."""
    if bool(task_id) == bool(task_type):
        raise click.UsageError("give a TASK_ID or --type (not both)")
    if task_type:
        cancel_by_type(state, task_type, yes, as_json)
        return
    assert task_id is not None

    async def go() -> TaskState:
        async with state.queue() as queue:
            return await queue.cancel(task_id)

    outcome = run(go)
    if as_json:
        emit_json({"task_id": task_id, "state": outcome.value})
    else:
        click.echo("cancelled" if outcome == TaskState.CANCELLED else "cancel requested (running)")


# -- dlq -------------------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """List, retry or purge dead-lettered tasks."""


@dlq.command("retry")
@click.argument("task_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead-lettered task.")
@pass_state
def dlq_retry(state: CliState, task_id: str | None, retry_all: bool) -> None:
    """Move TASK_ID (or --all) from the DLQ back to pending."""
    if bool(task_id) == retry_all:
        raise click.UsageError("give a TASK_ID or --all (not both)")

    async def go() -> int:
        async with state.queue() as queue:
            if task_id:
                await queue.retry_dlq_task(task_id)
                return 1
            return await _retry_everything(queue)

    count = run(go)
    click.echo(f"retried {count} task(s)")


async def _retry_everything(queue: RedisTaskQueue) -> int:
    """Retry every dead-lettered task, with a progress line on stderr."""
    err = sys.stderr

    def progress(done: int, total: int) -> None:
        if err.isatty() or done % 500 == 0 or done == total:
            err.write(f"\rretrying {done}/{total}")
            err.flush()

    done = await queue.retry_all_dlq(progress)
    if done:
        err.write("\n")
    return done


@dlq.command("purge")
@click.option("--yes", is_flag=True, help="Confirm: delete every dead-lettered task.")
@pass_state
def dlq_purge(state: CliState, yes: bool) -> None:
    """Delete every dead-lettered task."""
    if not yes:
        raise click.UsageError("purging deletes tasks for good: pass --yes")

    async def go() -> int:
        async with state.queue() as queue:
            return await queue.purge_dlq()

    click.echo(f"purged {run(go)} task(s)")


# -- health ----------------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True)
@pass_state
def health(state: CliState, as_json: bool) -> None:
    """Exit 0 when the queue is healthy, 69 when Redis is unreachable."""

    async def go() -> dict[str, Any]:
        queue = state.queue(connect_timeout=3.0, socket_timeout=3.0)
        try:
            await queue.connect()
        except Exception as exc:
            return {"status": "unhealthy", "error": str(exc), "redis_url": queue.url}
        try:
            return await queue.health_check()
        finally:
            await queue.close()

    report = run(go)
    if as_json:
        emit_json(report)
    else:
        click.echo("  ".join(f"{k}={v}" for k, v in report.items()))
    if report["status"] != "healthy":
        raise SystemExit(EXIT_UNAVAILABLE)
