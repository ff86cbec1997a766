"""The QA agent: checks a workspace for real, with nothing but the standard library.

1. `python -m compileall -q .`: every file must compile (bytecode goes to a temporary
   PYTHONPYCACHEPREFIX, so the workspace stays clean);
2. `python -m unittest discover -s <ws> -t <ws> -v`: the tests must run and pass.

Both run in the sandbox (agents/sandbox.py, PipelineSettings.sandbox: no network, only the
workspace writable, the limits set, an unprivileged uid when the worker is root), in the
workspace, with a minimal environment (no AGENTIC_* settings or API keys reach the code
under test), an empty private HOME, and one deadline for both; on timeout the whole process
group is killed. The result says which sandbox ran ("sandbox") and the limit that stopped
the run, if one did ("limit"). Before the first run the worker makes itself non-dumpable,
so code running as the same user cannot read its environment from /proc. A failed QA is a
normal result (`ok: False`), not an exception: the pipeline decides what comes next.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .base import Agent
from .process import ProcessResult, run_process
from .request import AgentRequest
from .sandbox import Sandbox, stopped_by

__all__ = ["QAAgent"]

OUTPUT_CHARS = 8_000
log = logging.getLogger("agentic.agents")
_ENV_KEPT = ("PATH", "LANG", "LC_ALL", "TMPDIR")
PR_SET_DUMPABLE = 4  # <linux/prctl.h>
_protected = False
_RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)
_FAILED = re.compile(r"^FAILED \((.*)\)\s*$", re.MULTILINE)
_COUNT = re.compile(r"(failures|errors|unexpected successes)=(\d+)")


class QAAgent(Agent):
    """Payload adds "timeout" (seconds, default PipelineSettings.qa_timeout_seconds).
    Result adds passed, tests_run, failures (failures + errors), returncode,
    duration_seconds, timed_out, stage ("compile" or "tests") and output (its tail)."""

    name = "qa"

    def timeout_seconds(self) -> float:
        return self.pipeline_settings.qa_timeout_seconds

    async def run(self, request: AgentRequest) -> dict[str, Any]:
        timeout = request.number("timeout", self.pipeline_settings.qa_timeout_seconds)
        started = time.monotonic()
        ws = request.workspace.resolve()
        # The first call probes the tools (once per process): off the event loop.
        sandbox = await asyncio.to_thread(Sandbox.from_settings, self.pipeline_settings)
        protect_worker()
        with tempfile.TemporaryDirectory(prefix="agentic-qa-") as scratch:
            env = _environment(scratch, sandbox)
            with sandbox.running(ws, Path(scratch)) as uid:
                compiled = await run_process(
                    sandbox.command([sys.executable, "-m", "compileall", "-q", "."], ws, uid),
                    cwd=ws, env=env, timeout=timeout,
                )  # fmt: skip
                if compiled.timed_out or compiled.returncode != 0:
                    await self.log(_tail(compiled.output))
                    return self._report(compiled, "compile", timeout, started, sandbox)
                tests = await run_process(
                    sandbox.command([sys.executable, "-B", "-m", "unittest", "discover",
                                     "-s", str(ws), "-t", str(ws), "-v"], ws, uid),
                    cwd=ws,
                    env=env,
                    timeout=timeout - (time.monotonic() - started),
                )  # fmt: skip
        await self.log(_tail(tests.output))  # what `task tail` and `run --follow` show
        return self._report(tests, "tests", timeout, started, sandbox)

    def _report(
        self, run: ProcessResult, stage: str, timeout: float, started: float, sandbox: Sandbox
    ) -> dict[str, Any]:
        ran = _RAN.findall(run.output)
        tests_run = int(ran[-1]) if ran else 0
        failed = _FAILED.findall(run.output)
        failures = sum(int(n) for _, n in _COUNT.findall(failed[-1])) if failed else 0
        passed = False
        limit = None if run.timed_out else stopped_by(sandbox, run.returncode, run.output)
        if run.timed_out:
            limit = f"wall time limit {timeout:g} s"
            summary = f"timed out after {timeout:g} s during {stage}; the process group was killed"
        elif limit and (run.returncode < 0 or run.returncode > 128):
            summary = f"killed: {limit} (during {stage})"
        elif stage == "compile":
            summary = "the code does not compile (python -m compileall failed)"
        elif failures:
            summary = f"{failures} of {tests_run} tests failed"
        elif run.returncode != 0:
            summary = f"unittest exited with status {run.returncode}"
        elif tests_run == 0:
            summary = "no tests found"
        else:
            passed = True
            summary = f"{tests_run} tests passed"
        if limit and not passed and not summary.startswith(("killed", "timed out")):
            summary = f"stopped by the {limit}: {summary}"
        return self.result(
            ok=passed,
            summary=summary,
            passed=passed,
            tests_run=tests_run,
            failures=failures,
            returncode=run.returncode,
            duration_seconds=round(time.monotonic() - started, 3),
            timed_out=run.timed_out,
            stage=stage,
            output=_tail(run.output),
            sandbox=sandbox.mode,
            limit=limit,
        )


def protect_worker() -> None:
    """Make this process non-dumpable (once): its /proc/<pid>/environ and memory are then
    unreadable to other processes of the same user, such as the code QA runs. Linux only."""
    global _protected
    if _protected or sys.platform != "linux":
        return
    _protected = True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_DUMPABLE) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        log.warning("cannot make the worker non-dumpable: %s", exc)


def _environment(scratch: str, sandbox: Sandbox) -> dict[str, str]:
    # Inside bubblewrap or unshare /tmp is private and empty; elsewhere a scratch directory.
    base = "/tmp" if sandbox.isolated_tmp else scratch
    home = os.path.join(base, "home")
    if not sandbox.isolated_tmp:
        os.mkdir(home)
    env = {key: os.environ[key] for key in _ENV_KEPT if key in os.environ}
    env.update(
        HOME=home,  # the worker's dotfiles (credentials, tokens) stay out of reach
        PYTHONPYCACHEPREFIX=os.path.join(base, "pycache"),
        PYTHONUNBUFFERED="1",
        PYTHONIOENCODING="utf-8",
        PYTHONHASHSEED="0",  # the same run twice, the same order of sets and dicts
    )
    if sandbox.isolated_tmp:
        env["TMPDIR"] = "/tmp"
    if sandbox.mode != "none":  # the run's uid has no passwd entry: getpass reads these
        env.update(USER="sandbox", LOGNAME="sandbox")
    return env


def _tail(output: str) -> str:
    if len(output) <= OUTPUT_CHARS:
        return output
    return f"[... {len(output) - OUTPUT_CHARS} characters cut]\n" + output[-OUTPUT_CHARS:]
