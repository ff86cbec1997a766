"""A run's budget (the spec's `budget`: max_tokens, max_cost_usd, max_seconds): what it
has used against it, and the message a run ends with once it is past it.

The manager checks tokens and cost as each result arrives and time with a deadline on the
whole flow; a run past its budget ends `failed` ("budget exceeded: ...") and its queued
subtasks are cancelled. A subtask already running finishes its current model call.
"""

from __future__ import annotations

import time

from .runs import RunState

__all__ = ["BUDGET_WARNING_AT", "budget_warning", "over_budget", "seconds_left"]

BUDGET_WARNING_AT = 0.8  # a run that has used this share of a budget gets a warning event


def over_budget(run: RunState) -> str | None:
    """Why `run` is past its token or cost budget, or None."""
    budget = run.spec.budget
    if budget is None:
        return None
    used = run.usage()
    if budget.max_tokens is not None and used.total_tokens > budget.max_tokens:
        return f"budget exceeded: {used.total_tokens:,} tokens used, {budget.max_tokens:,} allowed"
    if budget.max_cost_usd is not None and used.cost_usd > budget.max_cost_usd:
        return f"budget exceeded: {used.cost_usd:.4f} USD spent, {budget.max_cost_usd:.4f} allowed"
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


def seconds_left(run: RunState) -> float | None:
    """Wall seconds the run may still take (from its creation; a wait at an approval gate
    counts), or None without a time budget."""
    budget = run.spec.budget
    if budget is None or budget.max_seconds is None:
        return None
    return run.created_at + budget.max_seconds - time.time()
