"""The dashboard's actions: POST routes (CSRF-checked, refused with --read-only), each
with an /api/ twin answering JSON. Bulk ones (the DLQ's retry-all and purge, purge by
state, cancel by type) answer the first POST with what they would touch (a confirmation
page, or 409 with the count) and act only on confirm=yes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from .console import Console
from .security import Guard

__all__ = ["Bulk", "action_routes", "is_api", "json_response"]

Handler = Callable[[Request], Awaitable[Response]]
Act = Callable[[Request], Awaitable[str]]


class Render(Protocol):
    def __call__(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response: ...


@dataclass(frozen=True)
class Bulk:
    """What a bulk action would do, for its confirmation: how many tasks, the question,
    what it means, and the form fields (state, type) the confirming POST repeats."""

    count: int
    question: str
    note: str
    button: str
    danger: bool = True
    fields: tuple[tuple[str, str], ...] = ()


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


class _JsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        # default=str: the documents carry a few non-JSON values (paths, enums)
        return json.dumps(content, default=str, separators=(",", ":")).encode()


def json_response(value: Any, status: int = 200) -> JSONResponse:
    return _JsonResponse(value, status_code=status)


async def field(request: Request, name: str) -> str | None:
    """A parameter of an action: ?name= or a form field of that name."""
    value = request.query_params.get(name)
    if value is None and "form" in request.headers.get("content-type", ""):
        found = (await request.form()).get(name)
        value = found if isinstance(found, str) else None
    return value or None


def action_routes(
    console: Console,
    guard: Guard,
    read_only: bool,
    render: Render,
    refuse: Callable[[Request, int, str], Response],
) -> list[tuple[str, Handler]]:
    """Every action's path (without /api) and its handler."""

    def action(act: Act, back: Callable[[Request], str]) -> Handler:
        async def handle(request: Request) -> Response:
            if read_only:
                return refuse(request, 403, "this dashboard is read-only")
            if not await guard.csrf_ok(request):
                return refuse(request, 403, "missing or wrong CSRF token")
            message = await act(request)
            if is_api(request):
                return json_response({"ok": True, "message": message})
            return RedirectResponse(f"{back(request)}?msg={quote(message)}", status_code=303)

        return handle

    def bulk(act: Act, ask: Callable[[Request], Awaitable[Bulk]]) -> Handler:
        """An action on many tasks: the first POST (without confirm=yes) asks. The
        asking is CSRF-checked too, so a foreign page cannot even count."""
        plain = action(act, queue_of)

        async def handle(request: Request) -> Response:
            if await field(request, "confirm") == "yes" or read_only:
                return await plain(request)
            if not await guard.csrf_ok(request):
                return refuse(request, 403, "missing or wrong CSRF token")
            what = await ask(request)
            if is_api(request):
                ask_again = "confirmation required: repeat with confirm=yes"
                return json_response({"error": ask_again, "count": what.count}, 409)
            name = request.path_params["queue"]
            return render(request, "confirm.html", name=name, bulk=what)

        return handle

    def queue_of(request: Request) -> str:
        return f"/queues/{quote(request.path_params['queue'], safe='')}"

    def task_url(request: Request) -> str:
        return f"{queue_of(request)}/tasks/{quote(request.path_params['task_id'], safe='')}"

    def run_url(request: Request) -> str:
        return f"/runs/{quote(request.path_params['run_id'], safe='')}"

    async def do_retry(r: Request) -> str:
        return await console.retry(r.path_params["queue"], r.path_params["task_id"])

    async def do_cancel(r: Request) -> str:
        return await console.cancel(r.path_params["queue"], r.path_params["task_id"])

    async def do_delete(r: Request) -> str:
        force = await field(r, "force") == "yes"
        return await console.delete(r.path_params["queue"], r.path_params["task_id"], force)

    async def do_retry_all(r: Request) -> str:
        return await console.retry_all(r.path_params["queue"])

    async def do_purge_dlq(r: Request) -> str:
        return await console.purge(r.path_params["queue"])

    async def ask_dlq(r: Request, retry: bool) -> Bulk:
        name = r.path_params["queue"]
        count = await console.count_state(name, "dead_letter")
        what = "retry" if retry else "purge"
        return Bulk(
            count,
            f"{what.capitalize()} {count:,} dead-lettered task(s) of {name}?",
            "Each goes back to pending with its retry count reset."
            if retry
            else "Purging deletes them for good.",
            f"Yes, {what} {count:,}",
            danger=not retry,
        )

    async def ask_retry_all(r: Request) -> Bulk:
        return await ask_dlq(r, True)

    async def ask_purge_dlq(r: Request) -> Bulk:
        return await ask_dlq(r, False)

    async def required(r: Request, name: str, example: str) -> str:
        value = await field(r, name)
        if value is None:
            raise ValueError(f"which {name}? pass {name}={example}")
        return value

    async def state_of(r: Request) -> str:
        return await required(r, "state", "pending|delayed|completed|...")

    async def do_purge_state(r: Request) -> str:
        return await console.purge_state(r.path_params["queue"], await state_of(r))

    async def ask_purge_state(r: Request) -> Bulk:
        name, state = r.path_params["queue"], await state_of(r)
        count = await console.count_state(name, state)
        return Bulk(
            count,
            f"Purge {count:,} {state} task(s) of {name}?",
            "Purging deletes each task and every key kept for it, for good; tasks that "
            "enter the state meanwhile may go too. Running tasks are never purged.",
            f"Yes, purge {count:,}",
            fields=(("state", state),),
        )

    async def type_of(r: Request) -> str:
        return await required(r, "type", "T")

    async def do_cancel_type(r: Request) -> str:
        return await console.cancel_type(r.path_params["queue"], await type_of(r))

    async def ask_cancel_type(r: Request) -> Bulk:
        name, task_type = r.path_params["queue"], await type_of(r)
        pending, delayed = await console.count_type(name, task_type)
        return Bulk(
            pending + delayed,
            f"Cancel {pending + delayed:,} queued {task_type} task(s) of {name}?",
            f"{pending:,} pending and {delayed:,} delayed; running ones are left alone "
            "(cancel them one by one).",
            f"Yes, cancel {pending + delayed:,}",
            fields=(("type", task_type),),
        )

    async def do_pause(r: Request) -> str:
        return await console.pause(r.path_params["queue"], await field(r, "type"))

    async def do_resume(r: Request) -> str:
        return await console.resume(r.path_params["queue"], await field(r, "type"))

    async def do_cancel_run(r: Request) -> str:
        return await console.cancel_run(r.path_params["run_id"])

    async def do_resume_run(r: Request) -> str:
        return await console.resume_run(r.path_params["run_id"])

    async def do_decide(r: Request, approve: bool) -> str:
        form = await r.form() if "form" in r.headers.get("content-type", "") else {}
        text = form.get("comment" if approve else "reason") or None
        by = "dashboard" + ("" if guard.token is None else " (token holder)")
        return await console.decide_run(
            r.path_params["run_id"], approve, text if isinstance(text, str) else None, by
        )

    async def do_approve(r: Request) -> str:
        return await do_decide(r, True)

    async def do_reject(r: Request) -> str:
        return await do_decide(r, False)

    return [
        ("/queues/{queue}/tasks/{task_id}/retry", action(do_retry, task_url)),
        ("/queues/{queue}/tasks/{task_id}/cancel", action(do_cancel, task_url)),
        ("/queues/{queue}/tasks/{task_id}/delete", action(do_delete, queue_of)),
        ("/queues/{queue}/dlq/retry-all", bulk(do_retry_all, ask_retry_all)),
        ("/queues/{queue}/dlq/purge", bulk(do_purge_dlq, ask_purge_dlq)),
        ("/queues/{queue}/purge", bulk(do_purge_state, ask_purge_state)),
        ("/queues/{queue}/cancel-type", bulk(do_cancel_type, ask_cancel_type)),
        ("/queues/{queue}/pause", action(do_pause, queue_of)),
        ("/queues/{queue}/resume", action(do_resume, queue_of)),
        ("/runs/{run_id}/cancel", action(do_cancel_run, run_url)),
        ("/runs/{run_id}/resume", action(do_resume_run, run_url)),
        ("/runs/{run_id}/approve", action(do_approve, run_url)),
        ("/runs/{run_id}/reject", action(do_reject, run_url)),
    ]
