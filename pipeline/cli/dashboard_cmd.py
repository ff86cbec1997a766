"""`agentic dashboard`: the web dashboard, served by this process (uvicorn)."""

from __future__ import annotations

import socket
import sys

import click

from .common import EXIT_USAGE, CliState, fail, pass_state


@click.command()
@click.option("--host", default=None, help="Address to listen on  [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="[default: 8420]")
@click.option("--read-only", is_flag=True, default=None, help="Hide and refuse every action.")
@click.option("--auth-token", default=None, help="Token every request must carry.")
@click.option("--trace-url", default=None, help="Trace link with {trace_id}, e.g. Jaeger's.")
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.5),
    default=None,
    help="Seconds between page refreshes  [default: 2]",
)
@click.option("--extra-queue", "extra_queues", multiple=True, help="Show this queue too.")
@pass_state
def dashboard(
    state: CliState,
    host: str | None,
    port: int | None,
    read_only: bool | None,
    auth_token: str | None,
    trace_url: str | None,
    refresh: float | None,
    extra_queues: tuple[str, ...],
) -> None:
    """Serve the web dashboard: queues, tasks, workers, limits and pipeline runs.

    Every option falls back to AGENTIC_DASHBOARD__<OPTION> (AGENTIC_DASHBOARD__AUTH_TOKEN,
    ...). Listening anywhere but on loopback needs a token."""
    try:
        import uvicorn

        from pipeline.dashboard import DashboardOptions, create_app
    except ImportError as exc:
        fail(
            f"the dashboard needs its extra ({exc.name} is missing): "
            "pip install 'agentic-pipeline[dashboard]'",
            EXIT_USAGE,
        )
    from pipeline.dashboard.security import is_loopback

    settings = state.settings
    conf = settings.dashboard
    host = host or conf.host
    port = conf.port if port is None else port
    token = auth_token or (conf.auth_token.get_secret_value() if conf.auth_token else None)
    if not is_loopback(host) and not token:
        fail(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            "retry, cancel and purge tasks; pass --auth-token (or set "
            "AGENTIC_DASHBOARD__AUTH_TOKEN), or listen on 127.0.0.1",
            EXIT_USAGE,
        )
    queues = tuple(q for q in (conf.queues or "").split(",") if q.strip())
    options = DashboardOptions(
        read_only=conf.read_only if read_only is None else read_only,
        auth_token=token,
        trace_url=trace_url or conf.trace_url,
        refresh_seconds=refresh or conf.refresh_seconds,
        extra_queues=tuple(q.strip() for q in queues) + extra_queues,
    )
    try:
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only then
        # (with 0, Nagle holds the body of each reply ~40 ms on a kept-alive connection).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening before the URL is printed: whoever reads the line may connect at once
        # (a bound socket that does not listen yet refuses, for as long as the app starts).
        sock.listen(2048)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", EXIT_USAGE)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    mode = " (read-only)" if options.read_only else ""
    click.echo(f"dashboard on http://{shown}:{bound}/{mode}", err=False)
    sys.stdout.flush()
    app = create_app(settings, options)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
