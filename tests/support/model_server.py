"""A local server speaking the OpenAI chat-completions protocol, for the pipeline's
model backend tests."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.pipeline import EXAMPLE


class RecordedModel:
    """An OpenAI-compatible chat-completions server answering from the example's
    recording, as a real endpoint would: it reads the subtask from the prompt. Its first
    answer is a 429, so the agents' retry path runs too."""

    def __init__(self, auth_failure: str | None = None) -> None:
        replies = json.loads((EXAMPLE / "replay.json").read_text())["replies"]
        self.authorizations: list[str] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model.authorizations.append(self.headers.get("Authorization", ""))
                if auth_failure is not None:  # like OpenAI, the message quotes the key
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    self._send(401, {"error": {"message": auth_failure.format(key=key)}}, {})
                    return
                if len(model.authorizations) == 1:
                    self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
                    return
                prompt = body["messages"][-1]["content"]
                subtask = re.match(r"Subtask (\S+):", prompt)
                stage = "fix" if "The tests fail with this output" in prompt else "dev"
                reply = replies[f"{stage}:{subtask.group(1) if subtask else '?'}"]
                choice = {"index": 0, "message": {"role": "assistant", "content": reply["content"]}}
                self._send(200, {"choices": [choice], "usage": reply["usage"]}, {})

            def _send(self, status: int, data: Any, headers: dict[str, str]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class ProviderServer:
    """A chat-completions endpoint whose behaviour a test switches at run time (`mode`):

    ok              answers a completion after `delay` seconds (usage: `usage`)
    trickle         sends a valid reply a byte every `drip` seconds
    echo-401        401 whose body quotes the Authorization header it was sent
    echo-500        the same as a 500 (retried, so it reaches the retry log lines)
    retry-after     429 with Retry-After `retry_after`
    hang            accepts and never answers (until close())

    A request with "stream": true is answered with server-sent events (chunked, as OpenAI
    does): the content in pieces of `piece` characters, each its own event, then a chunk
    with the usage when stream_options.include_usage asks for it, then "data: [DONE]".
    Streaming modes: ok (as above; after `hold_after` pieces it waits for `hold` to be set),
    trickle (`drip` seconds between events), stream-cut (the connection drops after two
    pieces, no [DONE]), stream-garbage (an event that is not JSON).

    It counts requests, requests in flight and their peak, and the dripped replies that
    stopped because the client hung up (the proof that a deadline freed the connection).
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.content = "hi there"
        self.delay = 0.0
        self.drip = 0.05
        self.retry_after = "3600"
        self.usage: dict[str, Any] = {"prompt_tokens": 12, "completion_tokens": 3}
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []  # every request's JSON body
        self.piece = 3
        self.hold_after: int | None = None
        self.hold = threading.Event()
        self.in_flight = 0
        self.peak = 0
        self.cut_off = 0  # trickles the client closed
        self.first_at = self.last_at = 0.0  # monotonic: first request in, last answer out
        self.closing = threading.Event()
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so the client's pool is used
            disable_nagle_algorithm = True  # headers and body go in separate writes

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with provider._lock:
                    provider.bodies.append(body)
                    provider.first_at = provider.first_at or time.monotonic()
                    provider.requests += 1
                    provider.in_flight += 1
                    provider.peak = max(provider.peak, provider.in_flight)
                try:
                    if body.get("stream") and provider.mode not in (
                        "echo-401", "echo-500", "retry-after", "hang",
                    ):  # fmt: skip
                        provider._stream(self, provider.mode, body)
                    else:
                        provider._answer(self, provider.mode)
                finally:
                    with provider._lock:
                        provider.in_flight -= 1
                        provider.last_at = time.monotonic()

            def do_GET(self) -> None:  # GET /stats: the counters, for a server in a subprocess
                span = round(provider.last_at - provider.first_at, 3)
                stats = {"requests": provider.requests, "peak": provider.peak, "span": span}
                provider._send(self, 200, json.dumps(stats).encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # 64 connections at once must not wait on a SYN retry
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up is what several tests do on purpose

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def reply(self) -> bytes:
        choice = {"index": 0, "message": {"role": "assistant", "content": self.content}}
        return json.dumps({"model": "m-1", "choices": [choice], "usage": self.usage}).encode()

    def _stream(self, handler: BaseHTTPRequestHandler, mode: str, body: dict[str, Any]) -> None:
        if self.delay:
            self.closing.wait(self.delay)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(data: str) -> None:
            raw = f"data: {data}\n\n".encode()
            handler.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            handler.wfile.flush()

        pieces = [self.content[i : i + self.piece] for i in range(0, len(self.content), self.piece)]
        try:
            comment = b": keep-alive\n\n"  # a comment line, which clients ignore
            handler.wfile.write(f"{len(comment):x}\r\n".encode() + comment + b"\r\n")
            for i, piece in enumerate(pieces):
                if mode == "stream-cut" and i == 2:
                    handler.close_connection = True
                    handler.wfile.write(b'ff\r\ndata: {"cho')  # cut mid-event
                    handler.wfile.flush()
                    return
                if mode == "stream-garbage" and i == 1:
                    send("{not json")
                if self.hold_after is not None and i == self.hold_after:
                    self.hold.wait(20)
                if mode == "trickle" and self.closing.wait(self.drip):
                    return
                delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                send(json.dumps({"model": "m-1", "choices": [delta]}))
            if (body.get("stream_options") or {}).get("include_usage"):
                send(json.dumps({"model": "m-1", "choices": [], "usage": self.usage}))
            send("[DONE]")
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            with self._lock:
                self.cut_off += 1

    def _answer(self, handler: BaseHTTPRequestHandler, mode: str) -> None:
        authorization = handler.headers.get("Authorization", "")
        if mode == "hang":
            self.closing.wait(30)
            handler.close_connection = True
            return
        if mode in ("echo-401", "echo-500"):
            key = authorization.removeprefix("Bearer ")  # quoted bare too, as OpenAI does
            said = f"bad request; you sent Authorization: {authorization} (key {key})"
            body = {"error": {"message": said}}
            self._send(handler, 401 if mode == "echo-401" else 500, json.dumps(body).encode())
            return
        if mode == "retry-after":
            self._send(handler, 429, b'{"error": "slow down"}', {"Retry-After": self.retry_after})
            return
        raw = self.reply()
        if mode == "trickle":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(raw)))
            handler.end_headers()
            try:
                for i in range(len(raw)):
                    if self.closing.wait(self.drip):
                        return
                    handler.wfile.write(raw[i : i + 1])
                    handler.wfile.flush()
            except OSError:
                with self._lock:
                    self.cut_off += 1
            return
        if self.delay:
            self.closing.wait(self.delay)
        self._send(handler, 200, raw)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        raw: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        for name, value in {**(headers or {}), "Content-Type": "application/json"}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def main() -> None:
    """`python -m tests.support.model_server DELAY`: a ProviderServer answering after DELAY
    seconds in a process of its own (so its threads do not share the client's GIL), its URL
    on the first line of stdout, until stdin closes."""
    provider = ProviderServer()
    provider.delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    print(provider.url, flush=True)
    sys.stdin.read()
    provider.close()


if __name__ == "__main__":
    main()
