"""The dashboard's ASGI app: pages, their JSON twins under /api/, and the actions.

Every page is rendered on the server (Jinja2, autoescaped: task data is user input) and
refreshes itself by fetching its own URL with ?partial=1 and swapping its <main>; every
page has a JSON twin (/api/...) that returns the same document the CLI prints with
--json. Actions are POSTs (CSRF-checked, refused with --read-only); bulk ones ask for
confirmation first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.errors import PipelineError
from utils.config import Settings
from utils.redis_queue import (
    InvalidTaskError,
    QueueError,
    RedisUnavailable,
    TaskNotFound,
    TaskState,
    TaskStateError,
)

from .actions import action_routes, is_api, json_response
from .console import Console, UnknownQueue, timeline
from .security import Guard

__all__ = ["DashboardOptions", "create_app"]

log = logging.getLogger("agentic.dashboard")
HERE = Path(__file__).parent
STATES = [s.value for s in TaskState]
# Task records one search reads unless asked for more (?scan=, up to 100,000): ~2,000 cost
# ~0.1 s of this process's CPU (parsing whole records), which holds up other pages.
SEARCH_SCAN = 2_000
Handler = Callable[[Request], Awaitable[Response]]


class DashboardOptions:
    """How one dashboard is served: read-only or not, its token, trace links, refresh."""

    def __init__(
        self,
        *,
        read_only: bool = False,
        auth_token: str | None = None,
        trace_url: str | None = None,
        refresh_seconds: float = 2.0,
        extra_queues: tuple[str, ...] = (),
    ) -> None:
        self.read_only = read_only
        self.auth_token = auth_token or None
        self.trace_url = trace_url
        self.refresh_seconds = refresh_seconds
        self.extra_queues = extra_queues


class BadRequest(ValueError):
    """A request whose parameters are wrong (400)."""


def create_app(settings: Settings, options: DashboardOptions | None = None) -> Starlette:
    options = options or DashboardOptions()
    console = Console(settings, options.extra_queues)
    guard = Guard(options.auth_token)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["tojson_pretty"] = lambda v: json.dumps(
        v, indent=2, sort_keys=True, default=str, ensure_ascii=False
    )
    env.filters["seconds"] = _seconds
    env.filters["clock"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    env.filters["q"] = lambda v: quote(str(v), safe="")

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("message", request.query_params.get("msg", ""))
        html = env.get_template(template).render(
            request=request,
            partial=request.query_params.get("partial") == "1",
            read_only=options.read_only,
            refresh_ms=int(options.refresh_seconds * 1000),
            csrf=guard.csrf_token(request),
            states=STATES,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def trace_link(trace_id: str | None) -> str | None:
        if not trace_id or not options.trace_url:
            return None
        return options.trace_url.replace("{trace_id}", trace_id)

    # -- pages and their twins -----------------------------------------------------------

    async def overview(request: Request) -> Response:
        doc = await console.overview()
        if is_api(request):
            return json_response(doc)
        return render(request, "overview.html", doc=doc)

    async def queue_page(request: Request) -> Response:
        name = request.path_params["queue"]
        info = await console.queue_info(name)
        if is_api(request):
            return json_response(info)
        return render(request, "queue.html", name=name, info=info)

    async def history(request: Request) -> Response:
        minutes = _int(request, "minutes", 60, 1, 1440)
        return json_response(await console.history(request.path_params["queue"], minutes))

    async def tasks(request: Request) -> Response:
        name = request.path_params["queue"]
        params = request.query_params
        state = params.get("state") or "pending"
        if state not in STATES:
            raise BadRequest(f"unknown state {state!r}: use one of {', '.join(STATES)}")
        task_type = params.get("type") or None
        limit = _int(request, "limit", 50, 1, 1000)
        page = await console.tasks(name, state, task_type, params.get("cursor") or None, limit)
        if is_api(request):
            return json_response(page)
        next_url = None
        if page["next_cursor"]:
            next_query = {"state": state, "limit": limit, "cursor": page["next_cursor"]}
            if task_type:
                next_query["type"] = task_type
            next_url = f"?{urlencode(next_query)}"
        return render(request, "tasks.html", name=name, page=page, next_url=next_url)

    async def search(request: Request) -> Response:
        name = request.path_params["queue"]
        params = request.query_params
        text = params.get("text", "")
        state = params.get("state") or None
        if state is not None and state not in STATES:
            raise BadRequest(f"unknown state {state!r}")
        task_type = params.get("type") or None
        scan = _int(request, "scan", SEARCH_SCAN, 1, 100_000)
        found = await console.search(name, text, state, task_type, scan)
        if is_api(request):
            return json_response(found)
        deeper = None
        if not found["complete"] and scan < 100_000:
            query = {"text": text, "scan": min(scan * 10, 100_000)}
            query.update({k: v for k, v in (("state", state), ("type", task_type)) if v})
            deeper = f"?{urlencode(query)}"
        return render(request, "search.html", name=name, found=found, deeper=deeper)

    async def task_page(request: Request) -> Response:
        name, task_id = request.path_params["queue"], request.path_params["task_id"]
        doc = await console.task(name, task_id)
        if doc is None:
            raise TaskNotFound(task_id)
        if is_api(request):
            return json_response(doc)
        return render(
            request, "task.html", name=name, task=doc, trace_url=trace_link(doc["trace_id"])
        )

    async def workers(request: Request) -> Response:
        name = request.path_params["queue"]
        rows = await console.workers(name)
        if is_api(request):
            return json_response(rows)
        return render(request, "workers.html", name=name, workers=rows)

    async def limits(request: Request) -> Response:
        return json_response(await console.limits(request.path_params["queue"]))

    async def runs(request: Request) -> Response:
        rows = await console.runs(_int(request, "limit", 50, 1, 1000))
        if is_api(request):
            return json_response(rows)
        return render(request, "runs.html", runs=rows)

    async def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = await console.run(run_id)
        if run is None:
            return await _not_found(request, f"no pipeline run {run_id!r}")
        if is_api(request):
            return json_response(run.model_dump(mode="json"))
        holder = await console.run_holder(run_id) if not run.status.is_final else None
        return render(
            request,
            "run.html",
            run=run,
            usage=run.usage(),
            timeline=timeline(run),
            events=await console.run_events(run_id),
            holder=holder,
            trace_url=trace_link(run.trace_id),
            queue=console.pipeline_queue,
        )

    async def run_events(request: Request) -> Response:
        return json_response(await console.run_events(request.path_params["run_id"]))

    # -- auth ----------------------------------------------------------------------------

    async def login_form(request: Request) -> Response:
        return render(request, "login.html", status=401 if guard.token else 200)

    async def login(request: Request) -> Response:
        if not await guard.csrf_ok(request):
            return _refuse(request, 403, "missing or wrong CSRF token")
        form = await request.form()
        given = form.get("token", "")
        if not isinstance(given, str) or not guard.token_matches(given):
            return render(request, "login.html", status=401, message="wrong token")
        response = RedirectResponse("/", status_code=303)
        guard.start_session(response, request)
        return response

    async def refuse(request: Request) -> Response:
        if is_api(request) or request.method != "GET":
            return json_response({"error": "authentication required"}, 401)
        return render(request, "login.html", status=401)

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    # -- errors --------------------------------------------------------------------------

    async def _not_found(request: Request, message: str) -> Response:
        return _refuse(request, 404, message)

    def _refuse(request: Request, status: int, message: str) -> Response:
        if is_api(request):
            return json_response({"error": message}, status)
        return render(request, "error.html", status=status, error=message)

    def guarded(handler: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except UnknownQueue as exc:
                return _refuse(request, 404, f"no queue {exc.args[0]!r} under this prefix")
            except TaskNotFound as exc:
                return _refuse(request, 404, f"no task {exc.args[0] if exc.args else ''}")
            except TaskStateError as exc:
                return _refuse(request, 409, str(exc))
            except (BadRequest, InvalidTaskError, ValueError) as exc:
                return _refuse(request, 400, str(exc))
            except RedisUnavailable as exc:
                return _refuse(request, 503, f"Redis is unreachable: {exc}")
            except (QueueError, PipelineError) as exc:
                return _refuse(request, 500, str(exc))

        return handle

    pages: list[tuple[str, Handler, list[str]]] = [
        ("/", overview, ["GET"]),
        ("/queues/{queue}", queue_page, ["GET"]),
        ("/queues/{queue}/tasks", tasks, ["GET"]),
        ("/queues/{queue}/search", search, ["GET"]),
        ("/queues/{queue}/tasks/{task_id}", task_page, ["GET"]),
        ("/queues/{queue}/workers", workers, ["GET"]),
        ("/runs", runs, ["GET"]),
        ("/runs/{run_id}", run_page, ["GET"]),
    ]
    actions = action_routes(console, guard, options.read_only, render, _refuse)
    routes: list[BaseRoute] = []
    for path, handler, methods in pages:
        routes.append(Route(path, guarded(handler), methods=methods))
        routes.append(Route(f"/api{path if path != '/' else '/overview'}", guarded(handler)))
    routes.append(Route("/api/queues/{queue}/history", guarded(history)))
    routes.append(Route("/api/queues/{queue}/limits", guarded(limits)))
    routes.append(Route("/api/runs/{run_id}/events", guarded(run_events)))
    for path, handler in actions:
        routes.append(Route(path, guarded(handler), methods=["POST"]))
        routes.append(Route(f"/api{path}", guarded(handler), methods=["POST"]))
    routes += [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", guarded(login), methods=["POST"]),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await console.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard.middleware(refuse))],
    )
    app.state.console = console
    return app


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, not {value}")
    return value


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"
