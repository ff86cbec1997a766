"""The dev agent: asks the model to write a subtask's files and writes them into the
run's workspace. The reply format is described in agents/replies.py."""

from __future__ import annotations

from typing import Any

from .base import Agent
from .models import Message
from .replies import FORMAT_INSTRUCTIONS, parse_files
from .request import AgentRequest
from .workspace import write_files

__all__ = ["DevAgent", "NoFilesInReply"]

SYSTEM_PROMPT = (
    "You are a careful Python developer. You implement one subtask of a small project, "
    "with unit tests written with the standard library's unittest (no third-party "
    "packages), in files named test_*.py.\n\n" + FORMAT_INSTRUCTIONS
)


class NoFilesInReply(Exception):
    """The model answered without any file: retried, since another answer may have them."""


class DevAgent(Agent):
    """Result: the common fields plus "files", the relative paths written."""

    name = "dev"
    workspace_must_exist = False  # the first dev subtask of a run creates it

    async def run(self, request: AgentRequest) -> dict[str, Any]:
        reply, usage = await self.ask(request, self.messages(request))
        files = parse_files(reply.content)
        if not files:
            raise NoFilesInReply(f"the model's reply to dev:{request.subtask_id} holds no file")
        written = write_files(request.workspace, files)
        missing = [f for f in request.files if f not in written]
        summary = f"wrote {len(written)} file(s): {', '.join(written)}"
        if missing:
            summary += f"; not written: {', '.join(missing)}"
        return self.result(ok=True, summary=summary, usage=usage, files=written)

    def messages(self, request: AgentRequest) -> list[Message]:
        files = ", ".join(request.files) or "(your choice)"
        task = (
            f"Subtask {request.subtask_id}: {request.description or '(no description)'}\n\n"
            f"Files to write: {files}"
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task}]
