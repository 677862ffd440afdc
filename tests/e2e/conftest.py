"""Browser tests: one Debian Chromium per test session, a fresh context per tab.

Without /usr/bin/chromium the browser tests are skipped, except under `CI=true`,
where that is a failure. Every request a page makes is recorded and must stay
on this machine, and no page may throw an uncaught error. When a test fails,
each of its pages leaves a screenshot and its console log in `test-artifacts/`,
listed at the end of the run.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.e2e.tabs import CHROMIUM, CHROMIUM_ARGS, Tabs

HAVE_CHROMIUM = CHROMIUM.exists()
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
SAVED = pytest.StashKey[list[Path]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    saved = config.stash.get(SAVED, [])
    if saved:
        terminalreporter.section("browser test artifacts (screenshots, console logs)")
        for path in saved:
            terminalreporter.write_line(str(path))


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        reason = (
            f"the browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true a missing browser is a failure")
        pytest.skip(reason)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def tabs(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Tabs]:
    """Open pages with `await tabs.login(url, user)`; all must only talk to this machine."""
    opened = Tabs(browser)
    try:
        yield opened
    finally:
        call = request.node.stash.get(REPORTS, {}).get("call")
        if call is None or call.failed:
            folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
            saved = await opened.save(folder)
            request.config.stash.setdefault(SAVED, []).extend(saved)
        await opened.close()
    assert opened.remote_requests() == [], "a page made requests that leave this machine"
    assert opened.page_errors() == [], "a page threw an uncaught error"
