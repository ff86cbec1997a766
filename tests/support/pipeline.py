"""What the pipeline tests share: the shipped example's spec with its replay files
variants, and settings that keep every run's files in the test's tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from utils.config import Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "calculator"
BUGGY_DIV = 'return float("inf")'
FIXED_DIV = 'raise ValueError("division by zero") from None'


def spec(replay: Path | str = "replay.json", **overrides: Any) -> dict[str, Any]:
    """The example's spec, with its model replaying `replay` (a path, or a file name
    in the example's directory)."""
    data = json.loads((EXAMPLE / "spec.json").read_text())
    replay_path = Path(replay) if Path(replay).is_absolute() else EXAMPLE / replay
    data["model"] = {"backend": "replay", "replay_file": str(replay_path)}
    data.update(overrides)
    return data


def passing_replay(tmp_path: Path) -> Path:
    """The example's recording with the dev reply's bug already fixed: QA passes first time."""
    data = json.loads((EXAMPLE / "replay.json").read_text())
    reply = data["replies"]["dev:calc"]
    assert BUGGY_DIV in reply["content"]
    reply["content"] = reply["content"].replace(BUGGY_DIV, FIXED_DIV)
    path = tmp_path / "replay_passes.json"
    path.write_text(json.dumps(data))
    return path


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    pipeline = {
        "workspace_root": str(tmp_path / "workspaces"),
        "deploy_dir": str(tmp_path / "deploy"),
        "qa_timeout_seconds": 30,
        "subtask_timeout_seconds": 40,
        **overrides.pop("pipeline", {}),
    }
    return Settings(pipeline=pipeline, **overrides)
