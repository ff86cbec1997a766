"""The fix agent: shows the model the failing QA output and the workspace's code, and
writes back the files it corrects (same reply format as the dev agent)."""

from __future__ import annotations

import asyncio
from typing import Any

from .base import Agent
from .dev import NoFilesInReply
from .models import Message
from .replies import FORMAT_INSTRUCTIONS, parse_files
from .request import AgentRequest
from .workspace import read_text_files, write_files

__all__ = ["FixAgent"]

MAX_FAILURE_CHARS = 8_000  # the tail of the QA output: where the assertion errors are

SYSTEM_PROMPT = (
    "You are a careful Python developer fixing a project whose unit tests fail. Find the "
    "cause from the test output and the code, and fix the code (change a test only when "
    "the test itself is wrong). Return only the files you change.\n\n" + FORMAT_INSTRUCTIONS
)


class FixAgent(Agent):
    """Payload adds "failure": the QA output (or the failed QA result, whose "output" is
    used). Result adds "files", the relative paths written."""

    name = "fix"

    async def run(self, request: AgentRequest) -> dict[str, Any]:
        failure = _failure_text(request)
        texts, skipped = await asyncio.to_thread(read_text_files, request.workspace, request.files)
        messages = self.messages(request, failure, texts, skipped)
        reply, usage = await self.ask(request, messages)
        files = parse_files(reply.content)
        if not files:
            raise NoFilesInReply(f"the model's reply to fix:{request.subtask_id} holds no file")
        written = write_files(request.workspace, files)
        summary = f"rewrote {len(written)} file(s): {', '.join(written)}"
        return self.result(ok=True, summary=summary, usage=usage, files=written)

    def messages(
        self, request: AgentRequest, failure: str, texts: dict[str, str], skipped: list[str]
    ) -> list[Message]:
        parts = [
            f"Subtask {request.subtask_id}: {request.description or 'make the tests pass'}",
            "The tests fail with this output:\n```text\n"
            + failure[-MAX_FAILURE_CHARS:].rstrip()
            + "\n```",
            "The project's files:",
        ]
        parts += [f"File: {path}\n````\n{text.rstrip()}\n````" for path, text in texts.items()]
        if skipped:
            parts.append(f"Not shown (binary or too large): {', '.join(skipped)}")
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "\n\n".join(parts)},
        ]


def _failure_text(request: AgentRequest) -> str:
    """The payload's "failure": the QA output, or a whole QA result (its "output")."""
    failure = request.payload.get("failure")
    if isinstance(failure, dict) and isinstance(failure.get("output"), str):
        return str(failure["output"])
    return request.text("failure")
