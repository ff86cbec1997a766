"""A run's budget (the spec's `budget`: max_tokens, max_cost_usd, max_seconds; a dev
subtask may have one of its own): what it has used against it, what an agent may still
spend, and the message a run ends with once it is past it.

Two checks: the manager's, as each result arrives (tokens and cost, failed attempts'
tokens included) and as a deadline on the whole flow (and on a subtask with max_seconds);
and the agents', before each model call, against what the subtask's payload says is left
(`budget`: max_tokens, max_cost_usd, deadline: the tighter of the run's remainder when it
was sent and the subtask's own). A run past its budget ends `failed` ("budget exceeded:
...") and its queued subtasks are cancelled; a subtask already in a model call finishes it.
"""

from __future__ import annotations

import time
from typing import Any

from .runs import RunState, SubtaskRecord, Usage
from .spec import BudgetSpec

__all__ = [
    "BUDGET_EXCEEDED",
    "BUDGET_WARNING_AT",
    "agent_budget",
    "budget_line",
    "budget_warning",
    "over_budget",
    "seconds_left",
    "subtask_budget",
    "subtask_over_budget",
]

BUDGET_EXCEEDED = "budget exceeded"  # how every budget reason begins (agents' too)
BUDGET_WARNING_AT = 0.8  # a run that has used this share of a budget gets a warning event


def over_budget(run: RunState) -> str | None:
    """Why `run` is past its token or cost budget, or None."""
    budget = run.spec.budget
    if budget is None:
        return None
    used = run.usage()
    if budget.max_tokens is not None and used.total_tokens > budget.max_tokens:
        return (
            f"{BUDGET_EXCEEDED}: {used.total_tokens:,} tokens used, {budget.max_tokens:,} allowed"
        )
    if budget.max_cost_usd is not None and used.cost_usd > budget.max_cost_usd:
        return (
            f"{BUDGET_EXCEEDED}: {used.cost_usd:.4f} USD spent, {budget.max_cost_usd:.4f} allowed"
        )
    return None


def budget_warning(run: RunState) -> str | None:
    """What `run` has used of its token or cost budget once past BUDGET_WARNING_AT of it
    (and not past it), or None."""
    budget = run.spec.budget
    if budget is None:
        return None
    used = run.usage()
    if budget.max_tokens and used.total_tokens >= BUDGET_WARNING_AT * budget.max_tokens:
        share = used.total_tokens / budget.max_tokens
        return (
            f"{share:.0%} of the token budget used ({used.total_tokens:,} of {budget.max_tokens:,})"
        )
    if budget.max_cost_usd and used.cost_usd >= BUDGET_WARNING_AT * budget.max_cost_usd:
        share, spent = used.cost_usd / budget.max_cost_usd, used.cost_usd
        return f"{share:.0%} of the cost budget used ({spent:.4f} of {budget.max_cost_usd:.4f} USD)"
    return None


def subtask_budget(subtask: dict[str, Any]) -> BudgetSpec | None:
    raw = subtask.get("budget")
    return BudgetSpec.model_validate(raw) if raw else None


def subtask_over_budget(record: SubtaskRecord, budget: BudgetSpec | None) -> str | None:
    """Why a finished dev subtask is past its own budget, or None."""
    if budget is None:
        return None
    used = Usage(failed_attempt_tokens=record.failed_attempt_tokens)
    if isinstance(record.result, dict):
        used.add(record.result.get("usage"))
    name = f"{record.stage} subtask {record.subtask_id}"
    if budget.max_tokens is not None and used.total_tokens > budget.max_tokens:
        return (
            f"{BUDGET_EXCEEDED}: {name} used {used.total_tokens:,} tokens, "
            f"{budget.max_tokens:,} allowed"
        )
    if budget.max_cost_usd is not None and used.cost_usd > budget.max_cost_usd:
        return (
            f"{BUDGET_EXCEEDED}: {name} spent {used.cost_usd:.4f} USD, "
            f"{budget.max_cost_usd:.4f} allowed"
        )
    return None


def agent_budget(run: RunState, own: BudgetSpec | None) -> dict[str, Any] | None:
    """What a subtask sent now may spend (its payload's `budget`), or None when neither
    the run nor the subtask has a budget: the run's remainder, capped by the subtask's."""
    budget = run.spec.budget
    if budget is None and own is None:
        return None
    used = run.usage()
    limits: dict[str, list[float]] = {"max_tokens": [], "max_cost_usd": [], "deadline": []}
    if budget is not None:
        if budget.max_tokens is not None:
            limits["max_tokens"].append(max(0, budget.max_tokens - used.total_tokens))
        if budget.max_cost_usd is not None:
            limits["max_cost_usd"].append(max(0.0, budget.max_cost_usd - used.cost_usd))
        if budget.max_seconds is not None:
            limits["deadline"].append(run.created_at + budget.max_seconds)
    if own is not None:
        if own.max_tokens is not None:
            limits["max_tokens"].append(own.max_tokens)
        if own.max_cost_usd is not None:
            limits["max_cost_usd"].append(own.max_cost_usd)
        if own.max_seconds is not None:
            limits["deadline"].append(time.time() + own.max_seconds)
    return {name: min(values) for name, values in limits.items() if values}


def budget_line(run: RunState) -> str | None:
    """The run's use of its budget, for `agentic pipeline status`."""
    budget = run.spec.budget
    if budget is None:
        return None
    used, parts = run.usage(), []
    if budget.max_tokens is not None:
        parts.append(f"{used.total_tokens:,} of {budget.max_tokens:,} tokens")
    if budget.max_cost_usd is not None:
        parts.append(f"{used.cost_usd:.4f} of {budget.max_cost_usd:.4f} USD")
    if budget.max_seconds is not None:
        took = (run.finished_at or time.time()) - run.created_at
        parts.append(f"{took:.0f} of {budget.max_seconds:g} s")
    return ", ".join(parts)


def seconds_left(run: RunState) -> float | None:
    """Wall seconds the run may still take (from its creation; a wait at an approval gate
    counts), or None without a time budget."""
    budget = run.spec.budget
    if budget is None or budget.max_seconds is None:
        return None
    return run.created_at + budget.max_seconds - time.time()
