"""AgentRequest: a task's payload, checked once, with typed access to its fields.

The payload the pipeline sends (`{"subtask": subtask, **kwargs}` in the seed):

    {"subtask": {"id": "calc", "description": "...", "files": ["calc.py"], ...},
     "run_id": "r-1", "workspace": "/abs/run/workspace", "round": 0,
     "model": {"backend": "replay", "replay_file": "/abs/replay.json"},  # optional
     ...agent-specific keys: "timeout" (qa), "failure" (fix), "deploy_dir", "name",
     "version", "qa_evidence" (deploy)}

Anything malformed raises InvalidRequest, a PermanentFailure: the queue dead-letters the
task with the message, since running it again cannot help.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.redis_queue.handlers import PermanentFailure

from .models import OVERRIDABLE
from .workspace import safe_path

__all__ = ["AgentRequest", "InvalidRequest", "OutsideBaseDirectory", "confined"]

_MISSING: Any = object()


class InvalidRequest(PermanentFailure):
    """A payload an agent cannot run."""


class OutsideBaseDirectory(InvalidRequest):
    """A workspace or output path outside the configured base directory: refused, so an
    enqueue cannot aim the agents at /etc or a home directory."""


def confined(path: str | Path, base: Path, what: str) -> Path:
    """`path` resolved (symlinks followed), which must lie under `base` (resolved too, and
    not be it); OutsideBaseDirectory otherwise."""
    resolved, root = Path(path).resolve(), base.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise OutsideBaseDirectory(f"{what} {path} is outside the base directory {root}")
    return resolved


@dataclass(frozen=True, slots=True)
class AgentRequest:
    task_type: str
    subtask: dict[str, Any]
    workspace: Path
    run_id: str = ""
    round: int = 0
    model: dict[str, Any] | None = None  # per-run backend overrides
    payload: Mapping[str, Any] = field(default_factory=dict)  # all of it, for extra keys
    task_id: str = ""
    attempt: int = 1

    @classmethod
    def from_payload(
        cls,
        payload: Any,
        *,
        task_type: str,
        task_id: str = "",
        attempt: int = 1,
        workspace_must_exist: bool = True,
        workspace_root: Path | None = None,
    ) -> AgentRequest:
        if not isinstance(payload, Mapping):
            raise InvalidRequest(f"{task_type} payload must be a JSON object")
        subtask = payload.get("subtask")
        if not isinstance(subtask, dict):
            raise InvalidRequest(f"{task_type} payload needs a 'subtask' object")
        if not isinstance(subtask.get("id"), str) or not subtask["id"]:
            raise InvalidRequest(f"{task_type} payload: subtask needs a non-empty string 'id'")
        workspace = payload.get("workspace")
        if not isinstance(workspace, str) or not workspace:
            raise InvalidRequest(f"{task_type} payload needs a 'workspace' path")
        if not Path(workspace).is_absolute():
            raise InvalidRequest(f"workspace must be an absolute path, not {workspace!r}")
        if workspace_root is not None:
            confined(workspace, workspace_root, "workspace")
        if workspace_must_exist and not Path(workspace).is_dir():
            raise InvalidRequest(f"workspace {workspace} does not exist")
        request = cls(
            task_type=task_type,
            subtask=subtask,
            workspace=Path(workspace),
            run_id=_typed(payload, "run_id", str, ""),
            round=_typed(payload, "round", int, 0),
            model=_model_overrides(payload.get("model")),
            payload=payload,
            task_id=task_id,
            attempt=attempt,
        )
        request.files  # noqa: B018 - refuse unsafe subtask paths up front
        return request

    @property
    def subtask_id(self) -> str:
        return str(self.subtask["id"])

    @property
    def description(self) -> str:
        return str(self.subtask.get("description") or "")

    @property
    def files(self) -> list[str]:
        """The subtask's "files", normalised; unsafe paths raise UnsafePath."""
        files = self.subtask.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise InvalidRequest("subtask 'files' must be a list of relative paths")
        return [safe_path(self.workspace, f)[0] for f in files]

    def text(self, key: str, default: str = _MISSING) -> str:
        """payload[key] as a string; InvalidRequest when absent without a default."""
        return str(_typed(self.payload, key, str, default))

    def number(self, key: str, default: float) -> float:
        value = _typed(self.payload, key, (int, float), default)
        if value <= 0:
            raise InvalidRequest(f"payload '{key}' must be positive, not {value!r}")
        return float(value)

    def mapping(self, key: str) -> dict[str, Any]:
        return dict(_typed(self.payload, key, dict, _MISSING))


def _typed(payload: Mapping[str, Any], key: str, kind: Any, default: Any) -> Any:
    value = payload.get(key, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise InvalidRequest(f"payload needs '{key}'")
        return default
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise InvalidRequest(f"payload '{key}' must be {names}, not {type(value).__name__}")
    return value


def _model_overrides(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("payload 'model' must be an object of backend overrides")
    if "api_key" in value:
        raise InvalidRequest("payload 'model' may not carry an api key (keys come from the worker)")
    unknown = set(value) - OVERRIDABLE
    if unknown:
        raise InvalidRequest(
            f"payload 'model' may set only {sorted(OVERRIDABLE)}, not {sorted(unknown)}"
        )
    return dict(value)
