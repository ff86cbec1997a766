"""Child processes that die with their parent (Linux: prctl PR_SET_PDEATHSIG).

Why the kernel's parent-death signal rather than a watchdog pipe: it is delivered even when
the parent is SIGKILLed, costs no thread or descriptor in either process, and survives
exec. For commands that are not ours (the QA step's test run), a small guard process
holds it and kills the command's whole process group when the parent dies. Two caveats,
both handled by the callers: it fires when the *thread* that forked the child exits (every
caller forks from its main thread, the one running the event loop or the supervisor), and a
parent that dies before the child calls prctl is caught by comparing getppid() afterwards.
Elsewhere than Linux these are no-ops.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["SUPERVISOR_PID_ENV", "die_with_parent", "group_dying_with_this_process"]

log = logging.getLogger("agentic.worker")

PR_SET_PDEATHSIG = 1
# Set by WorkerPool for its children: the pid they must not outlive (and the sign that a
# supervisor, not this process, enforces the stop's grace).
SUPERVISOR_PID_ENV = "AGENTIC_SUPERVISOR_PID"

# Run by `python -c` as the leader of a new session: argv[1] the parent's pid, argv[2:] the
# command, run as its child. When the parent dies (SIGTERM, parent-death signal) it SIGKILLs
# its whole process group: the command and whatever the command started that stayed in the
# group. Otherwise it exits as the command did (the same code, or the same signal).
# Self-contained: the command's environment may be minimal.
_GROUP_GUARD = """\
import ctypes, os, signal, sys
signal.signal(signal.SIGTERM, lambda signum, frame: os.killpg(0, signal.SIGKILL))
ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    os.killpg(0, signal.SIGKILL)
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execvp(sys.argv[2], sys.argv[2:])
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


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


def group_dying_with_this_process(argv: Sequence[str]) -> list[str]:
    """`argv` run under a guard that SIGKILLs its process group when this process dies;
    start it as the leader of a new session (start_new_session=True). Its exit code is the
    command's. Unchanged elsewhere than Linux."""
    if sys.platform != "linux":
        return list(argv)
    return [sys.executable, "-c", _GROUP_GUARD, str(os.getpid()), *argv]
