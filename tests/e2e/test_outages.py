"""The pages when things go away: OpenVidu down, the lobby server restarting."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from tests.conftest import LobbyFactory, until
from tests.e2e.restart import RestartableLobby, restartable_lobby
from tests.e2e.tabs import Tabs
from tests.openvidu_standin import OpenViduStandin


async def test_openvidu_down_the_call_explains_and_retries_while_the_lobby_stays_live(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    problem = alice.page.locator("#call-problem-text")
    retry = alice.page.locator("#call-retry")

    # OpenVidu unreachable from browsers: the token comes, the media socket never opens.
    standin.refuse_browsers = True
    await alice.create_room("DOWN", "Alice")
    await alice.in_call("error")
    await expect(problem).to_contain_text("media server cannot be reached")
    await expect(retry).to_be_visible()
    await expect(alice.page.locator("#error")).to_be_empty()  # a message in place, not an alert
    assert alice.dialogs == []
    # The lobby stays live, both ways.
    await expect(alice.badge).to_have_attribute("data-state", "connected")
    await expect(bob.card("DOWN").locator("li.chip")).to_have_text(["Alice (alice)"])
    await bob.create_room("ELSEWHERE", "Bob")
    await bob.in_call("error")
    await expect(alice.card("ELSEWHERE").locator("li.chip")).to_have_text(["Bob (bob)"])

    # OpenVidu down altogether: Retry says so and stays on offer.
    standin.fault = 503
    await retry.click()
    await expect(problem).to_contain_text("video service is unavailable")
    await expect(retry).to_be_visible()
    await alice.in_call("error")

    # Back up: one Retry brings the call back, with a fresh token.
    standin.fault = None
    standin.refuse_browsers = False
    await until(lambda: not lobby.state.media.down, timeout=10)
    await retry.click()
    await alice.in_call()
    await expect(alice.page.locator("#call-problem")).to_be_hidden()
    token = alice.issued_tokens()[-1]
    await standin.wait_for(
        lambda: any(
            c.method == "joinRoom" and c.error is None and c.params["token"] == token
            for c in standin.rpc_calls
        )
    )


@pytest.fixture
async def restartable(standin: OpenViduStandin) -> AsyncIterator[RestartableLobby]:
    async with restartable_lobby(standin, reconnect_grace=1.0) as server:
        yield server


@pytest.fixture
async def drainable(standin: OpenViduStandin) -> AsyncIterator[RestartableLobby]:
    async with restartable_lobby(standin, reconnect_grace=15.0, drain_seconds=1.0) as server:
        yield server


async def test_a_drained_and_restarted_server_gives_the_page_its_seat_back_unseen(
    drainable: RestartableLobby, tabs: Tabs
):
    alice = await tabs.login(drainable.http, "alice")
    bob = await tabs.login(drainable.http, "bob")
    await alice.create_room("STAY", "Alice")
    await alice.in_call()
    await expect(bob.card("STAY").locator("li.chip")).to_have_text(["Alice (alice)"])
    await alice.mark()

    await drainable.drain()  # closed with 1012: the page waits a random moment, then retries
    await expect(alice.badge).to_have_attribute("data-state", "reconnecting")
    await drainable.start()
    await expect(alice.badge).to_have_attribute("data-state", "connected", timeout=15_000)
    await expect(bob.badge).to_have_attribute("data-state", "connected", timeout=15_000)
    await until(lambda: bool(alice.frames("resumed")), timeout=15)
    await alice.in_call()

    # Bob saw nothing happen to Alice: no left, no second joined.
    await expect(bob.card("STAY").locator("li.chip")).to_have_text(["Alice (alice)"])
    assert bob.frames("left") == []
    assert len(bob.frames("joined")) == 1
    assert await alice.still_same_page()
    await expect(alice.page.locator("#error")).to_be_empty()
    assert alice.dialogs == []


async def test_a_server_restart_under_an_open_page_recovers_by_itself(
    restartable: RestartableLobby, tabs: Tabs
):
    alice = await tabs.login(restartable.http, "alice")
    bob = await tabs.login(restartable.http, "bob")
    await alice.mark()

    await restartable.stop()
    await expect(alice.badge).to_have_attribute("data-state", "reconnecting")
    await expect(alice.badge).to_have_text("Reconnecting…")
    await restartable.start()
    await expect(alice.badge).to_have_attribute("data-state", "connected", timeout=10_000)
    await expect(bob.badge).to_have_attribute("data-state", "connected", timeout=10_000)

    # The same page, live again: it sees what happens on the new server.
    await bob.create_room("AFTER", "Bob")
    await bob.in_call()
    await expect(alice.card("AFTER").locator("li.chip")).to_have_text(["Bob (bob)"])
    assert await alice.still_same_page()
    await expect(alice.page.locator("#error")).to_be_empty()
    assert alice.dialogs == []
