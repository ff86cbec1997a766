"""The `agentic` command line: a thin layer over the queue's async API.

Exit codes: 0 ok, 1 failure, 2 usage error, 69 Redis unreachable.
"""

from __future__ import annotations

import logging
import sys

import click
from pydantic import ValidationError

from utils.redis_queue import InvalidRedisUrl, TopologyError

from .bulk_cmds import queue_purge, task_delete
from .common import EXIT_USAGE, CliState, setup_tracing_from_environment
from .dashboard_cmd import dashboard
from .events_cmd import events_cmd
from .limits_cmd import limits
from .listing_cmds import dlq_list, task_list, task_search
from .metrics_cmd import metrics
from .output_cmds import task_tail
from .pipeline_cmds import pipeline
from .queue_cmds import dlq, enqueue, health, info, task
from .queue_group import queue_group
from .schedule_cmds import schedule
from .task_events_cmd import task_events
from .worker_cmd import worker

__all__ = ["cli", "main"]


# Every option reads AGENTIC_<COMMAND>_<OPTION> when it is not given (AGENTIC_ENQUEUE_PRIORITY,
# AGENTIC_INFO_INTERVAL, ...); the group's and the worker's options use the Settings names.
@click.group(
    context_settings={
        "help_option_names": ["-h", "--help"],
        "auto_envvar_prefix": "AGENTIC",
        "show_default": True,
    }
)
@click.option(
    "--redis-url",
    default=None,
    envvar="AGENTIC_REDIS_URL",
    show_envvar=True,
    help="Redis URL (REDIS_URL also works)",
)
@click.option("--queue", "queue_name", default=None, envvar="AGENTIC_QUEUE_NAME", show_envvar=True)
@click.option(
    "--cluster/--no-cluster",
    default=None,
    help="The URL is a Redis Cluster node  [env var: AGENTIC_REDIS_CLUSTER]",
)
@click.option(
    "--partitions",
    type=click.IntRange(1, 256),
    default=None,
    help="Partitions of the queue; the same for all its clients  [env var: AGENTIC_PARTITIONS]",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    envvar="AGENTIC_LOG_LEVEL",
    show_envvar=True,
)
@click.pass_context
def cli(
    ctx: click.Context,
    redis_url: str | None,
    queue_name: str | None,
    cluster: bool | None,
    partitions: int | None,
    verbose: bool,
    log_level: str,
) -> None:
    """agentic: a Redis task queue and the agentic dev/QA/fix/deploy pipeline."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    setup_tracing_from_environment()
    ctx.obj = CliState(redis_url, queue_name, cluster=cluster, partitions=partitions)


for command in (pipeline, worker, enqueue, info, task, dlq, health, metrics, limits, dashboard):
    cli.add_command(command)
pipeline.add_command(events_cmd)
for command in (queue_group, schedule, task_events):
    cli.add_command(command)
for group, sub in ((task, task_list), (task, task_search), (task, task_tail), (dlq, dlq_list)):
    group.add_command(sub)
for group, sub in ((queue_group, queue_purge), (task, task_delete)):
    group.add_command(sub)


# The group's options, with whether each takes a value: accepted after the subcommand too
# (`agentic info --redis-url ...`), where people put them.
GLOBAL_OPTIONS = {"--redis-url": True, "--queue": True, "--log-level": True, "-v": False,
                  "--verbose": False, "--cluster": False, "--no-cluster": False,
                  "--partitions": True}  # fmt: skip


def hoist_global_options(argv: list[str]) -> list[str]:
    """`argv` with the group's options moved in front of the first subcommand name."""
    head: list[str] = []
    rest: list[str] = []
    i, seen_command = 0, False
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if name in GLOBAL_OPTIONS and (i + 1 < len(argv) or not GLOBAL_OPTIONS[name]):
            takes_value = GLOBAL_OPTIONS[name] and "=" not in arg
            head.extend(argv[i : i + 1 + takes_value])
            i += 1 + takes_value
            continue
        if not arg.startswith("-"):
            seen_command = True
        (rest if seen_command else head).append(arg)
        i += 1
    return head + rest


def main() -> None:
    try:
        cli(args=hoist_global_options(sys.argv[1:]), standalone_mode=True)
    except (InvalidRedisUrl, ValidationError, TopologyError) as exc:  # bad settings: usage
        click.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(EXIT_USAGE)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):  # settings from the environment; never echo values
        return "; ".join(
            f"setting {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False, include_context=False)
        )
    return str(exc)
