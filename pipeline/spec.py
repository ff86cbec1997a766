"""What a pipeline run is asked to build: a PipelineSpec, read from JSON.

    {"name": "calculator", "version": "0.1.0",
     "model": {"backend": "replay", "replay_file": "replay.json"},
     "max_fix_rounds": 3,
     "subtasks": [{"id": "calc", "description": "...", "files": ["calc.py", "test_calc.py"],
                   "critical_path": true}]}

Each subtask is one dev subtask. A subtask may list `depends_on: [ids]`: it starts once
those passed their dev stage, and independent ones run in parallel (pipeline/dag.py; a
cycle, an unknown id or a self-dependency is a SpecError naming them). Keys the pipeline
does not know are kept and reach the agents unchanged.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .dag import graph_problems
from .errors import SpecError

__all__ = [
    "ApprovalSpec",
    "BudgetSpec",
    "ModelLimits",
    "PipelineSpec",
    "SpecError",
    "SubtaskSpec",
    "file_problems",
    "load_spec",
    "parse_spec",
    "secret_like",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "credential",
                 "credentials", "auth", "authorization"}  # fmt: skip


def secret_like(name: str) -> bool:
    """A field name that says it holds a secret: api_key, auth-token, PASSWORD, ..."""
    words = re.split(r"[^a-z0-9]+", name.lower())
    return any(word in _SECRET_WORDS for word in words)


class BudgetSpec(BaseModel):
    """What a run (or one subtask) may spend: tokens, USD and wall seconds (each optional);
    past any of them the run ends failed with the reason and its queued subtasks are
    cancelled. Tokens of failed attempts count (Usage.failed_attempt_tokens)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(None, ge=1)
    max_cost_usd: float | None = Field(None, gt=0)
    max_seconds: float | None = Field(None, gt=0)


class SubtaskSpec(BaseModel):
    """One dev subtask and the flags PriorityAssigner reads."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(pattern=_ID)
    description: str = Field(min_length=1)
    files: list[str] = Field(default_factory=list)
    critical_path: bool = False  # on the critical path to a release
    blocking: bool = False  # other work waits on it
    background: bool = False  # nice to have: always LOW unless overridden
    deadline: datetime | None = None
    priority: int | None = Field(None, ge=0, le=3, description="Explicit override.")
    depends_on: list[str] = Field(
        default_factory=list, description="Ids of the dev subtasks that must pass first."
    )
    budget: BudgetSpec | None = Field(None, description="What this dev subtask may spend.")

    @model_validator(mode="after")
    def _no_secret_fields(self) -> SubtaskSpec:
        # extra fields travel to the workers in the payload and stay in the run's state
        named = sorted(name for name in self.model_extra or {} if secret_like(name))
        if named:
            raise ValueError(
                f"a subtask must not carry secrets (fields {', '.join(named)}); "
                "give agents their keys through the workers' environment"
            )
        return self


class ModelLimits(BaseModel):
    """What the model provider allows, enforced fleet-wide on the stages whose agents
    call the model (dev, fix) through the queue limit `key`."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-:@/]{0,127}$")
    rpm: float | None = Field(None, gt=0, description="Requests (subtasks) per minute.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute.")
    concurrency: int | None = Field(None, ge=1, description="Subtasks calling it at once.")
    tokens_per_call: int = Field(
        2000, ge=0, description="Tokens reserved per subtask (reconciled with its usage)."
    )

    @model_validator(mode="after")
    def _something_to_limit(self) -> ModelLimits:
        if self.rpm is None and self.tpm is None and self.concurrency is None:
            raise ValueError("model_limits needs rpm, tpm or concurrency")
        return self


class ApprovalSpec(BaseModel):
    """A human approval before `stage` (default deploy): the run waits, durably, for
    `agentic pipeline approve|reject RUN_ID` (or the API) up to `timeout_seconds` (default:
    the settings' approval_timeout_seconds), then fails or goes on as `on_timeout` says."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["qa", "fix", "deploy"] = "deploy"
    timeout_seconds: float | None = Field(None, gt=0, le=30 * 86400)
    on_timeout: Literal["fail", "approve"] = "fail"


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_ID)
    version: str = Field("0.1.0", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
    description: str = ""
    subtasks: list[SubtaskSpec] = Field(min_length=1)
    max_fix_rounds: int | None = Field(None, ge=0, description="Default: the settings'.")
    model: dict[str, Any] | None = Field(
        None, description="Model backend override sent with every subtask (never a key)."
    )
    model_limits: ModelLimits | None = Field(
        None, description="The provider's limits, applied fleet-wide to dev and fix."
    )
    approval: ApprovalSpec | None = Field(
        None, description="A human approval before a stage (deploy by default)."
    )
    budget: BudgetSpec | None = Field(None, description="What the run may spend.")

    @field_validator("subtasks")
    @classmethod
    def _unique_ids(cls, subtasks: list[SubtaskSpec]) -> list[SubtaskSpec]:
        ids = [s.id for s in subtasks]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"subtask ids must be unique; repeated: {', '.join(repeated)}")
        return subtasks

    @model_validator(mode="after")
    def _a_dependency_graph(self) -> PipelineSpec:
        problems = graph_problems(self.edges())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def edges(self) -> dict[str, list[str]]:
        """Each subtask id and the ids it depends on."""
        return {s.id: list(s.depends_on) for s in self.subtasks}

    @field_validator("model")
    @classmethod
    def _no_secrets(cls, model: dict[str, Any] | None) -> dict[str, Any] | None:
        if model and any("key" in name.lower() for name in model):
            raise ValueError("a spec must not carry model keys; set AGENTIC_MODEL__API_KEY")
        return model


def parse_spec(data: Any, source: str = "the spec") -> PipelineSpec:
    """A PipelineSpec from decoded JSON, or SpecError naming each problem by its place.
    The values given are never quoted: a refused spec may carry a key."""
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False, include_context=False)
    # raised outside the handler, so not even __context__ holds the refused values
    problems = "\n".join(
        f"  {'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
        for error in errors
    )
    raise SpecError(f"{source} is not a valid pipeline spec:\n{problems}")


def load_spec(path: str | Path) -> PipelineSpec:
    """Read a spec file. A relative `model.replay_file` is taken relative to the spec."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"cannot read pipeline spec {source}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{source} is not JSON: {exc}") from None
    spec = parse_spec(data, str(source))
    replay = (spec.model or {}).get("replay_file")
    if isinstance(replay, str) and not Path(replay).is_absolute():
        assert spec.model is not None
        spec.model["replay_file"] = str((source.parent / replay).resolve())
    return spec


def file_problems(
    spec: PipelineSpec, default_backend: str = "replay", default_replay: Path | None = None
) -> list[str]:
    """What `agentic pipeline validate` checks beyond the spec itself: when the backend
    (the spec's, else the settings') replays, its replay file (the spec's, else the
    settings') exists and is a JSON object. Run on a loaded spec (load_spec resolves
    relative paths)."""
    model = spec.model or {}
    if model.get("backend", default_backend) != "replay":
        return []
    replay = model.get("replay_file") or default_replay
    if replay is None:
        return ["the replay backend needs a replay file: model.replay_file in the spec, "
                "or AGENTIC_MODEL__REPLAY_FILE"]  # fmt: skip
    path = Path(str(replay))
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [f"replay file {path}: {exc.strerror}"]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [f"replay file {path} is not JSON: {exc}"]
    if not isinstance(recorded, dict):
        return [f"replay file {path} is not a JSON object"]
    return []
