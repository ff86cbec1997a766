"""What a pipeline run is asked to build: a PipelineSpec, read from JSON.

    {"name": "calculator", "version": "0.1.0",
     "model": {"backend": "replay", "replay_file": "replay.json"},
     "max_fix_rounds": 3,
     "subtasks": [{"id": "calc", "description": "...", "files": ["calc.py", "test_calc.py"],
                   "critical_path": true}]}

Each subtask is one dev subtask; they run in parallel. Keys the pipeline does not know
are kept and reach the agents unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SpecError

__all__ = ["PipelineSpec", "SpecError", "SubtaskSpec", "load_spec"]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


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

    @field_validator("subtasks")
    @classmethod
    def _unique_ids(cls, subtasks: list[SubtaskSpec]) -> list[SubtaskSpec]:
        ids = [s.id for s in subtasks]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"subtask ids must be unique; repeated: {', '.join(repeated)}")
        return subtasks

    @field_validator("model")
    @classmethod
    def _no_secrets(cls, model: dict[str, Any] | None) -> dict[str, Any] | None:
        if model and any("key" in name.lower() for name in model):
            raise ValueError("a spec must not carry model keys; set AGENTIC_MODEL__API_KEY")
        return model


def load_spec(path: str | Path) -> PipelineSpec:
    """Read a spec file. A relative `model.replay_file` is taken relative to the spec."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        spec = PipelineSpec.model_validate(data)
    except OSError as exc:
        raise SpecError(f"cannot read pipeline spec {source}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise SpecError(f"{source} is not JSON: {exc}") from exc
    except ValidationError as exc:
        raise SpecError(f"{source} is not a valid pipeline spec:\n{exc}") from exc
    replay = (spec.model or {}).get("replay_file")
    if isinstance(replay, str) and not Path(replay).is_absolute():
        assert spec.model is not None
        spec.model["replay_file"] = str((source.parent / replay).resolve())
    return spec
