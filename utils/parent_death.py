"""Child processes that die with their parent (Linux: prctl PR_SET_PDEATHSIG).

Why the kernel's parent-death signal rather than a watchdog pipe: it is delivered even when
the parent is SIGKILLed, costs no thread or descriptor in either process, and survives
exec, so it also covers commands that are not ours (the QA step's test run). Two caveats,
both handled by the callers: it fires when the *thread* that forked the child exits (every
caller forks from its main thread, the one running the event loop or the supervisor), and a
parent that dies before the child calls prctl is caught by comparing getppid() afterwards.
Elsewhere than Linux these are no-ops.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["SUPERVISOR_PID_ENV", "die_with_parent", "dying_with_this_process"]

log = logging.getLogger("agentic.worker")

PR_SET_PDEATHSIG = 1
# Set by WorkerPool for its children: the pid they must not outlive (and the sign that a
# supervisor, not this process, enforces the stop's grace).
SUPERVISOR_PID_ENV = "AGENTIC_SUPERVISOR_PID"

# Run by `python -c` before exec'ing the real command: argv[1] the parent's pid, argv[2]
# the signal, argv[3:] the command. Self-contained: the command's environment may be minimal.
_BOOTSTRAP = (
    "import ctypes,os,sys\n"
    "parent,sig=int(sys.argv[1]),int(sys.argv[2])\n"
    "ctypes.CDLL(None).prctl(1,sig,0,0,0)\n"
    "if os.getppid()!=parent: os.kill(os.getpid(),sig)\n"
    "os.execvp(sys.argv[3],sys.argv[3:])\n"
)


def die_with_parent(signum: int, parent_pid: int) -> bool:
    """Have the kernel send `signum` to this process when `parent_pid` (its parent) dies;
    sends it at once if the parent is already gone. False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return False
    except (OSError, AttributeError) as exc:
        log.warning("cannot tie this process to its parent: %s", exc)
        return False
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signum)
    return True


def dying_with_this_process(argv: Sequence[str], signum: int = signal.SIGKILL) -> list[str]:
    """`argv` wrapped so the command gets `signum` when this process dies; exec keeps it,
    so the command runs as itself (same pid). Unchanged elsewhere than Linux."""
    if sys.platform != "linux":
        return list(argv)
    return [sys.executable, "-c", _BOOTSTRAP, str(os.getpid()), str(int(signum)), *argv]
