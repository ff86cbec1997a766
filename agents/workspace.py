"""Files of a run's workspace: safe paths, atomic writes, and what is worth reading.

Every path an agent takes from a payload or a model reply goes through safe_path(),
which refuses absolute paths, `..`, and symlinks that lead out of the workspace.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

from utils.redis_queue.handlers import PermanentFailure

__all__ = [
    "UnsafePath",
    "atomic_write",
    "iter_files",
    "read_text_files",
    "safe_path",
    "write_files",
]

SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})  # and every dot-directory
SKIPPED_SUFFIXES = (".pyc", ".pyo")


class UnsafePath(PermanentFailure):
    """A path that is not a plain relative path inside the workspace."""


def safe_path(workspace: Path, relative: str) -> tuple[str, Path]:
    """(normalised relative path, absolute path) of `relative` inside `workspace`."""
    if not relative or "\x00" in relative or "\\" in relative:
        raise UnsafePath(f"not a usable relative path: {relative!r}")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or PureWindowsPath(relative).drive:
        raise UnsafePath(f"absolute paths are not allowed: {relative!r}")
    if ".." in pure.parts or not pure.parts:
        raise UnsafePath(f"path leaves the workspace: {relative!r}")
    root = workspace.resolve()
    target = root.joinpath(*pure.parts)
    # resolve() follows every symlink that already exists along the way.
    if not target.resolve().is_relative_to(root):
        raise UnsafePath(f"path leads out of the workspace through a symlink: {relative!r}")
    return pure.as_posix(), target


def write_files(workspace: Path, files: Mapping[str, str]) -> list[str]:
    """Write `files` ({relative path: text}) into `workspace`; returns the relative
    paths written. Every path is checked before the first write."""
    targets = [(*safe_path(workspace, path), content) for path, content in files.items()]
    for _, target, content in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, content.encode("utf-8"))
    return [relative for relative, _, _ in targets]


def atomic_write(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a temporary file in the same directory."""
    # A reader (QA, a concurrent agent) sees the old file or the new one, never half;
    # replacing also replaces a symlink itself instead of writing through it.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def iter_files(workspace: Path) -> Iterator[str]:
    """Relative paths of the workspace's regular files, sorted, without caches,
    bytecode, dot-directories or symlinks."""
    for directory, dirnames, filenames in os.walk(workspace):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in SKIPPED_DIRS
            and not d.startswith(".")
            and not os.path.islink(os.path.join(directory, d))
        )
        base = Path(directory)
        for name in sorted(filenames):
            path = base / name
            if name.endswith(SKIPPED_SUFFIXES) or path.is_symlink() or not path.is_file():
                continue
            yield path.relative_to(workspace).as_posix()


def read_text_files(
    workspace: Path,
    first: Iterable[str] = (),
    *,
    max_file_bytes: int = 64_000,
    max_total_bytes: int = 256_000,
) -> tuple[dict[str, str], list[str]]:
    """({path: text} of the workspace's text files, [paths left out]): `first` comes
    first, then the rest in sorted order; binary, oversized files and files past the
    total budget are left out (by name), so a prompt stays bounded."""
    existing = list(iter_files(workspace))
    wanted = [p for p in first if p in existing]
    ordered = wanted + [p for p in existing if p not in wanted]
    texts: dict[str, str] = {}
    skipped: list[str] = []
    total = 0
    for relative in ordered:
        data = (workspace / relative).read_bytes()
        if len(data) > max_file_bytes or total + len(data) > max_total_bytes or b"\0" in data:
            skipped.append(relative)
            continue
        try:
            texts[relative] = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(relative)
            continue
        total += len(data)
    return texts, skipped
