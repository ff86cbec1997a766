"""The `agentic` command line: a thin layer over the queue's async API.

Exit codes: 0 ok, 1 failure, 2 usage error, 69 Redis unreachable.
"""

from __future__ import annotations

import logging

import click

from .common import CliState, env_help
from .queue_cmds import dlq, enqueue, health, info, task
from .worker_cmd import worker

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--redis-url", default=None, help=env_help("Redis URL", "AGENTIC_REDIS_URL, REDIS_URL")
)
@click.option(
    "--queue", "queue_name", default=None, help=env_help("Queue name", "AGENTIC_QUEUE_NAME")
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, queue_name: str | None, verbose: bool) -> None:
    """agentic: a Redis task queue and the agentic dev/QA/fix/deploy pipeline."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = CliState(redis_url, queue_name)


for command in (worker, enqueue, info, task, dlq, health):
    cli.add_command(command)


def main() -> None:
    cli()
