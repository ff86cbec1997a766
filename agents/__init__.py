"""The dev, QA, fix and deploy agents, and the handler registry a worker serves.

    agentic worker --app agents.app:registry

Each agent is a queue handler (see agents/base.py for writing your own); model backends
live in agents.models, and the reply format the dev and fix agents read in
agents/replies.py.
"""

from __future__ import annotations

from .app import build_registry
from .base import Agent, BackendFactory
from .deploy import DeployAgent
from .dev import DevAgent, NoFilesInReply
from .fix import FixAgent
from .models import (
    ModelAuthError,
    ModelBackend,
    ModelError,
    ModelRateLimited,
    ModelRejected,
    ModelReply,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
    ModelUsage,
    OpenAIChatBackend,
    ReplayBackend,
    ReplayError,
    ReplayMissing,
    build_backend,
)
from .qa import QAAgent
from .replies import parse_files
from .request import AgentRequest, InvalidRequest, OutsideBaseDirectory
from .sandbox import SandboxUnavailable
from .workspace import UnsafePath

__all__ = [
    "Agent",
    "AgentRequest",
    "BackendFactory",
    "DeployAgent",
    "DevAgent",
    "FixAgent",
    "InvalidRequest",
    "ModelAuthError",
    "ModelBackend",
    "ModelError",
    "ModelRateLimited",
    "ModelRejected",
    "ModelReply",
    "ModelResponseError",
    "ModelTimeout",
    "ModelUnavailable",
    "ModelUsage",
    "NoFilesInReply",
    "OpenAIChatBackend",
    "OutsideBaseDirectory",
    "QAAgent",
    "ReplayBackend",
    "ReplayError",
    "ReplayMissing",
    "SandboxUnavailable",
    "UnsafePath",
    "build_backend",
    "build_registry",
    "parse_files",
]
