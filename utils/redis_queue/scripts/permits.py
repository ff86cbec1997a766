"""Builders of the fleet-wide limit scripts a partitioned queue runs beside its claim and
settle (declared in contract.py with the others): permit, unpermit, extend_permits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..keys import QueueKeys
from .contract import EXTEND_PERMITS, PERMIT, UNPERMIT, ScriptCall


@dataclass(frozen=True, slots=True)
class PermitItem:
    """A claimed task of a partitioned queue, for permit.lua."""

    task_id: str
    task_type: str
    limits: Sequence[str]
    cost_tokens: int | None


def permit(keys: QueueKeys, *, lease_ms: int, tasks: Sequence[PermitItem]) -> ScriptCall:
    rest: list[Any] = []
    for t in tasks:
        rest += [t.task_id, t.task_type, " ".join(t.limits), t.cost_tokens or 0]
    return PERMIT.call(keys, {"base": keys.base, "lease_ms": lease_ms}, rest)


@dataclass(frozen=True, slots=True)
class HeldItem:
    """What a settled attempt of a partitioned queue gives back, for unpermit.lua."""

    task_id: str
    held: str  # space-separated limit keys
    cost_tokens: int | None
    tokens_used: int | None


def unpermit(
    keys: QueueKeys, *, items: Sequence[HeldItem], pause_ms: int = 0, pause_keys: Sequence[str] = ()
) -> ScriptCall:
    named = {"base": keys.base, "pause_ms": pause_ms, "pause_keys": " ".join(pause_keys)}
    rest: list[Any] = []
    for item in items:
        used = "" if item.tokens_used is None else item.tokens_used
        rest += [item.task_id, item.held, item.cost_tokens or 0, used]
    return UNPERMIT.call(keys, named, rest)


def extend_permits(
    keys: QueueKeys, *, lease_ms: int, held: Sequence[tuple[str, str]]
) -> ScriptCall:
    rest = [value for pair in held for value in pair]
    return EXTEND_PERMITS.call(keys, {"base": keys.base, "lease_ms": lease_ms}, rest)
