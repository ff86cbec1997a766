"""How `agentic pipeline` shows a run: a line per event while it runs, then a summary."""

from __future__ import annotations

import time
from typing import Any

import click

from utils.redaction import first_line, redact_secrets
from utils.redis_queue import TaskPriority

from ..runs import PipelineResult, RunEvent, RunState, RunStatus

__all__ = ["ProgressPrinter", "reason_line", "render_summary", "run_row"]

_COLOURS = {RunStatus.SUCCEEDED: "green", RunStatus.FAILED: "red", RunStatus.CANCELLED: "yellow"}


class ProgressPrinter:
    """A RunEvent listener printing one line per event, timed from its creation."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def __call__(self, event: RunEvent) -> None:
        if event.kind in ("stage", "output"):
            return  # the submitted lines show the stage; --follow prints the output
        elapsed = f"{time.monotonic() - self._started:6.1f}s"
        stage = str(event.stage or "run")
        what = {"submitted": "queued", "finished": "done"}.get(event.kind, event.kind)
        detail = event.message
        if event.kind == "submitted":
            priority = int(event.message.rsplit(" ", 1)[-1])
            detail = f"priority {TaskPriority(priority).name}"
        elif event.kind == "finished":
            detail = _finished_detail(event.data)
        elif event.kind == "failed":
            detail = reason_line(detail)
        colour = "red" if event.kind == "failed" or "FAILED" in detail else None
        line = f"{elapsed}  {stage:<7} {event.subtask_id or '':<10} {what:<9} {detail}"
        click.secho(line.rstrip(), fg=colour)


def reason_line(text: str) -> str:
    """What a user reads of a failure: its first line, no secret in it. The whole text (a
    traceback, say) stays in the run's record and the task's detail (`task show`)."""
    return first_line(redact_secrets(text), 600)


def _finished_detail(result: dict[str, Any]) -> str:
    summary = str(result.get("summary") or "").strip().splitlines()
    text = summary[0][:90] if summary else ""
    if "passed" in result:
        text = ("passed: " if result["passed"] else "FAILED: ") + text
    tokens = _tokens(result)
    return f"{text} ({tokens:,} tokens)" if tokens else text


def _tokens(result: Any) -> int:
    usage = result.get("usage") if isinstance(result, dict) else None
    if not isinstance(usage, dict):
        return 0
    return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)


def render_summary(
    result: PipelineResult, *, metrics_url: str | None = None, traces_file: str | None = None
) -> str:
    records = sorted(result.subtasks, key=lambda r: r.submitted_at)
    flow: list[str] = []
    for record in records:
        if not flow or flow[-1] != record.stage:
            flow.append(str(record.stage))
    usage = result.usage
    rows = [
        ("stages", " -> ".join(flow) or "(none)"),
        ("subtasks", f"{len(records)} (attempts: {sum(r.attempts for r in records)})"),
        ("fix rounds", str(result.fix_rounds)),
        (
            "tokens",
            f"{usage.total_tokens:,} (prompt {usage.prompt_tokens:,}, completion "
            f"{usage.completion_tokens:,}), cost ${usage.cost_usd:.4f}",
        ),
        ("artifact", result.artifact or "(none)"),
    ]
    if result.trace_id:
        where = f" (spans in {traces_file})" if traces_file else ""
        rows.append(("trace id", result.trace_id + where))
    else:
        rows.append(("trace id", "(tracing off: set OTEL_TRACES_EXPORTER)"))
    if metrics_url:
        rows.append(("metrics", metrics_url))
    rows += [("reason", reason_line(reason)) for reason in result.reasons]
    status = click.style(str(result.status), fg=_COLOURS.get(result.status), bold=True)
    head = f"Run {result.run_id} {status} in {result.duration_seconds:.1f} s"
    return "\n".join([head, *(f"  {name:<11} {value}" for name, value in rows)])


def run_row(run: RunState) -> dict[str, Any]:
    """One run for `list` / `status`, as plain data."""
    usage = run.usage()
    return {
        "run_id": run.run_id,
        "name": run.name,
        "status": str(run.status),
        "stage": str(run.stage),
        "fix_rounds": run.fix_rounds,
        "subtasks": len(run.subtasks),
        "tokens": usage.total_tokens,
        "cost_usd": round(usage.cost_usd, 6),
        "artifact": run.artifact,
        "reasons": [reason_line(reason) for reason in run.reasons],
        "trace_id": run.trace_id,
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created_at)),
    }
