"""The dev, QA, fix and deploy agents on real workspaces: recorded model replies, real
unittest subprocesses, real artifacts; called as queue handlers through a TaskContext."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import agents
from agents import (
    AgentRequest,
    DeployAgent,
    DevAgent,
    FixAgent,
    InvalidRequest,
    NoFilesInReply,
    QAAgent,
    UnsafePath,
    build_registry,
    parse_files,
)
from agents.base import BudgetExceeded
from utils.config import ModelSettings, PipelineSettings, Settings
from utils.metrics import install_model_metrics
from utils.redis_queue.handlers import PermanentFailure, TaskContext, as_registry
from utils.redis_queue.models import RedisTask

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "calculator"
REPLAY = EXAMPLE / "replay.json"
NEVER_PASSES = EXAMPLE / "replay_never_passes.json"
SUBTASKS = {
    "calc": {
        "id": "calc",
        "stage": "dev",
        "description": "calc.py: add, sub, mul, div; div by zero raises ValueError",
        "files": ["calc.py", "test_calc.py"],
    },
    "textstats": {
        "id": "textstats",
        "stage": "dev",
        "description": "textstats.py: word_count, char_frequency, longest_word",
        "files": ["textstats.py", "test_textstats.py"],
    },
}
# gpt-4o-mini list prices, per 1,000 tokens
MODEL = ModelSettings(prompt_price_per_1k=0.00015, completion_price_per_1k=0.0006)
# Every test works under the temporary directory: the agents refuse paths outside these.
PIPELINE = PipelineSettings(
    qa_timeout_seconds=30,
    workspace_root=Path(tempfile.gettempdir()),
    deploy_dir=Path(tempfile.gettempdir()),
)


def context(task_type: str, payload: dict[str, Any], task_id: str = "t-1") -> TaskContext:
    task = RedisTask(task_id, task_type, payload, 1, "processing", attempts=1, lease_token=3)
    return TaskContext(task=task, worker_id="test-worker", queue_name="agents", lease_token=3)


def payload(
    workspace: Path, subtask: str | dict[str, Any], replay: Path = REPLAY, **extra: Any
) -> dict[str, Any]:
    return {
        "subtask": SUBTASKS[subtask] if isinstance(subtask, str) else subtask,
        "run_id": "r-test1",
        "workspace": str(workspace),
        "round": 0,
        "model": {"backend": "replay", "replay_file": str(replay)},
        **extra,
    }


def write(workspace: Path, files: dict[str, str]) -> Path:
    workspace.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (workspace / name).write_text(text)
    return workspace


def replay_with(tmp_path: Path, replies: dict[str, str]) -> Path:
    path = tmp_path / "replies.json"
    data = {k: {"content": v, "usage": {"prompt_tokens": 1}} for k, v in replies.items()}
    path.write_text(json.dumps({"model": "m", "replies": data}))
    return path


async def qa(workspace: Path, **extra: Any) -> dict[str, Any]:
    return await QAAgent(MODEL, PIPELINE)(context("qa", payload(workspace, "calc", **extra)))


GOOD = {
    "mod.py": "def double(x):\n    return 2 * x\n",
    "test_mod.py": (
        "import unittest\nfrom mod import double\n\n"
        "class T(unittest.TestCase):\n"
        "    def test_double(self):\n        self.assertEqual(double(2), 4)\n\n"
        "    def test_zero(self):\n        self.assertEqual(double(0), 0)\n"
    ),
}


# -- dev -------------------------------------------------------------------------------


async def test_dev_writes_the_replayed_files_into_a_new_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "runs" / "r-test1"
    result = await DevAgent(MODEL, PIPELINE)(context("dev", payload(ws, "calc")))

    assert result["agent"] == "dev" and result["ok"] is True
    assert result["files"] == ["calc.py", "test_calc.py"]
    assert "def div(" in (ws / "calc.py").read_text()
    assert "class CalculatorTest" in (ws / "test_calc.py").read_text()
    assert result["usage"] == {
        "prompt_tokens": 412,
        "completion_tokens": 389,
        "total_tokens": 801,
        "cost_usd": pytest.approx((412 * 0.00015 + 389 * 0.0006) / 1000),
        "model": "gpt-4o-mini-2024-07-18",
    }


@pytest.fixture
def model_metrics() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    install_model_metrics(registry)
    try:
        yield registry
    finally:
        install_model_metrics(None)


async def test_model_calls_count_tokens_and_cost_by_task_type(
    tmp_path: Path, model_metrics: CollectorRegistry
) -> None:
    agent = DevAgent(MODEL, PIPELINE)
    await agent(context("dev", payload(tmp_path, "calc")))
    await agent(context("dev", payload(tmp_path, "textstats")))

    def value(name: str) -> float | None:
        return model_metrics.get_sample_value(name, {"task_type": "dev"})

    assert value("agentic_model_prompt_tokens_total") == 412 + 418
    assert value("agentic_model_completion_tokens_total") == 389 + 452
    cost = ((412 + 418) * 0.00015 + (389 + 452) * 0.0006) / 1000
    assert value("agentic_model_cost_dollars_total") == pytest.approx(cost)


@pytest.mark.parametrize(
    "path", ["../evil.py", "/tmp/agentic-evil.py", "pkg/../../evil.py", "link/evil.py"]
)
async def test_dev_refuses_paths_that_leave_the_workspace(tmp_path: Path, path: str) -> None:
    ws = write(tmp_path / "ws", {})
    (tmp_path / "outside").mkdir()
    (ws / "link").symlink_to(tmp_path / "outside")
    reply = f"Here.\n\nFile: ok.py\n```python\nX = 1\n```\n\nFile: {path}\n```python\nX = 2\n```\n"
    replay = replay_with(tmp_path, {"dev:calc": reply})

    with pytest.raises(UnsafePath):
        await DevAgent(MODEL, PIPELINE)(context("dev", payload(ws, "calc", replay)))
    assert not (ws / "ok.py").exists()  # every path is checked before the first write
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "outside" / "evil.py").exists()
    assert not Path("/tmp/agentic-evil.py").exists()


async def test_a_reply_without_files_is_a_retryable_failure(tmp_path: Path) -> None:
    replay = replay_with(tmp_path, {"dev:calc": "I cannot help with that."})
    with pytest.raises(NoFilesInReply) as caught:
        await DevAgent(MODEL, PIPELINE)(context("dev", payload(tmp_path, "calc", replay)))
    assert not isinstance(caught.value, PermanentFailure)


async def test_an_attempt_that_fails_after_a_reply_reports_the_tokens_it_spent(
    tmp_path: Path,
) -> None:
    replay = replay_with(tmp_path, {"dev:calc": "I cannot help with that."})
    ctx = context("dev", payload(tmp_path, "calc", replay))
    with pytest.raises(NoFilesInReply):
        await DevAgent(MODEL, PIPELINE)(ctx)
    assert ctx.tokens_used == 1  # the recording's usage: what the provider billed


class TwoCalls(DevAgent):
    """Asks the model twice (a plan, then the code): the budget is checked before each."""

    async def run(self, request: AgentRequest) -> dict[str, Any]:
        messages = [{"role": "user", "content": request.description}]
        await self.ask(request, messages)
        await self.ask(request, messages)
        return self.result(ok=True, summary="two calls", usage=self.spent())


async def test_the_budget_is_checked_before_each_model_call(tmp_path: Path) -> None:
    replay = replay_with(tmp_path, {"dev:calc": "plan"})  # each reply: 1 prompt token
    agent = TwoCalls(MODEL, PIPELINE)
    roomy = context("dev", payload(tmp_path, "calc", replay, budget={"max_tokens": 5}))
    assert (await agent(roomy))["usage"]["total_tokens"] == 2

    tight = context("dev", payload(tmp_path, "calc", replay, budget={"max_tokens": 1}))
    with pytest.raises(BudgetExceeded, match="1 tokens used, 1 allowed"):
        await agent(tight)
    assert tight.tokens_used == 1  # the one call made is reported, the second never sent

    late = context("dev", payload(tmp_path, "calc", replay, budget={"deadline": time.time() - 1}))
    with pytest.raises(BudgetExceeded, match="no time left"):
        await agent(late)
    assert late.tokens_used is None  # refused before the first call


async def test_a_missing_recording_dead_letters_naming_key_and_file(tmp_path: Path) -> None:
    subtask = {"id": "nope", "description": "x"}
    with pytest.raises(PermanentFailure, match=r"ReplayMissing: .*'dev:nope'.*replay\.json"):
        await DevAgent(MODEL, PIPELINE)(context("dev", payload(tmp_path, subtask)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("workspace"), "needs a 'workspace'"),
        (lambda p: p.update(workspace="relative/ws"), "absolute"),
        (lambda p: p.pop("subtask"), "needs a 'subtask'"),
        (lambda p: p.update(subtask={"description": "no id"}), "non-empty string 'id'"),
        (lambda p: p.update(subtask={"id": "x", "files": ["../x.py"]}), "leaves the workspace"),
        (lambda p: p.update(subtask={"id": "x", "files": "calc.py"}), "list of relative"),
        (lambda p: p.update(model={"api_key": "sk-1"}), "may not carry an api key"),
        (lambda p: p.update(model={"base_url": "http://x"}), "may set only"),
        (lambda p: p.update(round="first"), "'round' must be int"),
    ],
)
async def test_malformed_payloads_dead_letter_with_the_reason(
    tmp_path: Path, change: Any, message: str
) -> None:
    body = payload(tmp_path, "calc")
    change(body)
    with pytest.raises(PermanentFailure, match=message):
        await DevAgent(MODEL, PIPELINE)(context("dev", body))


async def test_agents_other_than_dev_need_an_existing_workspace(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        await qa(tmp_path / "missing")


# -- the reply format ----------------------------------------------------------------------


def test_reply_format_accepts_decorated_file_lines_and_long_fences() -> None:
    reply = (
        "Two files.\n\n### File: `pkg/a.py`\n```python\nA = 1\n```\n\n"
        "**File: README.md**\n````markdown\n```sh\nmake\n```\n````\n"
    )
    assert parse_files(reply) == {"pkg/a.py": "A = 1\n", "README.md": "```sh\nmake\n```\n"}


def test_reply_format_accepts_a_json_files_object() -> None:
    assert parse_files('{"files": {"a.py": "A = 1\\n"}}') == {"a.py": "A = 1\n"}
    fenced = 'Here:\n```json\n{"files": {"b.py": "B = 2\\n"}}\n```\n'
    assert parse_files(fenced) == {"b.py": "B = 2\n"}
    assert parse_files("```python\nprint('no file line')\n```") == {}


# -- qa ------------------------------------------------------------------------------------


async def test_qa_passes_good_code_and_leaves_no_bytecode(tmp_path: Path) -> None:
    ws = write(tmp_path / "ws", GOOD)
    result = await qa(ws)

    assert result["ok"] is result["passed"] is True
    assert (result["tests_run"], result["failures"], result["returncode"]) == (2, 0, 0)
    assert result["summary"] == "2 tests passed"
    assert "test_double" in result["output"] and result["duration_seconds"] > 0
    assert result["usage"]["total_tokens"] == 0 and result["agent"] == "qa"
    assert not list(ws.rglob("__pycache__"))


async def test_qa_fails_a_failing_test_with_its_output(tmp_path: Path) -> None:
    ws = write(tmp_path / "ws", {**GOOD, "mod.py": "def double(x):\n    return x + x + 1\n"})
    result = await qa(ws)

    assert result["ok"] is result["passed"] is False
    assert (result["tests_run"], result["failures"]) == (2, 2)
    assert result["returncode"] != 0 and result["stage"] == "tests"
    assert "FAIL: test_double" in result["output"] and "AssertionError" in result["output"]


async def test_qa_fails_on_a_syntax_error(tmp_path: Path) -> None:
    ws = write(tmp_path / "ws", {**GOOD, "mod.py": "def double(x)\n    return 2 * x\n"})
    result = await qa(ws)

    assert result["passed"] is False and result["stage"] == "compile"
    assert "SyntaxError" in result["output"] and "mod.py" in result["output"]
    assert result["tests_run"] == 0


async def test_qa_fails_when_there_are_no_tests(tmp_path: Path) -> None:
    result = await qa(write(tmp_path / "ws", {"mod.py": GOOD["mod.py"]}))
    assert result["passed"] is False and result["summary"] == "no tests found"


async def test_qa_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    hanging = (
        "import subprocess, sys, time, unittest\n\n"
        "class T(unittest.TestCase):\n"
        "    def test_hangs(self):\n"
        "        child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "        open('child.pid', 'w').write(str(child.pid))\n"
        "        time.sleep(600)\n"
    )
    ws = write(tmp_path / "ws", {"test_hang.py": hanging})
    # Unsandboxed, so the pid written is the host's (tests/test_sandbox.py: in namespaces).
    unsandboxed = PIPELINE.model_copy(update={"sandbox": "none"})
    ctx = context("qa", payload(ws, "calc", timeout=1.5))
    result = await QAAgent(MODEL, unsandboxed)(ctx)

    assert result["passed"] is False and result["timed_out"] is True
    assert "timed out after 1.5 s" in result["summary"]
    assert result["duration_seconds"] < 10
    # The grandchild shared the output pipe, which QA read to its end: it has exited.
    pid = int((ws / "child.pid").read_text())
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "\nState:\tZ" in status.read_text()


async def test_qa_does_not_pass_the_workers_secrets_to_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTIC_MODEL__API_KEY", "sk-worker-secret")
    probe = (
        "import os, unittest\n\nclass T(unittest.TestCase):\n"
        "    def test_env(self):\n"
        "        self.assertNotIn('AGENTIC_MODEL__API_KEY', os.environ)\n"
    )
    result = await qa(write(tmp_path / "ws", {"test_env.py": probe}))
    assert result["passed"] is True


# -- fix and the whole flow ----------------------------------------------------------------


async def run_dev(ws: Path, replay: Path = REPLAY) -> None:
    agent = DevAgent(MODEL, PIPELINE)
    await asyncio.gather(
        agent(context("dev", payload(ws, "calc", replay), "dev-calc")),
        agent(context("dev", payload(ws, "textstats", replay), "dev-textstats")),
    )


async def test_fix_applies_the_recorded_fix_and_qa_then_passes(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    await run_dev(ws)
    failed = await qa(ws)
    assert failed["passed"] is False and failed["failures"] == 1
    assert "test_div_by_zero_raises_value_error" in failed["output"]

    fix_subtask = {"id": "fix-1", "stage": "fix", "description": "make the tests pass"}
    fixed = await FixAgent(MODEL, PIPELINE)(
        context("fix", payload(ws, fix_subtask, failure=failed["output"]))
    )
    assert fixed["files"] == ["calc.py"] and fixed["usage"]["prompt_tokens"] == 1534
    assert "raise ValueError" in (ws / "calc.py").read_text()

    passed = await qa(ws)
    assert passed["passed"] is True and passed["tests_run"] == 8


async def test_fix_needs_the_failure(tmp_path: Path) -> None:
    ws = write(tmp_path / "ws", GOOD)
    with pytest.raises(InvalidRequest, match="needs 'failure'"):
        await FixAgent(MODEL, PIPELINE)(context("fix", payload(ws, {"id": "fix-1"})))


async def test_never_passing_fixes_leave_qa_failing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    await run_dev(ws, NEVER_PASSES)
    result = await qa(ws)
    for round_ in (1, 2, 3):
        assert result["passed"] is False
        await FixAgent(MODEL, PIPELINE)(
            context("fix", payload(ws, {"id": f"fix-{round_}"}, NEVER_PASSES, failure=result))
        )
        result = await qa(ws)
    assert result["passed"] is False and result["failures"] >= 1


async def test_dev_qa_fix_qa_deploy_through_the_worker_registry(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, model=MODEL, pipeline=PIPELINE)  # type: ignore[call-arg]
    handlers = build_registry(settings)
    assert set(handlers) == {"dev", "qa", "fix", "deploy"}
    assert all(spec.timeout and spec.is_async for spec in handlers.values())
    ws = tmp_path / "runs" / "r-test1"

    async def run(task_type: str, body: dict[str, Any], task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await handlers[task_type].func(context(task_type, body, task_id))
        json.dumps(result)  # results are JSON
        return result

    devs = await asyncio.gather(
        run("dev", payload(ws, "calc"), "r-test1:dev:calc"),
        run("dev", payload(ws, "textstats"), "r-test1:dev:textstats"),
    )
    assert all(d["ok"] for d in devs)
    first = await run("qa", payload(ws, {"id": "qa-0"}), "r-test1:qa:0")
    assert first["ok"] is False
    fix = {"id": "fix-1", "stage": "fix"}
    await run("fix", payload(ws, fix, failure=first["output"], round=1), "r-test1:fix:1")
    second = await run("qa", payload(ws, {"id": "qa-1"}, round=1), "r-test1:qa:1")
    assert second["ok"] is True

    deploy_dir = tmp_path / "deploy"
    extra = {"deploy_dir": str(deploy_dir), "name": "calculator", "version": "0.1.0"}
    body = payload(ws, {"id": "deploy"}, qa_evidence=second, **extra)
    deployed = await run("deploy", body, "r-test1:deploy")
    assert deployed["ok"] is True
    assert Path(deployed["artifact"]) == deploy_dir / "calculator-0.1.0+r-test1.tar.gz"
    manifest = json.loads(Path(deployed["manifest"]).read_text())
    assert manifest["qa_evidence"]["tests_run"] == 8


# -- deploy --------------------------------------------------------------------------------


def deploy_payload(ws: Path, deploy_dir: Path, evidence: Any) -> dict[str, Any]:
    return payload(
        ws,
        {"id": "deploy"},
        deploy_dir=str(deploy_dir),
        name="calculator",
        version="0.1.0",
        qa_evidence=evidence,
    )


async def test_deploy_builds_a_reproducible_artifact_and_manifest(tmp_path: Path) -> None:
    ws = write(tmp_path / "ws", GOOD)
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0junk")
    (ws / ".git").mkdir()
    (ws / ".git" / "HEAD").write_text("ref\n")
    evidence = {"passed": True, "tests_run": 2}
    agent = DeployAgent(MODEL, PIPELINE)

    result = await agent(context("deploy", deploy_payload(ws, tmp_path / "d1", evidence)))
    again = await agent(context("deploy", deploy_payload(ws, tmp_path / "d2", evidence)))

    artifact = Path(result["artifact"])
    assert artifact.name == "calculator-0.1.0+r-test1.tar.gz" and result["version"] == "0.1.0"
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert result["sha256"] == digest == again["sha256"]  # same files, same bytes
    with tarfile.open(artifact) as tar:
        assert tar.getnames() == ["calculator-0.1.0/mod.py", "calculator-0.1.0/test_mod.py"]
        assert {m.mtime for m in tar.getmembers()} == {315532800}
        member = tar.extractfile("calculator-0.1.0/mod.py")
        assert member is not None and member.read() == GOOD["mod.py"].encode()
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert Path(result["manifest"]).name == "calculator-0.1.0+r-test1.manifest.json"
    assert manifest["sha256"] == digest and manifest["artifact"] == artifact.name
    assert (manifest["name"], manifest["version"], manifest["run_id"]) == (
        "calculator", "0.1.0", "r-test1",
    )  # fmt: skip
    assert manifest["qa_evidence"] == evidence and manifest["created"]
    assert manifest["files"] == [
        {
            "path": name,
            "size": len(GOOD[name]),
            "sha256": hashlib.sha256(GOOD[name].encode()).hexdigest(),
        }
        for name in ("mod.py", "test_mod.py")
    ]


@pytest.mark.parametrize(
    "evidence", [{"passed": False, "tests_run": 2}, {"tests_run": 2}, None, {"passed": "yes"}]
)
async def test_deploy_refuses_without_passing_qa_evidence(tmp_path: Path, evidence: Any) -> None:
    ws = write(tmp_path / "ws", GOOD)
    body = deploy_payload(ws, tmp_path / "deploy", evidence)
    with pytest.raises(PermanentFailure, match="qa_evidence"):
        await DeployAgent(MODEL, PIPELINE)(context("deploy", body))
    assert not (tmp_path / "deploy").exists()


async def test_deploy_refuses_unsafe_names(tmp_path: Path) -> None:
    ws = write(tmp_path / "ws", GOOD)
    body = {**deploy_payload(ws, tmp_path / "d", {"passed": True}), "version": "../1"}
    with pytest.raises(InvalidRequest, match="version"):
        await DeployAgent(MODEL, PIPELINE)(context("deploy", body))


# -- the app -------------------------------------------------------------------------------


def test_the_app_module_builds_its_registry_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    app = importlib.import_module("agents.app")
    monkeypatch.setattr(app, "_registry", None)
    monkeypatch.setenv("AGENTIC_PIPELINE__QA_TIMEOUT_SECONDS", "12")
    registry = as_registry(app)  # what `agentic worker --app agents.app:registry` does
    assert set(registry) == {"dev", "qa", "fix", "deploy"}
    assert registry["qa"].timeout == 12 + 30
    assert app.registry is registry


def test_the_public_api_is_pinned() -> None:
    assert agents.__all__ == sorted(agents.__all__)
    assert {"Agent", "AgentRequest", "DevAgent", "QAAgent", "FixAgent", "DeployAgent"} <= set(
        agents.__all__
    )
    assert {"ModelBackend", "ModelReply", "OpenAIChatBackend", "ReplayBackend"} <= set(
        agents.__all__
    )
    assert {"build_backend", "build_registry", "ModelError", "ReplayMissing"} <= set(agents.__all__)
    public = {name for name in dir(agents) if not name.startswith("_") and name[0].isupper()}
    assert public == {name for name in agents.__all__ if name[0].isupper()}


async def test_qa_code_gets_a_private_home_and_the_worker_is_not_dumpable(
    tmp_path: Path,
) -> None:
    probe = (
        "import os, unittest\n\nclass T(unittest.TestCase):\n"
        "    def test_home(self):\n"
        f"        self.assertNotEqual(os.environ['HOME'], {str(Path.home())!r})\n"
        "        self.assertEqual(os.listdir(os.environ['HOME']), [])\n"
    )
    # in a process of its own: the flag is for the life of the process that runs QA
    script = (
        "import asyncio, ctypes, sys\n"
        "from pathlib import Path\n"
        "from tests.test_agents import qa\n"
        "result = asyncio.run(qa(Path(sys.argv[1])))\n"
        "dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE\n"
        "print(result['output'][-300:], result['passed'], dumpable)\n"
    )
    ws = write(tmp_path / "ws", {"test_home.py": probe})
    done = subprocess.run(
        [sys.executable, "-c", script, str(ws)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.split()[-2:] == ["True", "0"], done.stdout + done.stderr
