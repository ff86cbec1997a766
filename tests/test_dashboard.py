"""The dashboard over real HTTP: every page and its /api/ twin against a real Redis with
tasks in every state and a finished pipeline run; actions change Redis through the
engine; auth, CSRF, read-only and hostile payloads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from agents import build_registry
from pipeline import DistributedPipelineManager, RunStatus
from pipeline.dashboard import DashboardOptions
from tests.support.dashboard import (
    Population,
    dashboard_settings,
    drop_prefix,
    populate,
    serve,
)
from tests.support.pipeline import ROOT, spec
from tests.support.processes import agentic_argv, agentic_env, eventually
from tests.support.redis_server import RedisServer
from tests.test_pipeline_approval import Gatekeeper
from tests.test_pipeline_dag import Recorder, dag_spec
from utils.config import Settings
from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(120)
TOKEN = "s3cret-token-for-tests"


@pytest.fixture
async def config(tmp_path: Path, redis_url: str) -> AsyncIterator[Settings]:
    settings = dashboard_settings(tmp_path, redis_url)
    yield settings
    await drop_prefix(redis_url, settings.key_prefix)


@pytest.fixture
async def population(config: Settings) -> Population:
    return await populate(config)


@pytest.fixture
async def site(config: Settings, population: Population) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(config) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found, "every page carries its CSRF token"
    return found.group(1)


async def test_every_page_renders_and_its_api_twin_answers(
    site: httpx.AsyncClient, population: Population
) -> None:
    q = population.queue
    pages = [
        "/",
        f"/queues/{q}",
        *(f"/queues/{q}/tasks?state={s}" for s in population.ids),
        f"/queues/{q}/tasks/{population.ids['dead_letter'][0]}",
        f"/queues/{q}/workers",
        f"/queues/{q}/search?text=report",
        "/runs",
        f"/runs/{population.run_id}",
    ]
    for path in pages:
        page = await site.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        partial = await site.get(path + ("&" if "?" in path else "?") + "partial=1")
        assert partial.status_code == 200 and "<html" not in partial.text
        api_path = "/api/overview" if path == "/" else f"/api{path}"
        twin = await site.get(api_path)
        assert twin.status_code == 200, (api_path, twin.text[:300])
        assert twin.headers["content-type"] == "application/json"
    history = (await site.get(f"/api/queues/{q}/history?minutes=60")).json()
    assert len(history) == 60
    assert sum(m["enqueued"] for m in history) == sum(len(v) for v in population.ids.values())
    assert (await site.get(f"/api/queues/{q}/limits")).json() == []


async def test_overview_counts_every_state(site: httpx.AsyncClient, population: Population) -> None:
    doc = (await site.get("/api/overview")).json()
    by_name = {q["queue"]: q for q in doc["queues"]}
    assert set(by_name) >= {"jobs", "pipe"}
    jobs = by_name["jobs"]
    assert jobs["sizes"] == {
        "pending": 4,
        "delayed": 1,
        "processing": 1,
        "completed": 2,
        "failed": 0,
        "cancelled": 1,
        "dlq": 2,
    }
    assert jobs["oldest_waiting_seconds"] is not None and jobs["oldest_waiting_seconds"] >= 0
    assert jobs["last_hour"]["completed"] == 2 and jobs["last_hour"]["failed"] == 2
    assert jobs["last_hour"]["failure_rate"] == 0.5
    html = (await site.get("/")).text
    assert 'href="/queues/jobs/tasks?state=dead_letter">2<' in html


async def test_task_detail_shows_attempts_trace_and_escapes_payloads(
    site: httpx.AsyncClient, population: Population
) -> None:
    dead = population.ids["dead_letter"][0]
    doc = (await site.get(f"/api/queues/jobs/tasks/{dead}")).json()
    assert doc["state"] == "dead_letter" and doc["attempts"] == 1
    assert [a["attempt"] for a in doc["attempt_history"]] == [1]
    assert "Traceback" in doc["attempt_history"][0]["error"]
    page = await site.get(f"/queues/jobs/tasks/{dead}")
    assert "Traceback (most recent call last)" in page.text

    hostile = await site.get(f"/queues/jobs/tasks/{population.hostile_id}")
    assert "<script>window.__pwned" not in hostile.text
    assert "&lt;script&gt;window.__pwned" in hostile.text
    assert "sk-secret-1234" not in hostile.text, "secret-looking payload fields are redacted"
    api = (await site.get(f"/api/queues/jobs/tasks/{population.hostile_id}")).json()
    assert api["payload"]["api_key"] == "[redacted]"


async def test_run_timeline_lists_every_stage_with_usage(
    site: httpx.AsyncClient, population: Population
) -> None:
    run = (await site.get(f"/api/runs/{population.run_id}")).json()
    assert run["status"] == "succeeded"
    page = (await site.get(f"/runs/{population.run_id}")).text
    stages = re.findall(r'class="lane-label stage-(\w+)"', page)
    assert stages[0] == "dev" and stages[-1] == "deploy" and "qa" in stages
    assert len(stages) == len(run["subtasks"])
    rows = (await site.get("/api/runs")).json()
    assert [r["run_id"] for r in rows] == [population.run_id]
    assert rows[0]["tokens"] > 0


async def test_retry_from_the_dlq_moves_the_task_in_redis(
    site: httpx.AsyncClient, population: Population, config: Settings, raw_redis: Redis
) -> None:
    dead = population.ids["dead_letter"][0]
    page = await site.get(f"/queues/jobs/tasks/{dead}")
    token = csrf_of(page)
    moved = await site.post(f"/queues/jobs/tasks/{dead}/retry", data={"csrf": token})
    assert moved.status_code == 303
    queue = RedisTaskQueue.from_settings(config)
    async with queue:
        task = await queue.get_task(dead)
        assert task is not None and task.state == "pending"
        assert not await raw_redis.sismember(queue.keys.dlq, dead)
        assert await raw_redis.zscore(queue.keys.dlq_order, dead) is None


async def test_bulk_actions_ask_first_then_act(
    site: httpx.AsyncClient, population: Population, config: Settings
) -> None:
    token = csrf_of(await site.get("/queues/jobs"))
    asked = await site.post("/queues/jobs/dlq/purge", data={"csrf": token})
    assert asked.status_code == 200 and "Purge 2 dead-lettered" in asked.text
    queue = RedisTaskQueue.from_settings(config)
    async with queue:
        assert (await queue.get_queue_size())["dlq"] == 2, "nothing purged before confirming"
        api_ask = await site.post("/api/queues/jobs/dlq/retry-all", headers={"X-CSRF-Token": token})
        assert api_ask.status_code == 409 and api_ask.json()["count"] == 2
        done = await site.post("/queues/jobs/dlq/retry-all", data={"csrf": token, "confirm": "yes"})
        assert done.status_code == 303 and "retried%202" in done.headers["location"]
        sizes = await queue.get_queue_size()
        assert sizes["dlq"] == 0 and sizes["pending"] == 6


async def test_cancel_a_pending_task(
    site: httpx.AsyncClient, population: Population, config: Settings
) -> None:
    token = csrf_of(await site.get("/"))
    victim = population.ids["pending"][0]
    answer = await site.post(
        f"/api/queues/jobs/tasks/{victim}/cancel", headers={"X-CSRF-Token": token}
    )
    assert answer.status_code == 200 and answer.json()["ok"]
    queue = RedisTaskQueue.from_settings(config)
    async with queue:
        task = await queue.get_task(victim)
        assert task is not None and task.state == "cancelled"


async def test_actions_without_the_csrf_token_are_refused(
    site: httpx.AsyncClient, population: Population, config: Settings
) -> None:
    await site.get("/")  # the browser has its CSRF cookie
    dead = population.ids["dead_letter"][0]
    for data in ({}, {"csrf": "forged"}):
        refused = await site.post(f"/queues/jobs/tasks/{dead}/retry", data=data)
        assert refused.status_code == 403
    cross = await site.post(
        f"/queues/jobs/tasks/{dead}/retry",
        data={"csrf": site.cookies["agentic_csrf"]},
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    queue = RedisTaskQueue.from_settings(config)
    async with queue:
        task = await queue.get_task(dead)
        assert task is not None and task.state == "dead_letter"


async def test_read_only_hides_and_refuses_actions(
    config: Settings, population: Population
) -> None:
    options = DashboardOptions(read_only=True)
    async with serve(config, options) as url, httpx.AsyncClient(base_url=url) as client:
        dead = population.ids["dead_letter"][0]
        page = await client.get(f"/queues/jobs/tasks/{dead}")
        assert "read-only" in page.text and "/retry" not in page.text
        assert "retry-all" not in (await client.get("/queues/jobs")).text
        token = csrf_of(page)
        for path in (f"/queues/jobs/tasks/{dead}/retry", "/queues/jobs/dlq/purge"):
            refused = await client.post(path, data={"csrf": token, "confirm": "yes"})
            assert refused.status_code == 403
    queue = RedisTaskQueue.from_settings(config)
    async with queue:
        assert (await queue.get_queue_size())["dlq"] == 2


async def test_with_a_token_everything_needs_it(config: Settings, population: Population) -> None:
    options = DashboardOptions(auth_token=TOKEN)
    dead = population.ids["dead_letter"][0]
    async with serve(config, options) as url, httpx.AsyncClient(base_url=url) as client:
        for path in ("/", "/queues/jobs", f"/queues/jobs/tasks/{dead}", "/runs", "/api/overview"):
            assert (await client.get(path)).status_code == 401, path
        assert (await client.post(f"/api/queues/jobs/tasks/{dead}/retry")).status_code == 401
        wrong = await client.get("/api/overview", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await client.get("/static/app.js")).status_code == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/api/overview", headers=bearer)).status_code == 200
        # a browser signs in once; its cookie holds no token
        login_page = await client.get("/login")
        signed = await client.post("/login", data={"csrf": csrf_of(login_page), "token": TOKEN})
        assert signed.status_code == 303
        assert TOKEN not in str(client.cookies.get("agentic_session"))
        assert (await client.get("/queues/jobs")).status_code == 200
        # a bearer request needs no CSRF token: browsers never send that header themselves
        retried = await client.post(f"/api/queues/jobs/tasks/{dead}/retry", headers=bearer)
        assert retried.status_code == 200


async def test_bad_requests_get_clear_errors(site: httpx.AsyncClient) -> None:
    assert (await site.get("/queues/nope")).status_code == 404
    assert (await site.get("/api/queues/jobs/tasks/missing-id")).status_code == 404
    assert (await site.get("/api/queues/jobs/tasks?state=bogus")).status_code == 400
    assert (await site.get("/api/queues/jobs/tasks?limit=0")).status_code == 400
    assert (await site.get("/api/queues/jobs/tasks?cursor=%%%")).status_code == 400
    assert (await site.get("/api/queues/jobs/history?minutes=5000")).status_code == 400
    assert (await site.get("/api/runs/no-such-run")).status_code == 404
    assert (await site.get("/api/queues/jobs/search?text=")).status_code == 400
    bad = await site.get("/queues/%3Cscript%3E")
    assert bad.status_code == 404 and "<script>" not in bad.text


async def test_task_pages_follow_the_cursor(site: httpx.AsyncClient, config: Settings) -> None:
    queue = RedisTaskQueue.from_settings(config)
    async with queue:
        await queue.enqueue_many(
            [{"task_id": f"b-{i}", "task_type": "bulk", "payload": {"i": i}} for i in range(25)]
        )
    seen: list[str] = []
    url: str | None = "/api/queues/jobs/tasks?state=pending&type=bulk&limit=10"
    while url:
        page = (await site.get(url)).json()
        assert page["total"] == 25
        seen += [t["task_id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        url = f"/api/queues/jobs/tasks?state=pending&type=bulk&limit=10&cursor={cursor}"
        if not cursor:
            url = None
    assert len(seen) == len(set(seen)) == 25


async def test_cancel_a_running_pipeline_run_from_the_dashboard(
    config: Settings, population: Population
) -> None:
    async with DistributedPipelineManager(settings=config) as driver:  # no workers: it waits
        run_id = await driver.start_run(spec("replay.json"))
        async with serve(config) as url, httpx.AsyncClient(base_url=url) as client:
            page = await client.get(f"/runs/{run_id}")
            assert "Cancel run" in page.text
            answer = await client.post(
                f"/api/runs/{run_id}/cancel", headers={"X-CSRF-Token": csrf_of(page)}
            )
            assert answer.status_code == 200, answer.text
        result = await driver.wait_run(run_id)
    assert result.status is RunStatus.CANCELLED


async def test_resume_a_run_whose_manager_was_killed(
    config: Settings, population: Population, tmp_path: Path
) -> None:
    env = {
        **agentic_env(config.redis_url, config.queue_name),
        "AGENTIC_KEY_PREFIX": config.key_prefix,
        "AGENTIC_PIPELINE__QUEUE_NAME": config.pipeline_queue_name(),
        "AGENTIC_PIPELINE__RUN_LOCK_SECONDS": "1",
        "AGENTIC_PIPELINE__WORKSPACE_ROOT": str(config.pipeline.workspace_root),
        "AGENTIC_PIPELINE__DEPLOY_DIR": str(config.pipeline.deploy_dir),
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec("replay.json")))
    argv = agentic_argv("pipeline", "run", str(spec_file), "--workers", "no")
    with subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, start_new_session=True
    ) as manager:
        assert manager.stdout is not None
        for line in iter(manager.stdout.readline, b""):  # no worker: it waits on dev
            if b"dev" in line and b"queued" in line:
                break
        os.killpg(manager.pid, signal.SIGKILL)
        manager.wait(10)
    async with serve(config) as url, httpx.AsyncClient(base_url=url) as client:
        (row,) = [r for r in (await client.get("/api/runs")).json() if r["status"] == "running"]
        run_id = row["run_id"]
        page = await client.get(f"/runs/{run_id}")
        token = csrf_of(page)

        async def resumed() -> bool:  # once the dead manager's 1 s lock has expired
            answer = await client.post(
                f"/api/runs/{run_id}/resume", headers={"X-CSRF-Token": token}
            )
            return "resumed" in answer.json()["message"]

        await eventually(resumed, timeout=10)
        # a manager with handlers only serves the subtasks (it resumes nothing)
        serving = DistributedPipelineManager(
            settings=config, handlers=build_registry(config), resume=False
        )
        async with serving:

            async def finished() -> bool:
                doc = (await client.get(f"/api/runs/{run_id}")).json()
                return bool(doc["status"] == "succeeded")

            await eventually(finished, timeout=60)


async def test_a_partitioned_queue_is_shown_with_its_own_partition_count(
    config: Settings, site: httpx.AsyncClient
) -> None:
    queue = RedisTaskQueue.from_settings(config, queue_name="wide", partitions=3)
    async with queue:
        await queue.enqueue_many(
            [{"task_id": f"w-{i}", "task_type": "t", "payload": {}} for i in range(30)]
        )
    doc = (await site.get("/api/queues/wide")).json()
    assert doc["partitions"] == 3 and doc["statistics"]["pending"] == 30
    page = (await site.get("/api/queues/wide/tasks?state=pending&limit=1000")).json()
    assert sorted(t["task_id"] for t in page["tasks"]) == sorted(f"w-{i}" for i in range(30))
    assert "3 partitions" in (await site.get("/")).text


async def test_search_reads_at_most_its_bound_and_offers_to_go_further(
    site: httpx.AsyncClient, population: Population
) -> None:
    doc = (await site.get("/api/queues/jobs/search?text=no-such-text&scan=3")).json()
    assert doc["scanned"] == 3 and doc["complete"] is False and doc["tasks"] == []
    page = await site.get("/queues/jobs/search?text=no-such-text&scan=3")
    assert 'id="deeper" href="?text=no-such-text&amp;scan=30"' in page.text
    everything = (await site.get("/api/queues/jobs/search?text=no-such-text")).json()
    assert everything["complete"] is True and everything["scan_limit"] == 2000
    hit = (await site.get("/api/queues/jobs/search?text=boom")).json()
    assert {t["task_id"] for t in hit["tasks"]} == set(population.ids["dead_letter"])
    assert (await site.get("/api/queues/jobs/search?text=x&scan=0")).status_code == 400


async def test_extremes_many_types_a_large_payload_and_odd_ids(
    site: httpx.AsyncClient, config: Settings
) -> None:
    queue = RedisTaskQueue.from_settings(config)
    big = {"blob": "é<b>" * 110_000}  # ~1 MB of JSON once escaped (the limit is 1 MiB)
    async with queue:
        await queue.enqueue_many(
            [{"task_id": f"ty-{i}", "task_type": f"type-{i}", "payload": {}} for i in range(600)]
        )
        await queue.enqueue("odd:id@x.y-1", "email", big)
    doc = (await site.get("/api/queues/jobs")).json()
    assert doc["statistics"]["pending"] == 4 + 600 + 1
    assert doc["oldest_waiting_seconds"] is not None
    by_type = doc["statistics"]["pending_by_type"]
    assert all(by_type[f"type-{i}"] == 1 for i in range(600)) and by_type["email"] == 5
    page = await site.get("/queues/jobs/tasks/odd:id@x.y-1")
    # Above the blob threshold (64 KiB): the page names its size and key, not its 1 MB.
    assert page.status_code == 200 and "stored apart (claim-check)" in page.text
    assert "é&lt;b&gt;" not in page.text and len(page.text) < 100_000
    listed = (await site.get("/api/queues/jobs/tasks?state=pending&limit=1000")).json()
    assert listed["total"] == 605 and len(listed["tasks"]) == 605
    html = (await site.get("/queues/jobs/tasks?state=pending&limit=1000")).text
    assert 'href="/queues/jobs/tasks/odd%3Aid%40x.y-1"' in html


async def test_a_redis_outage_is_a_clear_503_and_the_dashboard_recovers(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    config = dashboard_settings(tmp_path, private_redis.url).model_copy(
        update={"socket_timeout": 1.0, "connect_timeout": 1.0}
    )
    await populate(config, with_run=False)
    async with serve(config) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        assert (await client.get("/api/queues/jobs")).status_code == 200
        private_redis.kill()
        down = await client.get("/api/queues/jobs")
        assert down.status_code == 503 and "unreachable" in down.json()["error"]
        page = await client.get("/queues/jobs")
        assert page.status_code == 503 and "Traceback" not in page.text
        private_redis.restart()
        back = await client.get("/api/queues/jobs")
        assert back.status_code == 200, back.text  # (a restart without persistence: empty)


async def test_approve_a_run_at_its_gate_from_the_dashboard(
    config: Settings, population: Population
) -> None:
    gate = Gatekeeper()
    handlers = Recorder(dev_seconds=0.01).registry()
    async with DistributedPipelineManager(settings=config, handlers=handlers, on_event=gate) as m:
        run_id = await m.start_run(dag_spec({"a": []}, approval={"stage": "deploy"}))
        await gate.waiting.wait()
        async with serve(config) as url, httpx.AsyncClient(base_url=url) as client:
            page = await client.get(f"/runs/{run_id}")
            assert "Approval before deploy" in page.text and ">Approve</button>" in page.text
            assert (await client.get(f"/api/runs/{run_id}")).json()["status"] == (
                "awaiting_approval"
            )
            answer = await client.post(
                f"/runs/{run_id}/approve", data={"csrf": csrf_of(page), "comment": "go"}
            )
            assert answer.status_code == 303
        result = await m.wait_run(run_id)
        record = await m.get_run(run_id)
    assert result.status is RunStatus.SUCCEEDED
    assert record.approval is not None and record.approval.decided_by == "dashboard"
    assert record.approval.comment == "go"
