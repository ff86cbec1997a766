"""The handlers a worker serves: `agentic worker --app agents.app:registry`.

`registry` is built on first access from Settings() (the environment), which makes this
module an edge in the sense of the settings rule; code that has its settings already
calls build_registry(settings).
"""

from __future__ import annotations

from utils.config import Settings
from utils.redis_queue.handlers import HandlerRegistry

from .deploy import DeployAgent
from .dev import DevAgent
from .fix import FixAgent
from .qa import QAAgent

__all__ = ["build_registry", "registry"]

DEPLOY_TIMEOUT_SECONDS = 300.0
SLACK_SECONDS = 30.0  # per-type timeouts sit a little above the agents' own limits


def build_registry(settings: Settings) -> HandlerRegistry:
    """dev, qa, fix and deploy agents built on `settings`, each with a timeout a little
    longer than the longest run its own limits allow."""
    model, pipeline = settings.model, settings.pipeline

    # The worst model call: every attempt times out, with backoff (capped at 30 s) between.
    model_budget = (model.max_retries + 1) * model.timeout_seconds + model.max_retries * 30.0
    registry = HandlerRegistry()
    for agent, timeout in (
        (DevAgent(model, pipeline), model_budget),
        (QAAgent(model, pipeline), pipeline.qa_timeout_seconds),
        (FixAgent(model, pipeline), model_budget),
        (DeployAgent(model, pipeline), DEPLOY_TIMEOUT_SECONDS),
    ):
        registry.register(agent.name, agent, timeout=timeout + SLACK_SECONDS)
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
