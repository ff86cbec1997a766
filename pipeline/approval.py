"""The approval gate: a run that its spec's `approval` names stops before that stage
(deploy by default) in status awaiting_approval, shows what is to ship, and waits in
Redis (durably: a restarted manager waits on) for `approve` / `reject`, a cancel, or its
deadline. Who decided, when and why become part of the run's record (RunState.approval).
"""

from __future__ import annotations

import getpass
import socket
import time
from typing import Any

from .runs import Approval, RunState, Stage, SubtaskState

__all__ = ["decision", "new_approval", "who"]

SUMMARY_TEXT = 2000  # characters of the QA report an approver is shown


def who() -> str:
    """The default name of whoever decides: user@host."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a container: the host still says where
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def decision(kind: str, by: str | None = None, comment: str | None = None) -> dict[str, Any]:
    return {"decision": kind, "by": by or who(), "at": time.time(), "comment": comment}


def new_approval(
    run: RunState, stage: Stage, timeout: float, on_timeout: str, qa: dict[str, Any] | None
) -> Approval:
    """What the approver is shown: the files the dev and fix subtasks wrote, and QA's
    verdict and report (when QA ran before the gate)."""
    files = sorted(
        {
            str(f)
            for record in run.subtasks.values()
            if record.state == SubtaskState.COMPLETED and isinstance(record.result, dict)
            for f in record.result.get("files") or []
        }
    )
    summary: dict[str, Any] = {"files": files}
    if qa is not None:
        report = str(qa.get("output") or qa.get("summary") or "")
        summary["qa"] = {"passed": bool(qa.get("passed")), "report": report[-SUMMARY_TEXT:]}
    now = time.time()
    return Approval(
        stage=stage,
        requested_at=now,
        deadline=now + timeout,
        on_timeout=on_timeout,
        summary=summary,
    )
