"""Losing the lobby socket is obvious and heals by itself: a real server stopped and started."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from tests.e2e.restart import RestartableLobby, restartable_lobby
from tests.e2e.tabs import Tabs
from tests.openvidu_standin import OpenViduStandin

RECONNECTED = 15_000  # ms: the socket's backoff is capped at 10 s


@pytest.fixture
async def restartable(standin: OpenViduStandin) -> AsyncIterator[RestartableLobby]:
    async with restartable_lobby(standin, reconnect_grace=30.0) as server:
        yield server


async def test_while_the_lobby_is_down_joining_pauses_and_the_list_is_marked_stale(
    restartable: RestartableLobby, tabs: Tabs
):
    alice = await tabs.login(restartable.http, "alice")
    bob = await tabs.login(restartable.http, "bob")
    await bob.create_room("KEEP", "Bob")
    await bob.in_call()
    page = alice.page
    banner = page.locator("#connection-banner")
    rooms = page.locator("#rooms")
    join = alice.card("KEEP").locator("button.room-join")
    await expect(join).to_be_enabled()
    await expect(banner).to_be_hidden()
    await expect(rooms).to_have_attribute("aria-busy", "false")

    await restartable.stop()
    await expect(banner).to_be_visible()
    await expect(banner).to_have_attribute("role", "status")
    await expect(banner).to_contain_text("Lost the connection to the lobby")
    await expect(banner).to_contain_text("Reconnecting")
    await expect(join).to_be_disabled()
    await expect(page.locator("#join-submit")).to_be_disabled()
    await expect(rooms).to_have_attribute("aria-busy", "true")
    await expect(page.locator("#rooms-stale")).to_be_visible()
    await expect(page.locator("#rooms-stale")).to_contain_text("may be out of date")
    # Bob in his call sees the same banner there.
    await expect(bob.page.locator("#connection-banner")).to_be_visible()

    await restartable.start()
    await expect(banner).to_be_hidden(timeout=RECONNECTED)
    await expect(join).to_be_enabled()
    await expect(page.locator("#join-submit")).to_be_enabled()
    await expect(rooms).to_have_attribute("aria-busy", "false")
    await expect(page.locator("#rooms-stale")).to_be_hidden()
    await expect(bob.page.locator("#connection-banner")).to_be_hidden(timeout=RECONNECTED)
    await expect(page.locator("#error")).to_be_empty()
    assert alice.dialogs == []


async def test_an_error_caused_only_by_the_outage_clears_when_the_lobby_is_back(
    restartable: RestartableLobby, standin: OpenViduStandin, tabs: Tabs
):
    alice = await tabs.login(restartable.http, "alice")
    standin.refuse_browsers = True  # the call fails: its Retry button stays on offer
    await alice.create_room("WAIT", "Alice")
    await alice.in_call("error")
    await alice.mark()

    await restartable.stop()
    await expect(alice.page.locator("#connection-banner")).to_be_visible()
    # Retry needs the lobby: the page says it is not connected…
    await alice.page.locator("#call-retry").click()
    error = alice.page.locator("#error")
    await expect(error).to_contain_text("Not connected to the lobby")

    # …and that goes by itself once the lobby is back.
    await restartable.start()
    await expect(alice.page.locator("#connection-banner")).to_be_hidden(timeout=RECONNECTED)
    await expect(error).to_be_empty()
    assert await alice.still_same_page()
