"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): the overview
with its chart, a task opened from the list, a DLQ retry, a run's timeline, live
updates, and a payload with <script> that stays text.

AGENTIC_SCREENSHOTS=1 saves the overview and the run timeline into docs/ (the README
shows them); otherwise they go to the test's tmp_path and are only checked to exist."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.support.dashboard import Population, dashboard_settings, drop_prefix, populate, serve
from utils.config import Settings
from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(180)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
async def config(tmp_path: Path, redis_url: str) -> AsyncIterator[Settings]:
    settings = dashboard_settings(tmp_path, redis_url)
    yield settings
    await drop_prefix(redis_url, settings.key_prefix)


@pytest.fixture
async def population(config: Settings) -> Population:
    return await populate(config)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), (
        "the browser tests need Debian's chromium: apt-get install chromium chromium-driver "
        "(make test does it when run as root)"
    )
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(
    browser: Browser, config: Settings, population: Population
) -> AsyncIterator[tuple[Page, str]]:
    async with serve(config) as url:
        context = await browser.new_context(viewport={"width": 1360, "height": 900})
        context.set_default_timeout(10_000)
        tab = await context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            yield tab, url
        finally:
            await context.close()
        assert not errors, f"script errors in the page: {errors}"


def shot_path(tmp_path: Path, name: str) -> Path:
    if os.environ.get("AGENTIC_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        return DOCS / name
    return tmp_path / name


async def test_overview_loads_with_its_chart(
    page: tuple[Page, str], population: Population, tmp_path: Path
) -> None:
    tab, url = page
    await tab.goto(url + "/")
    row = tab.locator('tr[data-queue="jobs"]')
    await expect(row).to_contain_text("jobs")
    await expect(tab.locator(".chart[data-drawn='1'] canvas").first).to_be_visible()
    path = shot_path(tmp_path, "dashboard-overview.png")
    await tab.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


async def test_open_a_task_from_the_list(page: tuple[Page, str], population: Population) -> None:
    tab, url = page
    await tab.goto(url + "/queues/jobs/tasks?state=dead_letter")
    first = tab.locator("a.task-link").first
    task_id = await first.inner_text()
    await first.click()
    await expect(tab.locator("#task-id")).to_have_text(task_id)
    await expect(tab.locator("#task-state")).to_have_text("dead_letter")
    await expect(tab.locator("details pre.err").first).to_contain_text("ValueError: boom")


async def test_retry_a_dead_letter_and_see_it_leave_the_dlq(
    page: tuple[Page, str], population: Population, config: Settings
) -> None:
    tab, url = page
    dead = population.ids["dead_letter"][0]
    await tab.goto(f"{url}/queues/jobs/tasks/{dead}")
    await tab.get_by_role("button", name="Retry").click()
    await expect(tab.locator(".flash")).to_contain_text("is pending again")
    await expect(tab.locator("#task-state")).to_have_text("pending")
    await tab.goto(url + "/queues/jobs/tasks?state=dead_letter")
    await expect(tab.locator("#tasks")).not_to_contain_text(dead)
    queue = RedisTaskQueue.from_settings(config)
    async with queue:
        assert (await queue.get_queue_size())["dlq"] == 1


async def test_run_timeline(page: tuple[Page, str], population: Population, tmp_path: Path) -> None:
    tab, url = page
    await tab.goto(url + "/runs")
    await tab.locator("a.run-link").first.click()
    await expect(tab.locator("#run-status")).to_have_text("succeeded")
    lanes = tab.locator("#timeline .lane")
    await expect(lanes.first).to_contain_text("dev")
    await expect(lanes.last).to_contain_text("deploy")
    path = shot_path(tmp_path, "dashboard-run.png")
    await tab.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


async def test_a_script_in_a_payload_stays_text(
    page: tuple[Page, str], population: Population
) -> None:
    tab, url = page
    await tab.goto(f"{url}/queues/jobs/tasks/{population.hostile_id}")
    await expect(tab.locator("#payload")).to_contain_text("<script>window.__pwned = 1</script>")
    assert await tab.evaluate("window.__pwned") is None
    await tab.goto(f"{url}/queues/jobs/search?text=pwned")
    await expect(tab.locator("#tasks")).to_contain_text(population.hostile_id)
    assert await tab.evaluate("window.__pwned") is None


async def test_pages_update_without_a_reload(
    page: tuple[Page, str], population: Population, config: Settings
) -> None:
    tab, url = page
    await tab.goto(url + "/")
    pending = tab.locator('tr[data-queue="jobs"] td').nth(1)
    await expect(pending).to_have_text("4")
    await tab.evaluate("window.__same_page = true")
    queue = RedisTaskQueue.from_settings(config)
    async with queue:
        await queue.enqueue("live-1", "email", {})
    await expect(pending).to_have_text("5")
    assert await tab.evaluate("window.__same_page") is True, "updated in place, not reloaded"
