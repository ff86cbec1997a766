"""The handlers a worker serves: `agentic worker --app agents.app:registry`.

`registry` is built on first access from Settings() (the environment), which makes this
module an edge in the sense of the settings rule; code that has its settings already
calls build_registry(settings).
"""

from __future__ import annotations

from pipeline.stages import STAGES
from utils.config import Settings
from utils.redis_queue.handlers import HandlerRegistry, import_object

from .base import Agent

__all__ = ["build_registry", "registry"]

SLACK_SECONDS = 30.0  # per-type timeouts sit a little above the agents' own limits


def build_registry(settings: Settings) -> HandlerRegistry:
    """The agent of every row of the stage table (pipeline/stages.py), built on
    `settings`, each with a timeout a little longer than the longest run its own limits
    allow."""
    registry = HandlerRegistry(default_queue=settings.pipeline_queue_name())
    for row in STAGES:
        agent_class = import_object(row.agent)
        if not (isinstance(agent_class, type) and issubclass(agent_class, Agent)):
            raise TypeError(f"stage {row.stage}: {row.agent} is not an Agent class")
        agent = agent_class(settings.model, settings.pipeline)
        if agent.name != row.task_type:
            raise ValueError(f"stage {row.stage}: {row.agent} serves {agent.name!r}")
        registry.register(row.task_type, agent, timeout=agent.timeout_seconds() + SLACK_SECONDS)
    return registry


registry: HandlerRegistry  # built by __getattr__ on first access
_registry: HandlerRegistry | None = None


def __getattr__(name: str) -> HandlerRegistry:
    # `registry` is built lazily, so importing agents never reads the environment.
    global _registry
    if name == "registry":
        if _registry is None:
            _registry = build_registry(Settings())
        return _registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
