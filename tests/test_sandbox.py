"""The sandbox QA runs generated code in (agents/sandbox.py), in each mode this host has.

Every hostile test file reaches the workspace as a model would deliver it (a dev reply from
the replay backend, written by the dev agent); QA then runs it. The host must see nothing
of it (no connection accepted, no file written or read, Redis unchanged, no process left)
and the QA result names the limit that stopped it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from agents import DeployAgent, DevAgent, OutsideBaseDirectory, QAAgent, SandboxUnavailable
from agents.sandbox import UID_BASE, Sandbox, _bwrap_prefix, available_mode
from utils.config import ModelSettings, PipelineSettings
from utils.redis_queue.handlers import TaskContext
from utils.redis_queue.models import RedisTask

pytestmark = pytest.mark.timeout(120)

MODES = [
    pytest.param(
        "bubblewrap",
        marks=pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap not installed"),
    ),
    pytest.param(
        "unshare",
        marks=pytest.mark.skipif(not shutil.which("unshare"), reason="util-linux unshare missing"),
    ),
]
CPU_SECONDS = 2


def context(task_type: str, payload: dict[str, Any]) -> TaskContext:
    task = RedisTask("t-1", task_type, payload, 1, "processing", attempts=1, lease_token=3)
    return TaskContext(task=task, worker_id="test-worker", queue_name="agents", lease_token=3)


def settings(tmp_path: Path, mode: str, **extra: Any) -> PipelineSettings:
    return PipelineSettings(
        workspace_root=tmp_path / "workspaces",
        deploy_dir=tmp_path / "deploy",
        qa_timeout_seconds=60,
        sandbox=mode,  # type: ignore[arg-type]
        sandbox_cpu_seconds=CPU_SECONDS,
        **extra,
    )


def dev_reply(test_body: str) -> str:
    """A model's reply holding one test file whose test runs `test_body`."""
    body = "\n".join("        " + line for line in test_body.strip().splitlines())
    code = (
        "import os, socket, subprocess, sys, time, unittest\n\n"
        "class Hostile(unittest.TestCase):\n"
        "    def test_it(self):\n" + body + "\n"
    )
    return f"The tests.\n\nFile: test_hostile.py\n```python\n{code}```\n"


async def generated_qa(
    tmp_path: Path, mode: str, test_body: str, **limits: Any
) -> tuple[dict[str, Any], Path]:
    """Deliver `test_body` through the replay backend and the dev agent, run QA on it."""
    return await generated_qa_as(tmp_path, mode, mode, test_body, **limits)


async def generated_qa_as(
    tmp_path: Path, setting: str, mode: str, test_body: str, **limits: Any
) -> tuple[dict[str, Any], Path]:
    """generated_qa with sandbox=`setting`, which must run as `mode`."""
    pipeline = settings(tmp_path, setting, **limits)
    replay = tmp_path / "replay.json"
    replies = {"dev:hostile": {"content": dev_reply(test_body), "usage": {"prompt_tokens": 1}}}
    replay.write_text(json.dumps({"model": "m", "replies": replies}))
    ws = tmp_path / "workspaces" / "r-1"
    payload = {
        "subtask": {"id": "hostile", "description": "x", "files": ["test_hostile.py"]},
        "run_id": "r-1",
        "workspace": str(ws),
        "model": {"backend": "replay", "replay_file": str(replay)},
    }
    await DevAgent(ModelSettings(), pipeline)(context("dev", payload))
    result = await QAAgent(ModelSettings(), pipeline)(context("qa", payload))
    assert result["sandbox"] == mode
    return result, ws


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and b"pytest" not in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("mode", MODES)
async def test_generated_code_reaches_no_port_on_the_hosts_loopback_nor_redis(
    tmp_path: Path, mode: str, raw_redis: Redis, redis_url: str
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    key = f"sandbox-test:{uuid.uuid4().hex}"
    body = f"""
reached = []
for p in ({port}, {redis_port}):
    try:
        s = socket.create_connection(("127.0.0.1", p), timeout=2)
        s.sendall(b"SET {key} pwned\\r\\n")
        reached.append(p)
    except OSError as exc:
        print("refused", p, exc)
self.assertEqual(reached, [])
"""
    before = await raw_redis.info("stats")
    keys_before = await raw_redis.dbsize()
    try:
        result, _ = await generated_qa(tmp_path, mode, body)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()
    assert result["passed"] is True, result["output"]
    assert await raw_redis.exists(key) == 0
    after = await raw_redis.info("stats")  # on the connection already open: no new one
    assert after["total_connections_received"] == before["total_connections_received"]
    assert await raw_redis.dbsize() == keys_before


@pytest.mark.parametrize("mode", MODES)
async def test_generated_code_writes_nothing_outside_the_workspace(
    tmp_path: Path, mode: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    targets = [outside / "pwned", Path(f"/tmp/pwned-{uuid.uuid4().hex}"),
               Path(f"/dev/shm/pwned-{uuid.uuid4().hex}")]  # fmt: skip
    body = f"""
for path in {[str(t) for t in targets]!r}:
    try:
        open(path, "w").write("x")
    except OSError as exc:
        print("refused", path, exc)
open("inside.txt", "w").write("ok")
"""
    result, ws = await generated_qa(tmp_path, mode, body)
    assert result["passed"] is True, result["output"]
    assert not any(t.exists() for t in targets)
    assert (ws / "inside.txt").read_text() == "ok"  # the workspace is writable
    assert (ws / "inside.txt").stat().st_uid == os.getuid()  # and the worker's again


@pytest.mark.parametrize("mode", MODES)
async def test_generated_code_cannot_read_a_private_file_of_the_worker(
    tmp_path: Path, mode: str
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    secret.chmod(0o600)
    home_secret = Path.home() / f".sandbox-test-{uuid.uuid4().hex}"
    home_secret.write_text("TOP-SECRET-VALUE")
    home_secret.chmod(0o600)
    body = f"""
for path in ({str(secret)!r}, {str(home_secret)!r}, "/proc/1/environ"):
    try:
        print("read", path, open(path).read())
    except OSError as exc:
        print("refused", path, exc)
"""
    try:
        result, _ = await generated_qa(tmp_path, mode, body)
    finally:
        home_secret.unlink()
    assert result["passed"] is True, result["output"]
    assert "TOP-SECRET-VALUE" not in result["output"]
    assert "AGENTIC_" not in result["output"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_fork_bomb_is_stopped_by_the_process_limit_and_leaves_nothing(
    tmp_path: Path, mode: str
) -> None:
    marker = f"forkbomb-{uuid.uuid4().hex}"
    body = f"""
children = 0
for _ in range(10_000):
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", "{marker}"])
    children += 1
"""
    result, _ = await generated_qa(tmp_path, mode, body, sandbox_max_processes=64)
    assert result["passed"] is False
    assert result["limit"] == "process limit 64", result["output"]
    assert "stopped by the process limit 64" in result["summary"]
    assert processes_with(marker) == []


@pytest.mark.parametrize("mode", MODES)
async def test_allocating_8_gib_is_stopped_by_the_memory_limit(tmp_path: Path, mode: str) -> None:
    body = "block = bytearray(8 * 1024 ** 3)\n"
    result, _ = await generated_qa(tmp_path, mode, body, sandbox_memory_mib=512)
    assert result["passed"] is False
    assert result["limit"] == "memory limit 512 MiB", result["output"]
    assert "MemoryError" in result["output"]


@pytest.mark.parametrize("mode", MODES)
async def test_spinning_the_cpu_is_killed_by_the_cpu_limit(tmp_path: Path, mode: str) -> None:
    result, _ = await generated_qa(tmp_path, mode, "while True:\n    pass\n")
    assert result["passed"] is False and result["timed_out"] is False
    assert result["limit"] == f"CPU time limit {CPU_SECONDS} s"
    assert result["summary"] == f"killed: CPU time limit {CPU_SECONDS} s (during tests)"
    assert result["duration_seconds"] < 30


@pytest.mark.parametrize("mode", MODES)
async def test_a_background_process_does_not_outlive_the_qa_run(tmp_path: Path, mode: str) -> None:
    marker = f"survivor-{uuid.uuid4().hex}"
    body = f"""
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:
    os.setsid()
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", "{marker}"])
"""
    result, _ = await generated_qa(tmp_path, mode, body)
    assert result["passed"] is True, result["output"]
    assert processes_with(marker) == []


@pytest.mark.parametrize("mode", MODES)
async def test_file_size_and_open_files_limits_are_named(tmp_path: Path, mode: str) -> None:
    body = 'open("big.bin", "wb").write(b"x" * (3 * 1024 * 1024))\n'
    result, ws = await generated_qa(tmp_path, mode, body, sandbox_file_size_mib=1)
    assert result["limit"] == "file size limit 1 MiB", result["output"]
    assert (ws / "big.bin").stat().st_size <= 1024 * 1024

    body = "files = [open(__file__) for _ in range(100)]\n"
    (tmp_path / "b").mkdir()
    result, _ = await generated_qa(tmp_path / "b", mode, body, sandbox_open_files=32)
    assert result["limit"] == "open files limit 32", result["output"]


async def test_none_runs_unsandboxed_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    result, _ = await generated_qa(tmp_path, "none", "print(os.getuid())\n")
    assert result["passed"] is True and result["limit"] is None
    assert "sandbox=none" in caplog.text


def test_bubblewrap_mounts_its_private_tmp_under_the_runtime_and_the_workspace(
    tmp_path: Path,
) -> None:
    """A venv or a checkout under /tmp (CI clones there) and pytest's workspaces must be
    bound on top of the sandbox's empty /tmp, not hidden by it."""
    argv = _bwrap_prefix(tmp_path)
    tmpfs = argv.index("--tmpfs")
    binds = [i for i, arg in enumerate(argv) if arg in ("--ro-bind", "--bind")]
    runtime = [i for i in binds if argv[i + 1] not in ("/usr", "/bin", "/sbin", "/lib",
                                                         "/lib64", "/lib32")]  # fmt: skip
    assert runtime and all(i > tmpfs for i in runtime if argv[i + 2] != "/etc")
    assert argv.index(str(tmp_path), tmpfs) > tmpfs  # the workspace bind comes after


def test_auto_picks_bubblewrap_when_it_works() -> None:
    expected = "bubblewrap" if shutil.which("bwrap") else "unshare"
    assert available_mode("auto") == expected


async def test_a_workspace_outside_the_base_directory_is_refused(tmp_path: Path) -> None:
    pipeline = settings(tmp_path, "bubblewrap")
    for workspace in ("/etc", str(tmp_path / "elsewhere"), str(tmp_path / "workspaces"),
                      str(tmp_path / "workspaces" / ".." / "deploy")):  # fmt: skip
        payload = {"subtask": {"id": "x"}, "run_id": "r-1", "workspace": workspace}
        with pytest.raises(OutsideBaseDirectory, match="outside the base directory"):
            await QAAgent(ModelSettings(), pipeline)(context("qa", payload))
    link = tmp_path / "workspaces" / "link"
    link.parent.mkdir()
    link.symlink_to("/etc")
    payload = {"subtask": {"id": "x"}, "run_id": "r-1", "workspace": str(link)}
    with pytest.raises(OutsideBaseDirectory):
        await QAAgent(ModelSettings(), pipeline)(context("qa", payload))


async def test_a_deploy_dir_outside_the_deploy_base_is_refused(tmp_path: Path) -> None:
    pipeline = settings(tmp_path, "bubblewrap")
    ws = tmp_path / "workspaces" / "r-1"
    ws.mkdir(parents=True)
    (ws / "mod.py").write_text("X = 1\n")
    payload = {
        "subtask": {"id": "x"}, "run_id": "r-1", "workspace": str(ws), "name": "app",
        "version": "1.0", "qa_evidence": {"passed": True},
    }  # fmt: skip
    for outside in ("/etc", str(tmp_path / "elsewhere")):
        with pytest.raises(OutsideBaseDirectory, match="deploy_dir"):
            await DeployAgent(ModelSettings(), pipeline)(
                context("deploy", {**payload, "deploy_dir": outside})
            )
    assert not (tmp_path / "elsewhere").exists()
    inside = tmp_path / "deploy" / "team-a"
    result = await DeployAgent(ModelSettings(), pipeline)(
        context("deploy", {**payload, "deploy_dir": str(inside)})
    )
    assert Path(result["artifact"]).parent == inside.resolve()


async def test_without_namespaces_the_limits_and_the_uid_drop_still_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`auto` on a host where neither bubblewrap nor unshare works: rlimits only (and the
    uid drop when the runtime is open to others: here it may be under /root)."""
    monkeypatch.setattr("agents.sandbox._bwrap_works", lambda: False)
    monkeypatch.setattr("agents.sandbox._unshare_works", lambda: False)
    outside = tmp_path / "outside"
    outside.mkdir()
    body = f"""
print("uid", os.getuid(), os.getuid() > {UID_BASE})
try:
    open({str(outside / "pwned")!r}, "w").write("x")
except OSError as exc:
    print("refused", exc)
while True:
    pass
"""
    result, _ = await generated_qa_as(tmp_path, "auto", "rlimits", body)
    assert result["limit"] == f"CPU time limit {CPU_SECONDS} s"
    if Sandbox.from_settings(settings(tmp_path, "auto")).drops_root:
        assert f"uid {UID_BASE}" not in result["output"]  # a uid of its own: above the base
        assert "uid 0" not in result["output"]
        assert not (outside / "pwned").exists()


@pytest.mark.parametrize("mode", MODES)
async def test_a_fork_bomb_does_not_starve_a_qa_run_beside_it(tmp_path: Path, mode: str) -> None:
    """Each run of a root worker has a uid of its own, so RLIMIT_NPROC counts its own."""
    bomb = """
children = 0
try:
    for _ in range(10_000):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
finally:
    time.sleep(4)  # holding every process it got while the other run forks
"""
    calm = """
time.sleep(1)
pids = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(20)]
self.assertEqual([p.wait() for p in pids], [0] * 20)
print("uid", os.getuid())
"""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (bombed, _), (beside, _) = await asyncio.gather(
        generated_qa(tmp_path / "a", mode, bomb, sandbox_max_processes=64),
        generated_qa(tmp_path / "b", mode, calm, sandbox_max_processes=64),
    )
    assert bombed["limit"] == "process limit 64"
    assert beside["passed"] is True, beside["output"]


@pytest.mark.parametrize("mode", MODES)
async def test_ordinary_test_code_runs_in_the_sandbox(tmp_path: Path, mode: str) -> None:
    """What honest tests do: a server on localhost inside, the user's name, temp files,
    a subprocess, files written in the workspace."""
    body = """
import getpass, tempfile, threading
server = socket.create_server(("localhost", 0))
port = server.getsockname()[1]
threading.Thread(target=lambda: server.accept()[0].sendall(b"hi"), daemon=True).start()
with socket.create_connection(("localhost", port), timeout=5) as client:
    self.assertEqual(client.recv(2), b"hi")
self.assertTrue(getpass.getuser())
with tempfile.NamedTemporaryFile() as scratch:
    scratch.write(b"x")
self.assertEqual(subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True,
                                text=True).stdout, "42\\n")
os.makedirs("out/deep", exist_ok=True)
open("out/deep/result.txt", "w").write("ok")
"""
    result, ws = await generated_qa(tmp_path, mode, body)
    assert result["passed"] is True, result["output"]
    assert (ws / "out" / "deep" / "result.txt").read_text() == "ok"
    assert (ws / "out" / "deep").stat().st_uid == os.getuid()


async def test_an_explicit_mode_that_cannot_run_here_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agents.sandbox._bwrap_works", lambda: False)
    ws = tmp_path / "workspaces" / "r-1"
    ws.mkdir(parents=True)
    (ws / "test_x.py").write_text("open('ran', 'w')\n")
    payload = {"subtask": {"id": "x"}, "run_id": "r-1", "workspace": str(ws)}
    with pytest.raises(SandboxUnavailable, match="sandbox=bubblewrap"):
        await QAAgent(ModelSettings(), settings(tmp_path, "bubblewrap"))(context("qa", payload))
    assert not (ws / "ran").exists()  # nothing ran weaker instead
