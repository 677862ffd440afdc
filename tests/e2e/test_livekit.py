"""The page with LiveKit calls: livekit-client opens the signalling socket with the lobby token.

No LiveKit server can run here, so the LiveKit stand-in takes the browser's side
too: it records each WebSocket upgrade at `LIVEKIT_URL` (path and `access_token`),
checks the token with the official `TokenVerifier`, and then closes the socket, as
it has no media server to fake LiveKit's protobuf signalling for. Real media through
a real LiveKit server is a manual check (README, "Checking calls by hand").
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import Lobby, LobbyFactory, until
from tests.e2e.tabs import Tab, Tabs
from tests.live import free_port
from tests.livekit_standin import LiveKitStandin, Upgrade, running_standin

KEY, SECRET = "APIlobby", "page-test-secret-0123456789-0123456789"


@pytest.fixture
async def livekit() -> AsyncIterator[LiveKitStandin]:
    async with running_standin(KEY, SECRET) as standin:
        yield standin


async def livekit_lobby(make_lobby: LobbyFactory, url: str, api_url: str, **settings: Any) -> Lobby:
    lobby: Lobby = await make_lobby(
        media="livekit",
        livekit_url=url,
        livekit_api_url=api_url,
        livekit_api_key=KEY,
        livekit_api_secret=SECRET,
        **settings,
    )
    return lobby


def opened(livekit: LiveKitStandin) -> list[Upgrade]:
    """The signalling sockets the stand-in accepted (tokens that verified)."""
    return [u for u in livekit.upgrades if u.accepted and not u.validate]


async def issued(tab: Tab, count: int) -> list[str]:
    """The tokens the lobby sent this tab, once its frames have reached the test (they may
    arrive after the stand-in saw the token used: Playwright reports frames asynchronously)."""
    await until(lambda: len(tab.issued_tokens()) >= count)
    return tab.issued_tokens()


def participant_of(tab: Tab) -> dict[str, Any]:
    participant: dict[str, Any] = tab.frames("token")[-1]["participant"]
    return participant


async def no_ice_servers(tab: Tab) -> None:
    """livekit-client's peer connections (made before it signals) name no STUN or TURN server."""
    for servers in await tab.page.evaluate("window.iceServersUsed"):
        assert servers == []


async def test_the_page_connects_to_livekit_with_exactly_the_token_the_lobby_issued(
    make_lobby: LobbyFactory, livekit: LiveKitStandin, tabs: Tabs
):
    lobby = await livekit_lobby(make_lobby, livekit.ws_url, livekit.url)
    alice = await tabs.login(lobby.http, "alice")
    assert (await alice.page.evaluate("window.lobbyDebug.media")) == {
        "kind": "livekit",
        "url": livekit.ws_url,
    }
    assert await alice.page.evaluate("window.LivekitClient.version") == "2.23.0"

    await alice.create_room("LKROOM", "Alice")
    await livekit.wait_for(lambda: len(opened(livekit)) == 1)
    [token] = await issued(alice, 1)
    [upgrade] = opened(livekit)
    # livekit-client's current signalling path, with the lobby's token, untouched.
    assert upgrade.path == "/rtc/v1"
    assert upgrade.token == token
    claims = upgrade.claims
    assert claims is not None
    assert claims.video is not None
    me = participant_of(alice)
    assert claims.identity == me["id"]
    assert claims.name == "Alice"
    assert json.loads(claims.metadata) == {"user": "alice", "role": "PUBLISHER"}
    assert (claims.video.room_join, claims.video.room) == (True, "LKROOM")
    assert claims.video.can_publish is True

    # The stand-in closes the socket: the page says so and offers Retry.
    problem = alice.page.locator("#call-problem-text")
    retry = alice.page.locator("#call-retry")
    await alice.in_call("error")
    await expect(problem).to_contain_text("Could not connect to the video call")
    await expect(retry).to_be_visible()
    await expect(alice.page.locator("#error")).to_be_empty()
    await expect(alice.badge).to_have_attribute("data-state", "connected")
    # A publisher's page asked for the camera (a viewer's never does, below), and let it go.
    await alice.page.wait_for_function("window.getUserMediaCalls > 0")
    await expect(alice.tile("local").locator("video")).to_have_count(0)
    await expect(alice.tile("local").locator(".tile-label")).to_have_text("Alice (alice)")

    # Retry asks the lobby for a fresh token and connects with it.
    await retry.click()
    await livekit.wait_for(lambda: len(opened(livekit)) == 2)
    tokens = await issued(alice, 2)
    assert len(tokens) == 2
    assert alice.frames("resumed")[-1]["token"] == tokens[1]
    again = opened(livekit)[1]
    assert again.token == tokens[1]
    assert again.claims is not None
    assert again.claims.identity == me["id"]
    await alice.in_call("error")
    await expect(retry).to_be_visible()
    await no_ice_servers(alice)


async def test_a_viewer_connects_without_publish_rights_and_never_asks_for_a_camera(
    make_lobby: LobbyFactory, livekit: LiveKitStandin, tabs: Tabs
):
    lobby = await livekit_lobby(make_lobby, livekit.ws_url, livekit.url)
    sub = await tabs.login(lobby.http, "sub")
    await sub.create_room("LKROOM", "Sam")
    await livekit.wait_for(lambda: len(opened(livekit)) == 1)
    [upgrade] = opened(livekit)
    assert upgrade.token == (await issued(sub, 1))[0]
    claims = upgrade.claims
    assert claims is not None
    assert claims.video is not None
    assert claims.identity == participant_of(sub)["id"]
    assert (claims.video.room, claims.video.can_publish) == ("LKROOM", False)
    await sub.in_call("error")
    await expect(sub.page.locator("#subscriber-note")).to_be_visible()
    await expect(sub.page.locator("#toggle-camera")).to_be_hidden()
    assert await sub.page.evaluate("window.getUserMediaCalls") == 0
    await no_ice_servers(sub)


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("refused", "The media server refused to let you into this call"),
        ("unreachable", "The media server cannot be reached right now"),
    ],
)
async def test_livekit_refusing_the_token_or_unreachable_is_explained_with_retry(
    make_lobby: LobbyFactory, tabs: Tabs, where: str, said: str
):
    # Another secret than the lobby's: LiveKit refuses the token, as a misconfigured
    # server would. Or nothing listens at LIVEKIT_URL at all.
    async with running_standin(KEY, "another-secret-0123456789-0123456789") as stranger:
        url = stranger.ws_url if where == "refused" else f"ws://127.0.0.1:{free_port()}"
        lobby = await livekit_lobby(make_lobby, url, stranger.url)
        alice = await tabs.login(lobby.http, "alice")
        await alice.create_room("LKROOM", "Alice")
        await alice.in_call("error")
        await expect(alice.page.locator("#call-problem-text")).to_contain_text(said)
        await expect(alice.page.locator("#call-retry")).to_be_visible()
        if where == "refused":
            # The upgrade was refused, and livekit-client asked the server why.
            [token] = await issued(alice, 1)
            assert [(u.path, u.token, u.accepted) for u in stranger.upgrades] == [
                ("/rtc/v1", token, False),
                ("/rtc/v1/validate", token, False),
            ]
        else:
            assert stranger.upgrades == []


async def test_a_reload_rejoins_livekit_as_the_same_participant_and_nobody_sees_it(
    make_lobby: LobbyFactory, livekit: LiveKitStandin, tabs: Tabs
):
    lobby = await livekit_lobby(make_lobby, livekit.ws_url, livekit.url, reconnect_grace=5.0)
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    await alice.create_room("LKROOM", "Alice")
    await bob.join_listed("LKROOM", "Bob")
    await livekit.wait_for(lambda: len(opened(livekit)) == 2)
    await issued(alice, 1)
    alice_id = participant_of(alice)["id"]
    await expect(bob.page.locator("#call-participants li.chip")).to_have_count(2)
    seen_by_bob = len(bob.lobby_frames)
    await bob.watch_removals(f'[data-participant="{alice_id}"]')

    await alice.page.reload()
    # The reloaded page takes its participant back and opens LiveKit with a fresh token:
    # the same identity, so a LiveKit server replaces the connection the old page left.
    await livekit.wait_for(lambda: len(opened(livekit)) == 3)
    await issued(alice, 2)  # the reloaded page's `resumed`, with its token
    resumed = alice.frames("resumed")[-1]
    assert resumed["participant"]["id"] == alice_id
    rejoined = opened(livekit)[2]
    assert rejoined.token == resumed["token"]
    assert rejoined.claims is not None
    assert rejoined.claims.identity == alice_id
    await alice.in_call("error")
    await expect(alice.page.locator("#call-room")).to_have_text("LKROOM")
    # Bob saw nobody leave or join: no event but, perhaps, Alice's page saying anew what it
    # sends (`media`: the stand-in takes no publish, so what it says depends on how far
    # the page got); and Alice's tile and chip never went away.
    assert [f["type"] for f in bob.lobby_frames[seen_by_bob:] if f["type"] != "media"] == []
    assert await bob.removed() == []
