"""`agentic limits set|list|remove`: fleet-wide limits of the queue."""

from __future__ import annotations

from typing import Any

import click

from utils.redis_queue import LimitStatus

from .common import CliState, emit_json, pass_state, run

__all__ = ["limits", "render_limits"]


@click.group()
def limits() -> None:
    """Fleet-wide rate, concurrency and token limits (enforced at claim)."""


@limits.command("set")
@click.argument("key")
@click.option("--rate", type=float, default=None, help="Tasks admitted per --per seconds.")
@click.option("--burst", type=int, default=None, help="Of --rate, at most this many at once.")
@click.option("--concurrency", type=int, default=None, help="Tasks running at once.")
@click.option("--tokens", type=int, default=None, help="Tokens reserved per --per seconds.")
@click.option(
    "--per", type=float, default=None, help="Window of --rate (default 1 s) or --tokens (60 s)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the limit as JSON.")
@pass_state
def limits_set(
    state: CliState,
    key: str,
    rate: float | None,
    burst: int | None,
    concurrency: int | None,
    tokens: int | None,
    per: float | None,
    as_json: bool,
) -> None:
    """Set limit KEY (a task type, or a name tasks list with --limit); kinds not given
    stay as they were. Example: agentic limits set openai --rate 500 --per 60"""

    async def go() -> dict[str, Any]:
        async with state.queue() as queue:
            if rate is not None or concurrency is not None:
                await queue.set_limit(key, rate=rate, per=per, burst=burst, concurrency=concurrency)
            if tokens is not None:
                await queue.set_limit(key, tokens=tokens, per=per)
            if rate is None and concurrency is None and tokens is None:
                await queue.set_limit(key)  # refused with the reason
            return (await queue.get_limits())[key].limit.as_dict()

    limit = run(go)
    if as_json:
        emit_json(limit)
    else:
        click.echo(_describe(limit))


@limits.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def limits_list(state: CliState, as_json: bool) -> None:
    """Every limit with its use now: running, rate and tokens available, pauses, and the
    ready tasks it held back at the last claim."""

    async def go() -> dict[str, LimitStatus]:
        async with state.queue() as queue:
            return await queue.get_limits()

    found = run(go)
    if as_json:
        emit_json([s.as_dict() for s in found.values()])
    elif not found:
        click.echo("no limits")
    else:
        click.echo(render_limits(found))


@limits.command("remove")
@click.argument("key")
@pass_state
def limits_remove(state: CliState, key: str) -> None:
    """Remove limit KEY (every kind and any pause); tasks it held back run at once."""

    async def go() -> bool:
        async with state.queue() as queue:
            return await queue.remove_limit(key)

    click.echo("removed" if run(go) else f"no limit {key!r}")


def _describe(limit: dict[str, Any]) -> str:
    parts = [str(limit["key"])]
    if "rate" in limit:
        parts.append(f"rate {limit['rate']:g}/{limit['per']:g}s (burst {limit['burst']})")
    if "concurrency" in limit:
        parts.append(f"concurrency {limit['concurrency']}")
    if "tokens" in limit:
        parts.append(f"tokens {limit['tokens']:,}/{limit['tokens_per']:g}s")
    return "  ".join(parts)


def render_limits(found: dict[str, LimitStatus]) -> str:
    lines = []
    for status in found.values():
        use = []
        if status.limit.concurrency is not None:
            use.append(f"running {status.running}/{status.limit.concurrency}")
        if status.rate_available is not None:
            use.append(f"rate available {status.rate_available:g}")
        if status.tokens_available is not None:
            use.append(f"tokens available {status.tokens_available:,.0f}")
        if status.paused_for > 0:
            use.append(f"PAUSED {status.paused_for:.1f} s more")
        use.append(f"waiting {status.waiting}")
        lines.append(f"  {_describe(status.limit.as_dict())}\n    " + "  ".join(use))
    return "\n".join(lines)


@limits.command("aging")
@click.argument("window", required=False)
@pass_state
def limits_aging(state: CliState, window: str | None) -> None:
    """Priority aging: WINDOW seconds (a task that waited that long ranks one priority up),
    `off` for strict priority, or nothing to print the current setting."""
    seconds: float | None = None
    if window is not None and window != "off":
        try:
            seconds = float(window)
        except ValueError:
            raise click.BadParameter("a number of seconds, or off", param_hint="WINDOW") from None

    async def go() -> float | None:
        async with state.queue() as queue:
            if window is not None:
                await queue.set_priority_aging(seconds)
            return await queue.get_priority_aging()

    current = run(go)
    click.echo("off (strict priority)" if current is None else f"{current:g} s")
