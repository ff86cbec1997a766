"""PriorityAssigner's documented rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline import PriorityAssigner, PriorityRules
from utils.redis_queue import TaskPriority

assign = PriorityAssigner().assign_priority


def test_stage_sets_the_base_priority() -> None:
    assert assign({"stage": "dev"}) == TaskPriority.NORMAL
    assert assign({"stage": "qa"}) == TaskPriority.HIGH
    assert assign({"stage": "deploy"}) == TaskPriority.HIGH
    assert assign({"stage": "something-else"}) == TaskPriority.NORMAL
    assert assign({}) == TaskPriority.NORMAL


def test_a_fix_that_blocks_a_deploy_outranks_new_dev_work() -> None:
    fix = assign({"stage": "fix", "blocking": True})
    assert fix == TaskPriority.CRITICAL
    assert fix > assign({"stage": "dev", "critical_path": True}) > assign({"stage": "dev"})


def test_background_work_stays_low_whatever_else_it_says() -> None:
    urgent = {"stage": "fix", "blocking": True, "retries": 5}
    assert assign({**urgent, "background": True}) == TaskPriority.LOW


def test_an_explicit_priority_wins_by_value_or_name() -> None:
    assert assign({"stage": "fix", "blocking": True, "priority": 0}) == TaskPriority.LOW
    assert assign({"stage": "dev", "background": True, "priority": "critical"}) == 3
    with pytest.raises(ValueError, match="unknown priority"):
        assign({"priority": "urgent"})


def test_a_near_or_past_deadline_raises_priority_by_one() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    later = datetime.now(UTC) + timedelta(days=2)
    assert assign({"stage": "dev", "deadline": soon}) == TaskPriority.HIGH
    assert assign({"stage": "dev", "deadline": soon.isoformat()}) == TaskPriority.HIGH
    assert assign({"stage": "dev", "deadline": later}) == TaskPriority.NORMAL
    past = datetime.now() - timedelta(hours=1)  # naive: taken as UTC
    assert assign({"stage": "dev", "deadline": past}) == TaskPriority.HIGH


def test_retries_so_far_raise_priority_after_the_configured_count() -> None:
    assert assign({"stage": "dev", "retries": 1}) == TaskPriority.NORMAL
    assert assign({"stage": "dev", "retries": 2}) == TaskPriority.HIGH


def test_the_result_is_clamped_to_critical() -> None:
    soon = datetime.now(UTC).isoformat()
    loaded = {"stage": "fix", "blocking": True, "deadline": soon, "retries": 9}
    assert assign(loaded) == TaskPriority.CRITICAL


def test_rules_are_configurable() -> None:
    rules = PriorityRules(stage_base={"dev": 2}, retry_boost_after=0, deadline_window_seconds=0)
    custom = PriorityAssigner(rules)
    assert custom.assign_priority({"stage": "dev", "retries": 7}) == TaskPriority.HIGH
    assert custom.assign_priority({"stage": "qa"}) == TaskPriority.NORMAL


def test_objects_with_attributes_work_like_mappings() -> None:
    class Subtask:
        stage = "fix"
        blocking = True

    assert assign(Subtask()) == TaskPriority.CRITICAL
