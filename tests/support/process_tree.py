"""Who is still running: a process's live children and a session's members, from /proc
(no psutil dependency). Zombies count as gone: they run nothing, and an orphan's zombie
waits for whoever reaps orphans in this container."""

from __future__ import annotations

import os
from pathlib import Path


def state(pid: int) -> str | None:
    """The process's state letter (R, S, T, Z, ...), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()[0]


def running(pid: int) -> bool:
    return state(pid) not in (None, "Z")


def children(pid: int) -> list[int]:
    """Live direct children."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [child for child in map(int, listed) if running(child)]


def descendants(pid: int) -> list[int]:
    """Live children, their children, and so on (a lease keeper has a session of its own,
    so a session scan alone misses it)."""
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (a process started with start_new_session=True and
    everything it started that did not leave the session)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) == sid and running(int(entry)):
                members.append(int(entry))
        except OSError:  # gone meanwhile
            continue
    return members


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
    except OSError:
        return []
