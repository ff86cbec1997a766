"""The deploy agent: packs a workspace that passed QA into a versioned artifact.

<deploy_dir>/<name>-<version>+<run_id>.tar.gz holds the workspace's files under
<name>-<version>/ (no caches, bytecode, dot-directories or symlinks). It is
reproducible: sorted entries, fixed mtimes, owners and modes, gzip without a timestamp,
so the same files give the same bytes and the same sha256 (a retried deploy rewrites
an identical file). Next to it, <name>-<version>+<run_id>.manifest.json records the
files with their sizes and sha256, the artifact's sha256, and the QA evidence.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .base import Agent
from .request import AgentRequest, InvalidRequest, confined
from .workspace import atomic_write, iter_files

__all__ = ["DeployAgent"]

FIXED_MTIME = 315532800  # 1980-01-01, the earliest time a zip (wheel) can hold too
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


DEPLOY_TIMEOUT_SECONDS = 300.0  # packing a workspace: no model call


class DeployAgent(Agent):
    """Payload adds "deploy_dir" (default PipelineSettings.deploy_dir), "name",
    "version" and "qa_evidence" (the passing QA result). Result adds artifact, manifest
    (absolute paths), sha256, size, version and files (how many)."""

    name = "deploy"

    def timeout_seconds(self) -> float:
        return DEPLOY_TIMEOUT_SECONDS

    async def run(self, request: AgentRequest) -> dict[str, Any]:
        evidence = request.mapping("qa_evidence")
        if evidence.get("passed") is not True:
            raise InvalidRequest("refusing to deploy: qa_evidence does not show a passing QA")
        name = _checked(request.text("name"), "name")
        version = _checked(request.text("version"), "version")
        run_id = _checked(request.run_id, "run_id")
        base = self.pipeline_settings.deploy_dir
        deploy_dir = await asyncio.to_thread(
            _deploy_dir, Path(request.text("deploy_dir", str(base))), base
        )
        stem = f"{name}-{version}+{run_id}"
        manifest, artifact_path, manifest_path = await asyncio.to_thread(
            build_artifact, request.workspace, deploy_dir, stem, f"{name}-{version}",
            {"name": name, "version": version, "run_id": run_id, "qa_evidence": evidence},
        )  # fmt: skip
        return self.result(
            ok=True,
            summary=f"packed {len(manifest['files'])} file(s) into {manifest['artifact']}",
            artifact=str(artifact_path),
            manifest=str(manifest_path),
            sha256=manifest["sha256"],
            size=manifest["size"],
            version=version,
            files=len(manifest["files"]),
        )


def _deploy_dir(wanted: Path, base: Path) -> Path:
    """The base itself or a directory in it; OutsideBaseDirectory otherwise."""
    if wanted.resolve() == base.resolve():
        return wanted
    return confined(wanted, base, "deploy_dir")


def _checked(value: str, what: str) -> str:
    if not _SAFE_NAME.match(value) or ".." in value:
        raise InvalidRequest(f"deploy {what} {value!r} must match {_SAFE_NAME.pattern}")
    return value


def build_artifact(
    workspace: Path, deploy_dir: Path, stem: str, prefix: str, info: dict[str, Any]
) -> tuple[dict[str, Any], Path, Path]:
    """Write <stem>.tar.gz and <stem>.manifest.json into deploy_dir (relative: to the
    current directory); returns the manifest and both absolute paths."""
    files = []
    data = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=data, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relative in iter_files(workspace):
            path = workspace / relative
            content = path.read_bytes()
            entry = tarfile.TarInfo(f"{prefix}/{relative}")
            entry.size = len(content)
            entry.mtime = FIXED_MTIME
            entry.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            tar.addfile(entry, io.BytesIO(content))
            digest = hashlib.sha256(content).hexdigest()
            files.append({"path": relative, "size": len(content), "sha256": digest})
    artifact = data.getvalue()
    manifest = {
        **info,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact": f"{stem}.tar.gz",
        "sha256": hashlib.sha256(artifact).hexdigest(),
        "size": len(artifact),
        "files": files,
    }
    deploy_dir = deploy_dir.resolve()
    deploy_dir.mkdir(parents=True, exist_ok=True)
    artifact_path = deploy_dir / f"{stem}.tar.gz"
    manifest_path = deploy_dir / f"{stem}.manifest.json"
    atomic_write(artifact_path, artifact)
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write(manifest_path, text.encode())
    return manifest, artifact_path, manifest_path
