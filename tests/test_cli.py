"""The `agentic` command line end to end: real processes against real Redis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support.processes import ROOT, agentic_argv, agentic_env, worker_processes
from tests.support.redis_server import RedisServer, free_port
from utils.redis_queue import RedisTaskQueue, TaskState

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def agentic(redis_url: str, queue_name: str) -> Iterator[Any]:
    """Runs `agentic ARGS` against this test's queue; returns the CompletedProcess."""

    def call(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        env = agentic_env(url or redis_url, queue_name)
        return subprocess.run(
            agentic_argv(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )

    yield call


def _json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_enqueue_then_task_show_and_info_as_json(agentic: Any, queue: RedisTaskQueue) -> None:
    out = agentic(
        "enqueue", "noop", "--payload", '{"value": 3}', "--priority", "high", "--id", "j1"
    )
    assert out.returncode == 0 and out.stdout.strip() == "j1"
    shown = _json(agentic("task", "show", "j1", "--json"))
    assert shown["task_id"] == "j1" and shown["priority"] == 2 and shown["state"] == "pending"
    assert shown["payload"] == {"value": 3}
    info = _json(agentic("info", "--json"))
    assert info["statistics"]["pending"] == 1
    assert info["statistics"]["pending_by_priority"]["high"] == 1
    assert info["workers"] == []
    assert (await queue.get_queue_size())["pending"] == 1


async def test_enqueue_payload_from_file_with_delay(
    agentic: Any, queue: RedisTaskQueue, tmp_path: Any
) -> None:
    payload = tmp_path / "p.json"
    payload.write_text('{"file": "main.py"}')
    out = agentic("enqueue", "dev", "--payload", f"@{payload}", "--delay", "60", "--json")
    task = _json(out)
    assert task["state"] == "delayed" and task["payload"] == {"file": "main.py"}


async def test_enqueue_wait_prints_the_result(
    agentic: Any, redis_url: str, queue_name: str
) -> None:
    with worker_processes(redis_url, queue_name) as procs:
        procs.start()
        out = agentic("enqueue", "noop", "--payload", '{"value": "hi"}', "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"echo": "hi"}


async def test_worker_burst_drains_and_exits_zero(agentic: Any, queue: RedisTaskQueue) -> None:
    await queue.enqueue_many(
        {"task_id": f"b{i}", "task_type": "noop", "payload": {}} for i in range(25)
    )
    out = agentic("worker", "--app", "tests.support.worker_apps:registry", "--burst", "-c", "5")
    assert out.returncode == 0, out.stderr
    assert (await queue.get_queue_size())["completed"] == 25


async def test_worker_types_option_routes(agentic: Any, queue: RedisTaskQueue) -> None:
    await queue.enqueue("n", "noop", {})
    await queue.enqueue("s", "sleep", {"seconds": 0})
    out = agentic(
        "worker", "--app", "tests.support.worker_apps:handlers", "--types", "noop", "--burst"
    )
    assert out.returncode == 0, out.stderr
    assert (await queue.get_statistics())["pending_by_type"] == {"noop": 0, "sleep": 1}


async def test_task_cancel(agentic: Any, queue: RedisTaskQueue) -> None:
    await queue.enqueue("c", "noop", {})
    out = agentic("task", "cancel", "c")
    assert out.returncode == 0 and "cancelled" in out.stdout
    task = await queue.get_task("c")
    assert task is not None and task.state == TaskState.CANCELLED


async def test_dlq_list_retry_and_purge(agentic: Any, queue: RedisTaskQueue) -> None:
    for i in range(3):
        await queue.enqueue(f"d{i}", "noop", {})
        await queue.dequeue("w", timeout=1)
        await queue.fail_task(f"d{i}", f"broke {i}", retry=False)
    listed = _json(agentic("dlq", "list", "--json"))
    assert [t["task_id"] for t in listed["tasks"]] == ["d2", "d1", "d0"]  # newest first
    assert [t["error_line"] for t in listed["tasks"]] == ["broke 2", "broke 1", "broke 0"]
    assert agentic("dlq", "retry", "d0").returncode == 0
    out = agentic("dlq", "retry", "--all")
    assert out.returncode == 0 and "retried 2" in out.stdout
    assert (await queue.get_queue_size())["pending"] == 3
    for _ in range(3):
        task = await queue.dequeue("w", timeout=1)
        assert task is not None
        await queue.fail_task(task.task_id, "again", retry=False)
    assert agentic("dlq", "purge").returncode == 2  # needs --yes
    out = agentic("dlq", "purge", "--yes")
    assert out.returncode == 0 and "purged 3" in out.stdout
    assert (await queue.get_queue_size())["dlq"] == 0


def test_health_exit_codes(agentic: Any) -> None:
    report = _json(agentic("health", "--json"))
    assert report["status"] == "healthy" and {"pending", "processing", "dlq_size"} <= set(report)
    down = agentic("health", "--json", url=f"redis://:pw@127.0.0.1:{free_port()}/0")
    assert down.returncode == 69
    assert json.loads(down.stdout)["status"] == "unhealthy" and "pw" not in down.stdout


@pytest.mark.parametrize(
    "args",
    [("info",), ("info", "--json"), ("task", "show", "x"), ("dlq", "list"), ("enqueue", "t")],
)
def test_commands_exit_69_when_redis_is_down(agentic: Any, args: tuple[str, ...]) -> None:
    out = agentic(*args, url=f"redis://127.0.0.1:{free_port()}/0")
    assert out.returncode == 69, (out.stdout, out.stderr)
    assert "unreachable" in out.stderr


def test_usage_errors_exit_2(agentic: Any) -> None:
    assert agentic("enqueue", "t", "--priority", "urgent").returncode == 2
    assert agentic("enqueue", "t", "--payload", "[1]").returncode == 2
    assert agentic("worker").returncode == 2  # no --app
    assert agentic("worker", "--app", "nowhere:thing").returncode == 2
    assert agentic("dlq", "retry").returncode == 2
    assert agentic("enqueue", "t", "--id", "bad id{}").returncode == 2
    assert agentic("task", "show", "*").returncode == 2


def test_unknown_task_exits_1(agentic: Any) -> None:
    out = agentic("task", "show", "missing")
    assert out.returncode == 1 and "no task" in out.stderr


async def test_every_option_has_an_environment_fallback(
    redis_url: str, queue_name: str, queue: RedisTaskQueue
) -> None:
    env = agentic_env(
        redis_url,
        queue_name,
        AGENTIC_ENQUEUE_PRIORITY="critical",
        AGENTIC_ENQUEUE_TASK_ID="from-env",
    )
    out = subprocess.run(
        agentic_argv("enqueue", "noop"), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    task = await queue.get_task("from-env")
    assert task is not None and task.priority == 3


# -- usage errors and access errors: one line, the documented exit code -----------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost:notaport/0", "Port could not be cast"),
        ("http://localhost:1/0", "the scheme must be redis://, rediss://, unix:// or sentinel://"),
        ("redis://localhost:99999/0", "Port out of range"),
        ("redis://localhost:1/zero", "the database must be a number"),
    ],
    ids=["port", "scheme", "port-range", "database"],
)
@pytest.mark.parametrize("command", [("info",), ("enqueue", "dev"), ("worker", "--burst")])
def test_a_malformed_redis_url_is_a_one_line_usage_error(
    agentic: Any, url: str, message: str, command: tuple[str, ...]
) -> None:
    app = ("--app", "tests.support.worker_apps:registry") if command[0] == "worker" else ()
    out = agentic(*command, *app, url=url)
    assert out.returncode == 2, out.stderr
    assert "invalid Redis URL" in out.stderr and message in out.stderr
    assert "Traceback" not in out.stderr


def test_wrong_credentials_and_acl_denials_say_so_with_exit_77(agentic: Any) -> None:
    server = RedisServer("--requirepass", "right-pw")
    server.start()
    try:
        wrong = f"redis://:wrong-pw@127.0.0.1:{server.port}/0"
        for command in (("info",), ("enqueue", "dev")):
            out = agentic(*command, url=wrong)
            assert out.returncode == 77, out.stderr
            assert "refused the credentials" in out.stderr and "wrong-pw" not in out.stderr
        admin = redis.Redis(port=server.port, password="right-pw")
        admin.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["other:*"],
                          commands=["+@all"])  # fmt: skip
        admin.close()
        out = agentic("enqueue", "dev", url=f"redis://reader:pw@127.0.0.1:{server.port}/0")
        assert out.returncode == 77 and "denied the command (NOPERM" in out.stderr, out.stderr
    finally:
        server.cleanup()


def test_cli_refuses_a_zero_interval_an_empty_id_and_a_missing_payload_file(agentic: Any) -> None:
    for args, hint in (
        (("info", "-i", "0"), "--interval"),
        (("info", "-i", "-1"), "--interval"),
        (("enqueue", "dev", "--id", ""), "--id"),
        (("enqueue", "dev", "--id", "  "), "--id"),
        (("enqueue", "dev", "--payload", "@/nonexistent/p.json"), "cannot read"),
    ):
        out = agentic(*args)
        assert out.returncode == 2 and hint in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


async def test_cli_priorities_are_names_in_any_case_or_numbers(
    agentic: Any, queue: RedisTaskQueue
) -> None:
    for value, expected in (("HIGH", 2), ("high", 2), ("Critical", 3), ("2", 2), ("0", 0)):
        out = agentic("enqueue", "dev", "--priority", value, "--json")
        assert _json(out)["priority"] == expected, value
    out = agentic("enqueue", "dev", "--priority", "4")
    assert out.returncode == 2 and "0-3" in out.stderr


async def test_global_options_work_after_the_subcommand(
    redis_url: str, queue_name: str, queue: RedisTaskQueue
) -> None:
    await queue.enqueue("g1", "noop", {})
    env = agentic_env("redis://127.0.0.1:1/0", "elsewhere")  # the options must win
    args = ("info", "--json", "--redis-url", redis_url, f"--queue={queue_name}", "-v")
    out = subprocess.run(
        agentic_argv(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert _json(out)["statistics"]["pending"] == 1
    nested = ("task", "show", "g1", "--json", "--queue", queue_name, "--redis-url", redis_url)
    out = subprocess.run(
        agentic_argv(*nested), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert _json(out)["task_id"] == "g1"
