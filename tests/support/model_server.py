"""A local server speaking the OpenAI chat-completions protocol, for the pipeline's
model backend tests."""

from __future__ import annotations

import json
import re
import threading
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
