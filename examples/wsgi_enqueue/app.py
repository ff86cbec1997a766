"""A tiny WSGI app (stdlib wsgiref, no framework) that enqueues from synchronous code,
the way a Django or Flask view would: one SyncRedisTaskQueue made at start-up from the
environment (AGENTIC_REDIS_URL, AGENTIC_QUEUE_NAME, ...) and shared by every request
thread.

    POST /tasks                {"task_type": "word_count", "payload": {"text": "..."}}
                               (optional "task_id", "priority") -> 202 {"task_id", "state"}
    GET  /tasks/<id>           -> 200 {"task_id", "state", "result"} or 404
    GET  /tasks/<id>/result?timeout=5
                               -> 200 {"result"}; 504 still running; 409 failed or cancelled

Run (from the repository's root), with a worker serving the handlers:

    agentic worker --app examples.wsgi_enqueue.tasks:handlers &
    python -m examples.wsgi_enqueue.app --port 8000
    curl -d '{"task_type": "word_count", "payload": {"text": "a b c"}}' localhost:8000/tasks

In Django the queue would live in a module (`queue = SyncRedisTaskQueue.from_settings(...)`)
and a view would call `queue.enqueue(...)` exactly as `create` does here.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from utils.config import Settings
from utils.redis_queue import (
    InvalidTaskError,
    RedisUnavailable,
    ResultTimeout,
    SyncRedisTaskQueue,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
MAX_BODY = 1024 * 1024

queue = SyncRedisTaskQueue.from_settings(Settings())  # connects on first use


def create(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The 'view': enqueue what was posted, answer at once with the task's id."""
    task = queue.enqueue(
        str(body.get("task_id") or uuid.uuid4().hex),
        str(body.get("task_type", "")),
        body.get("payload") or {},
        body.get("priority", 1),
    )
    return "202 Accepted", {"task_id": task.task_id, "state": task.state}


def show(task_id: str) -> tuple[str, dict[str, Any]]:
    task = queue.get_task(task_id)
    if task is None:
        return "404 Not Found", {"error": f"no task {task_id!r}"}
    return "200 OK", {"task_id": task_id, "state": task.state, "result": task.result}


def result(task_id: str, timeout: float) -> tuple[str, dict[str, Any]]:
    try:
        return "200 OK", {"result": queue.wait_for_result(task_id, timeout=timeout)}
    except ResultTimeout as exc:
        return "504 Gateway Timeout", {"error": str(exc)}
    except (TaskFailed, TaskCancelled) as exc:
        return "409 Conflict", {"error": str(exc)}


def route(environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    parts = [p for p in path.split("/") if p]
    if method == "POST" and parts == ["tasks"]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        if size > MAX_BODY:
            return "413 Content Too Large", {"error": "body too large"}
        try:
            body = json.loads(environ["wsgi.input"].read(size) or b"{}")
        except ValueError:
            return "400 Bad Request", {"error": "the body is not JSON"}
        if not isinstance(body, dict):
            return "400 Bad Request", {"error": "the body must be a JSON object"}
        return create(body)
    if method == "GET" and len(parts) == 2 and parts[0] == "tasks":
        return show(parts[1])
    if method == "GET" and len(parts) == 3 and parts[0] == "tasks" and parts[2] == "result":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        return result(parts[1], min(float(query.get("timeout", ["5"])[0]), 30.0))
    return "404 Not Found", {"error": "no such route"}


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    try:
        status, document = route(environ)
    except (InvalidTaskError, ValueError) as exc:
        status, document = "400 Bad Request", {"error": str(exc)}
    except TaskNotFound as exc:
        status, document = "404 Not Found", {"error": str(exc)}
    except RedisUnavailable as exc:
        status, document = "503 Service Unavailable", {"error": str(exc)}
    data = json.dumps(document).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # one thread per request, like a threaded Django or Flask server
    request_queue_size = 128  # the listen backlog (socketserver defaults to 5)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args()
    with make_server(args.host, args.port, application, ThreadingServer, QuietHandler) as server:
        print(f"listening on http://{args.host}:{server.server_port}", flush=True)
        try:
            server.serve_forever()
        finally:
            queue.close()


if __name__ == "__main__":
    main()
