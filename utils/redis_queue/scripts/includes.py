"""Splicing lua/include/*.lua into a script: only the helpers the script uses.

A script's top-level `local`s run on every call: each helper of an include is a closure
made afresh, and all of common.lua costs ~50,000 instructions per call (about 5 us, a
tenth of an enqueue) whether the script uses a helper or not. So the includes are cut
into top-level chunks (a `local` definition with the comments above it, or any other
statement), and a script gets the chunks that define a name it mentions, then the
chunks those mention, in their original order.

Names are found by scanning the code for identifiers (strings and trailing comments too,
whole-line comments not): a name mentioned by accident keeps a helper it does not need,
never drops one it does. A chunk that is not a `local` definition is always kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["splice"]

_INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BLOCK_COMMENT = re.compile(r"^[ \t]*--\[\[.*?\]\]", re.MULTILINE | re.DOTALL)
_LINE_COMMENT = re.compile(r"^[ \t]*--.*$", re.MULTILINE)
_LOCAL_FUNCTION = re.compile(r"local\s+function\s+([A-Za-z_]\w*)")
_LOCAL_NAMES = re.compile(r"local\s+([A-Za-z_][\w\s,]*?)\s*(?:=|$)")
# A line at column 0 that continues the chunk above rather than starting one.
_CONTINUES = ("end", "}", ")", "]", "else", "elseif", "until")


def splice(source: str, read_include: Callable[[str], str]) -> str:
    """`source` with its `--@include name` lines replaced by the chunks of those includes
    (read with `read_include(name)`, in the order given) that it uses, all at the place
    of the first include line."""
    names = _INCLUDE.findall(source)
    if not names:
        return source
    chunks = [c for name in names for c in _chunks(read_include(name))]
    kept = _used(chunks, _mentioned(_INCLUDE.sub("", source)))
    library = "".join(text for (text, _), keep in zip(chunks, kept, strict=True) if keep)
    first = True

    def place(match: re.Match[str]) -> str:
        nonlocal first
        if first:
            first = False
            return library.rstrip("\n")
        return ""

    return _INCLUDE.sub(place, source)


def _chunks(text: str) -> list[tuple[str, frozenset[str] | None]]:
    """The top-level chunks of an include: (text, the names it defines), names None for
    a chunk that is not a `local` definition. Comments above a chunk belong to it."""
    out: list[tuple[str, frozenset[str] | None]] = []
    lines: list[str] = []  # the chunk so far
    pending: list[str] = []  # comments and blank lines since its last code line
    head: str | None = None  # the chunk's first code line
    in_comment = False
    for line in text.splitlines(keepends=True):
        if in_comment or line.startswith("--") or not line.strip():
            if line.startswith("--[[") and not in_comment:
                in_comment = "]]" not in line[4:]
            elif in_comment:
                in_comment = "]]" not in line
            (pending if head is not None else lines).append(line)
            continue
        if head is not None and line[:1] not in (" ", "\t") and not line.startswith(_CONTINUES):
            out.append(("".join(lines), _defined(head)))
            lines, head = [], None
        lines.extend(pending)
        pending = []
        lines.append(line)
        if head is None:
            head = line
    lines.extend(pending)
    if lines:
        out.append(("".join(lines), _defined(head) if head is not None else frozenset()))
    return out


def _defined(head: str) -> frozenset[str] | None:
    if match := _LOCAL_FUNCTION.match(head):
        return frozenset({match.group(1)})
    if match := _LOCAL_NAMES.match(head.rstrip("\n")):
        return frozenset(n.strip() for n in match.group(1).split(","))
    return None


def _used(chunks: list[tuple[str, frozenset[str] | None]], wanted: set[str]) -> list[bool]:
    """Which chunks to keep: every chunk that is not a definition, every definition of a
    wanted name, and what those mention, until nothing is added."""
    kept = [False] * len(chunks)
    changed = True
    while changed:
        changed = False
        for i, (text, defines) in enumerate(chunks):
            if kept[i] or (defines is not None and not defines & wanted):
                continue
            kept[i] = changed = True
            wanted |= _mentioned(text)
    return kept


def _mentioned(text: str) -> set[str]:
    """The identifiers in `text` outside its whole-line comments."""
    code = _BLOCK_COMMENT.sub("", text)
    return set(_IDENT.findall(_LINE_COMMENT.sub("", code)))
