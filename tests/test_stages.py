"""The stage table (pipeline/stages.py) is the one place a stage is described: the
worker's handlers, the priority rule and the task types submitted all come from it."""

from __future__ import annotations

import inspect

from agents import Agent
from agents.app import SLACK_SECONDS, build_registry
from pipeline import EnhancedPipelineManager, PriorityAssigner, PriorityRules, Stage
from pipeline.executors import QueueExecutor, StageExecutor
from pipeline.local import LocalExecutor
from pipeline.stages import STAGES, stage_row, task_type_for
from utils.config import Settings
from utils.redis_queue.handlers import import_object


def test_every_stage_has_one_row_and_every_row_an_agent_serving_its_task_type() -> None:
    assert [row.stage for row in STAGES] == list(Stage)
    for row in STAGES:
        agent_class = import_object(row.agent)
        assert isinstance(agent_class, type) and issubclass(agent_class, Agent)
        assert agent_class.name == row.task_type
        assert stage_row(row.stage) is row and task_type_for(str(row.stage)) == row.task_type
    assert stage_row("review") is None and task_type_for("review") == "review"


def test_the_worker_registry_is_built_from_the_table() -> None:
    settings = Settings()
    registry = build_registry(settings)
    assert list(registry) == [row.task_type for row in STAGES]
    for row in STAGES:
        handler = registry[row.task_type]
        agent = handler.func
        assert isinstance(agent, Agent) and type(agent) is import_object(row.agent)
        assert handler.timeout == agent.timeout_seconds() + SLACK_SECONDS
    assert registry["qa"].timeout == settings.pipeline.qa_timeout_seconds + SLACK_SECONDS


def test_the_priority_rule_takes_each_stage_base_from_the_table() -> None:
    assert PriorityRules().stage_base == {str(r.stage): r.base_priority for r in STAGES}
    assigner = PriorityAssigner()
    for row in STAGES:
        assert assigner.assign_priority({"stage": str(row.stage)}) == row.base_priority


def test_both_executors_implement_the_stage_executor_interface() -> None:
    members = {
        name
        for name, _ in inspect.getmembers(StageExecutor, inspect.isfunction)
        if not name.startswith("_")
    }
    assert members == {
        "start", "stop", "submit", "apply_limits", "outcome", "cancel", "forget",
        "failed_attempt_tokens",
    }  # fmt: skip
    for executor in (LocalExecutor, QueueExecutor):
        for name in members:
            ours = getattr(executor, name)
            theirs = getattr(StageExecutor, name)
            assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs), name
            assert list(inspect.signature(ours).parameters) == list(
                inspect.signature(theirs).parameters
            ), name
    assert isinstance(EnhancedPipelineManager({"dev": lambda ctx: None}).executor, LocalExecutor)
