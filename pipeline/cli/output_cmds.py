"""`agentic task tail`: a task's output as it arrives, and the one way the CLI prints
output chunks (`ChunkPrinter`, also what `agentic pipeline run --follow` prints with)."""

from __future__ import annotations

import json

import click

from utils.redis_queue import OutputChunk, TaskNotFound

from .common import EXIT_FAILURE, CliState, pass_state, run

__all__ = ["ChunkPrinter", "task_tail"]


class ChunkPrinter:
    """Prints chunks for a reader. Model tokens ("text") flow as they come; other kinds
    get a line each. With `label` (a pipeline's subtask) every line starts with it and
    text is printed a whole line at a time, so several tasks' output does not interleave
    mid-line."""

    def __init__(self, label: str = "", *, as_json: bool = False) -> None:
        self.label, self.as_json = label, as_json
        self._attempt = 0
        self._at_line_start = True
        self._partial = ""

    def print(self, chunk: OutputChunk) -> None:
        if self.as_json:
            data = chunk.to_dict()
            if self.label:
                data["task"] = self.label
            click.echo(json.dumps(data))
            return
        if self._attempt and chunk.attempt != self._attempt and not chunk.is_end:
            self._line(f"-- attempt {chunk.attempt} --")
        self._attempt = chunk.attempt
        if chunk.kind == "text":
            self._text(chunk.text)
        elif chunk.kind == "progress":
            self._line(f"[{round((chunk.fraction or 0) * 100):>3}%] {chunk.text}".rstrip())
        elif chunk.is_end:
            self._line(f"-- {chunk.text} (attempt {chunk.attempt}) --")
        else:
            self._line(chunk.text.rstrip("\n"))

    def close(self) -> None:
        """Ends a line left open (text without its newline)."""
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        elif not self._at_line_start:
            click.echo()
            self._at_line_start = True

    def _text(self, text: str) -> None:
        if not self.label:
            click.echo(text, nl=False)
            self._at_line_start = text.endswith("\n")
            return
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            click.echo(f"[{self.label}] {line}")

    def _line(self, text: str) -> None:
        if self._partial:
            partial, self._partial = self._partial, ""
            self._line(partial)
        if not self._at_line_start:
            click.echo()
        for line in text.split("\n") if self.label else (text,):
            click.echo(f"[{self.label}] {line}" if self.label else line)
        self._at_line_start = True


@click.command("tail")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@click.option(
    "--last",
    type=click.IntRange(min=0),
    default=None,
    help="Start with only the newest N entries (default: all the stream holds).",
)
@pass_state
def task_tail(state: CliState, task_id: str, as_json: bool, last: int | None) -> None:
    """Print a task's output as it arrives (model tokens, log lines, progress) until the
    task settles. Exits 0 when it completed, 1 when it failed, was dead-lettered or
    cancelled, or does not exist."""
    printer = ChunkPrinter(as_json=as_json)

    async def go() -> str:
        async with state.queue() as queue:
            after = "0-0"
            if last is not None:
                older = await queue.read_output(task_id, last=last + 1)
                after = older[0].entry_id if len(older) > last else "0-0"
            final = ""
            try:
                async for chunk in queue.stream_output(task_id, after=after):
                    printer.print(chunk)
                    final = chunk.text if chunk.is_end else final
            except TaskNotFound:
                return "missing"
            finally:
                printer.close()
            if not final:  # it settled without writing (or its stream expired)
                task = await queue.get_task(task_id)
                final = task.state if task is not None else "missing"
            return final

    final = run(go)
    if final == "missing":
        click.echo(f"error: no task {task_id!r}", err=True)
    if final != "completed":
        raise SystemExit(EXIT_FAILURE)
