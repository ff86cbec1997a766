"""The sandbox every command running generated code goes through (QA's compile and tests).

Modes (PipelineSettings.sandbox; `auto` picks the strongest that works here, probed once):

- bubblewrap: `bwrap` with its own network, pid, ipc and uts namespaces and a mount
  namespace holding only the Python runtime (read-only), the workspace (read-write), a
  private /tmp (also HOME), /dev, the namespace's /proc and a minimal /etc of its own;
- unshare: util-linux `unshare` with network, pid, ipc, uts and mount namespaces; /tmp,
  /var/tmp and /dev/shm private, the workspace bound back in; the rest of the host's
  files are visible with the rights of the sandbox's user (hence weaker);
- rlimits: the limits only (neither tool works here);
- none: the worker's rights; a warning on every run.

In every mode but none a small wrapper (`_LIMITED_EXEC`, run by the runtime inside) sets
the rlimits, drops to an unprivileged uid of the run's own when the worker is root (so
RLIMIT_NPROC counts this run's processes only; the workspace lent to it for the run and
taken back after), sets no_new_privs, runs the command and exits
as it did (a signal N as 128+N: util-linux unshare loses its child's signal otherwise).
Which limit stopped a run is read from its exit signal or its output (`stopped_by`).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from utils.config import PipelineSettings
from utils.redis_queue.handlers import PermanentFailure

__all__ = ["Sandbox", "SandboxUnavailable", "available_mode", "stopped_by"]

log = logging.getLogger("agentic.agents")
NOBODY = 65534  # the uid whose reach to the runtime is checked on the rlimits fallback
# A root worker's runs get uids of their own: UID_BASE + pid * SLOTS + the run's slot in
# this process (unique on the host while the worker lives; 65534 past SLOTS at once).
UID_BASE = 1 << 30
SLOTS = 64
_PID_SPAN = 1 << 22  # pid_max's ceiling on Linux
_slots: set[int] = set()
_MIB = 1024 * 1024
PROBE_SECONDS = 10.0
# What the unshare fallback covers with empty tmpfs (the runtime and the workspace are
# bound back): the shared temporary directories and the users' homes.
HIDDEN = ("/tmp", "/var/tmp", "/dev/shm", "/root", "/home", "/run", "/mnt", "/media", "/srv")

# Run as `python -c` inside the sandbox: argv[1] its JSON settings, argv[2:] the command.
# Self-contained (the sandbox sees the runtime, not this package).
_LIMITED_EXEC = """\
import ctypes, json, os, resource, sys
c = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
if c["hide"]:  # unshare: root in mount and network namespaces of its own
    import fcntl, socket, struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # loopback up, as bwrap does
        got = fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0))  # SIOCGIFFLAGS
        flags = struct.unpack("16sH", got[:18])[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS IFF_UP
    kept = [(os.open(p, os.O_PATH), p, w) for p, w in c["keep"]]
    for d in c["hide"]:
        if os.path.isdir(d) and libc.mount(b"tmpfs", d.encode(), b"tmpfs", 6, b"mode=1777"):
            sys.exit("sandbox: cannot mount a private " + d)
    for fd, p, w in kept:
        src = ("/proc/self/fd/%d" % fd).encode()
        os.makedirs(p, exist_ok=True)
        if libc.mount(src, p.encode(), None, 4096, None) or (not w and libc.mount(
                None, p.encode(), None, 4096 | 32 | 1, None)):  # MS_BIND|MS_REMOUNT|MS_RDONLY
            sys.exit("sandbox: cannot bind " + p)
        os.close(fd)
    os.makedirs("/tmp/home", exist_ok=True)
    os.chmod("/tmp/home", 0o777)
os.chdir(c["workspace"])
for name, value in c["limits"].items():
    resource.setrlimit(getattr(resource, name), (value[0], value[1]))
if c["uid"] is not None:
    os.setgroups([])
    os.setgid(c["uid"])
    os.setuid(c["uid"])
if libc.prctl(38, 1, 0, 0, 0):
    sys.exit("sandbox: cannot set no_new_privs")
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
while True:  # reaps orphans too (pid 1 of unshare's namespace)
    done, status = os.wait()
    if done == pid:
        code = os.waitstatus_to_exitcode(status)
        os._exit(128 - code if code < 0 else code)
"""


class SandboxUnavailable(PermanentFailure):
    """The configured sandbox mode cannot run on this host."""


@cache
def _works(argv: tuple[str, ...]) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=PROBE_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _bwrap_works() -> bool:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return False
    user = () if os.geteuid() == 0 else ("--unshare-user",)
    return _works((bwrap, "--unshare-net", "--unshare-pid", *user, "--dev-bind", "/", "/", "true"))


def _unshare_works() -> bool:
    unshare = shutil.which("unshare")
    if not unshare:
        return False
    return _works((unshare, *_unshare_flags(), "true"))


def _unshare_flags() -> tuple[str, ...]:
    user = () if os.geteuid() == 0 else ("--map-root-user",)
    return (*user, "--net", "--pid", "--ipc", "--uts", "--mount-proc", "--kill-child",
            "--propagation", "private")  # fmt: skip


def available_mode(wanted: str) -> str:
    """The mode that runs for the setting `wanted`; SandboxUnavailable when an explicit
    bubblewrap or unshare does not work here."""
    if wanted == "none":
        return "none"
    if wanted in ("auto", "bubblewrap") and _bwrap_works():
        return "bubblewrap"
    if wanted == "bubblewrap":
        raise SandboxUnavailable("sandbox=bubblewrap but bwrap is missing or fails here")
    if _unshare_works():
        return "unshare"
    if wanted == "unshare":
        raise SandboxUnavailable("sandbox=unshare but unshare is missing or fails here")
    return "rlimits"


@dataclass(frozen=True, slots=True)
class Sandbox:
    """One configured sandbox: the mode that runs and its limits."""

    mode: str
    cpu_seconds: int
    memory_mib: int
    max_processes: int
    file_size_mib: int
    open_files: int

    @classmethod
    def from_settings(cls, settings: PipelineSettings) -> Sandbox:
        mode = available_mode(settings.sandbox)
        if mode == "none":
            log.warning("sandbox=none: generated code runs with the worker's rights")
        elif settings.sandbox == "auto" and mode != "bubblewrap":
            log.warning("sandbox: bubblewrap is not available, running on the %s fallback", mode)
        else:
            _announce(mode)
        return cls(
            mode=mode,
            cpu_seconds=settings.sandbox_cpu_seconds,
            memory_mib=settings.sandbox_memory_mib,
            max_processes=settings.sandbox_max_processes,
            file_size_mib=settings.sandbox_file_size_mib,
            open_files=settings.sandbox_open_files,
        )

    @property
    def isolated_tmp(self) -> bool:
        """/tmp inside is private: HOME and caches go there, not to a host directory."""
        return self.mode in ("bubblewrap", "unshare")

    def limits(self) -> dict[str, tuple[int, int]]:
        # CPU: SIGXCPU at the soft limit, SIGKILL a second later if it is ignored.
        return {
            "RLIMIT_CPU": (self.cpu_seconds, self.cpu_seconds + 1),
            "RLIMIT_AS": (self.memory_mib * _MIB, self.memory_mib * _MIB),
            "RLIMIT_NPROC": (self.max_processes, self.max_processes),
            "RLIMIT_FSIZE": (self.file_size_mib * _MIB, self.file_size_mib * _MIB),
            "RLIMIT_NOFILE": (self.open_files, self.open_files),
        }

    def command(self, argv: list[str], workspace: Path, uid: int | None) -> list[str]:
        """`argv` as it runs in this sandbox, in `workspace` (absolute, resolved), as `uid`
        (from `running`; None: the worker's)."""
        if self.mode == "none":
            return list(argv)
        settings = {
            "limits": self.limits(),
            "uid": uid,
            "workspace": str(workspace),
            "hide": list(HIDDEN) if self.mode == "unshare" else [],
            "keep": [[str(p), False] for p in _runtime_dirs()] + [[str(workspace), True]],
        }
        # -I -B: the wrapper (root until it drops) leaves no bytecode in the shared caches
        inner = [sys.executable, "-I", "-B", "-c", _LIMITED_EXEC, json.dumps(settings), *argv]
        if self.mode == "bubblewrap":
            return [*_bwrap_prefix(workspace), "--", *inner]
        if self.mode == "unshare":
            return [str(shutil.which("unshare")), *_unshare_flags(), "--", *inner]
        return inner

    @property
    def drops_root(self) -> bool:
        """A root worker's code runs unprivileged: always in a namespace (the runtime is
        bound in readable); without one only if others can reach the runtime where it is."""
        if self.mode == "none" or os.geteuid() != 0:
            return False
        return self.mode != "rlimits" or _others_can_run()

    @contextmanager
    def running(self, *dirs: Path) -> Iterator[int | None]:
        """The uid this run's commands run as (None: the worker's), with `dirs` (the
        workspace, the scratch directory) owned by it for the run, and everything in them,
        whatever the run created, the worker's again after."""
        if not self.drops_root:
            yield None
            return
        slot = next((i for i in range(SLOTS) if i not in _slots), None)
        uid = NOBODY if slot is None else UID_BASE + (os.getpid() % _PID_SPAN) * SLOTS + slot
        if slot is not None:
            _slots.add(slot)
        try:
            for directory in dirs:
                _chown_tree(directory, uid, uid)
            yield uid
        finally:
            for directory in dirs:
                _chown_tree(directory, os.getuid(), os.getgid())
            if slot is not None:
                _slots.discard(slot)


@cache
def _others_can_run() -> bool:
    for runtime in _runtime_dirs():
        for path in (runtime, *runtime.parents):
            if not path.stat().st_mode & 0o001:  # not searchable by others (/root: 0700)
                log.warning("sandbox=rlimits: %s is closed to others, the code runs as root",
                            path)  # fmt: skip
                return False
    return True


@cache
def _etc_dir() -> Path:
    """A minimal /etc for bubblewrap (the host's stays out): localhost resolves, and this
    process's run uids, root and nobody have names. Made once per process."""
    etc = Path(tempfile.mkdtemp(prefix="agentic-sandbox-etc-"))
    atexit.register(shutil.rmtree, etc, True)
    etc.chmod(0o755)
    base = UID_BASE + (os.getpid() % _PID_SPAN) * SLOTS
    users = {0: "root", NOBODY: "nobody", os.getuid(): "sandbox"}
    users |= {base + slot: f"sandbox{slot}" for slot in range(SLOTS)}
    files = {
        "hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "passwd": "".join(
            f"{n}:x:{u}:{u}::/tmp/home:/usr/sbin/nologin\n" for u, n in users.items()
        ),
        "group": "".join(f"{n}:x:{u}:\n" for u, n in users.items()),
    }
    for name, text in files.items():
        (etc / name).write_text(text)
        (etc / name).chmod(0o644)
    return etc


@cache
def _announce(mode: str) -> None:
    log.info("sandbox: generated code runs in %s", mode)  # once per process


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for parent, dirs, files in os.walk(root):  # does not follow symlinks
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid, follow_symlinks=False)


def _runtime_dirs() -> list[Path]:
    """What the runtime needs, read-only: the interpreter's prefixes and where
    sys.executable really lives."""
    found = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent}
    found |= {Path(sys.executable).parent}
    return sorted(p.resolve() if p.is_symlink() else p for p in found)


def _bwrap_prefix(workspace: Path) -> list[str]:
    argv = [str(shutil.which("bwrap") or "bwrap"), "--unshare-net", "--unshare-pid",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent",
            "--new-session"]  # fmt: skip
    if os.geteuid() != 0:
        argv += ["--unshare-user", "--cap-drop", "ALL"]
    # As root: no user namespace (whose uid would map back to root, which RLIMIT_NPROC
    # exempts); the wrapper drops to the run's uid, losing every capability.
    bound: list[Path] = []
    for system in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        path = Path(system)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), system]
        elif path.is_dir():
            argv += ["--ro-bind", system, system]
            bound.append(path)
    argv += ["--ro-bind", str(_etc_dir()), "/etc"]
    # The private /tmp first: a runtime or a workspace under /tmp (a checkout or a venv
    # there, pytest's tmp_path) is bound on top of it, not hidden by it.
    argv += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "0777", "--dir", "/tmp/home"]
    made: set[Path] = {Path("/tmp")}
    for runtime in _runtime_dirs():
        if any(runtime.is_relative_to(b) for b in bound):
            continue
        argv += [*_parents(runtime, made), "--ro-bind", str(runtime), str(runtime)]
        bound.append(runtime)
    argv += [*_parents(workspace, made), "--bind", str(workspace), str(workspace)]
    return [*argv, "--dev", "/dev", "--proc", "/proc", "--chdir", str(workspace)]


def _parents(path: Path, made: set[Path]) -> list[str]:
    """Its missing ancestors, searchable by anyone (bwrap would make them 0700)."""
    argv: list[str] = []
    for parent in reversed(path.parents):
        if parent == Path("/") or parent in made:
            continue
        made.add(parent)
        argv += ["--perms", "0755", "--dir", str(parent)]
    return argv


_STOPPED = (  # what a process says when a limit refuses it, the limit it names
    (re.compile(r"\bMemoryError\b|\[Errno 12\] Cannot allocate memory"), "memory"),
    (re.compile(r"\[Errno 11\] Resource temporarily unavailable"), "processes"),
    (re.compile(r"\[Errno 27\] File too large"), "file_size"),
    (re.compile(r"\[Errno 24\] Too many open files"), "open_files"),
)


def stopped_by(sandbox: Sandbox, returncode: int, output: str) -> str | None:
    """The limit that killed or refused the run, as a user reads it ("memory limit
    1024 MiB"); None when no limit shows. The wrapper reports a signal N as 128+N."""
    if sandbox.mode == "none":
        return None
    signum = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if signum in (signal.SIGXCPU, signal.SIGKILL):  # SIGKILL: the hard CPU limit
        return f"CPU time limit {sandbox.cpu_seconds} s"
    if signum == signal.SIGXFSZ:
        return f"file size limit {sandbox.file_size_mib} MiB"
    for pattern, kind in _STOPPED:
        if pattern.search(output):
            return {
                "memory": f"memory limit {sandbox.memory_mib} MiB",
                "processes": f"process limit {sandbox.max_processes}",
                "file_size": f"file size limit {sandbox.file_size_mib} MiB",
                "open_files": f"open files limit {sandbox.open_files}",
            }[kind]
    return None
