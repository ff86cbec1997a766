"""Includes are spliced with only the helpers a script uses (scripts/includes.py): every
script still compiles on a real Redis and defines every helper it mentions, and helpers it
does not mention are left out."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from redis.asyncio import Redis

from utils.redis_queue import scripts
from utils.redis_queue.scripts.includes import splice

pytestmark = pytest.mark.timeout(30)

_LUA = resources.files("utils.redis_queue").joinpath("lua")
_DEFINED = re.compile(r"^local\s+(?:function\s+)?([A-Za-z_][\w\s,]*?)\s*(?:[=(]|$)", re.MULTILINE)
_IDENT = re.compile(r"[A-Za-z_]\w*")
_COMMENTS = re.compile(r"^[ \t]*--\[\[.*?\]\]|^[ \t]*--[^\n]*", re.MULTILINE | re.DOTALL)


def _library_names(script: str) -> set[str]:
    """The top-level names of the includes `script` includes."""
    names: set[str] = set()
    for included in re.findall(r"^--@include (\w+)$", script, re.MULTILINE):
        text = _LUA.joinpath("include", f"{included}.lua").read_text()
        for match in _DEFINED.finditer(text):
            names.update(n.strip() for n in match.group(1).split(","))
    return names


@pytest.mark.parametrize("name", sorted(scripts.SCRIPTS))
def test_every_helper_a_script_mentions_is_defined_in_it(name: str) -> None:
    source = scripts.load_source(name)
    library = _library_names(_LUA.joinpath(f"{name}.lua").read_text())
    assert library  # every script includes common at least
    defined = {n.strip() for m in _DEFINED.finditer(source) for n in m.group(1).split(",")}
    mentioned = set(_IDENT.findall(_COMMENTS.sub("", source)))
    assert (mentioned & library) - defined == set()


@pytest.mark.parametrize("name", sorted(scripts.SCRIPTS))
async def test_every_script_compiles(raw_redis: Redis, name: str) -> None:
    sha = await raw_redis.script_load(scripts.script_source(name))
    assert sha == scripts.script_sha(name)


def test_helpers_a_script_does_not_use_are_left_out() -> None:
    enqueue = scripts.load_source("enqueue")
    assert "local function task_event" in enqueue  # it writes an event per task
    assert "local function quarantine" not in enqueue  # claim's, never enqueue's
    assert "local function check_lease" not in enqueue


def test_comments_go_with_the_chunk_below_and_statements_are_always_kept() -> None:
    library = (
        "--[[\nlocal in_a_comment = 1\n]]\n"
        "local A = 1\n\n-- b needs A\nlocal function b()\n  return A\nend\n"
        "-- c is unused\nlocal function c() return 2 end\nredis.setresp(2)\n"
    )
    spliced = splice("--[[ header ]]\n--@include lib\nreturn b()\n", lambda _: library)
    assert "local A = 1" in spliced and "local function b()" in spliced
    assert "-- b needs A" in spliced and "-- c is unused" not in spliced
    assert "local function c" not in spliced
    assert "redis.setresp(2)" in spliced  # not a definition: kept
    assert spliced.endswith("return b()\n") and "--@include" not in spliced
