"""The call never claims more than is true, and a denied camera is retried in place.

These run outside the loopback-only namespace: no media flows here. The
peer-to-peer pages' connections gather no ICE candidates at all (see
`NO_CANDIDATES`), so their links can never connect, which is exactly what a
call between two networks without STUN/TURN looks like to the pages.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.conftest import LobbyFactory
from tests.e2e.tabs import CHROMIUM, CHROMIUM_ARGS, Tab, Tabs, loopback_only

# Every RTCPeerConnection of the page gets `iceTransportPolicy: "relay"`: by the
# WebRTC spec it then gathers relay candidates only, which need a TURN server;
# the lobby gives none, so it gathers nothing. Without a candidate there is no
# STUN check, DTLS or media packet at all, to the machine's external address or
# anywhere else (the test asserts the pages saw no candidate). Chromium's
# `--force-webrtc-ip-handling-policy=disable_non_proxied_udp` switch was tried
# first: Chromium 156 still gathered host candidates on eth0 with it.
NO_CANDIDATES = """
window.iceCandidates = [];
const Native = window.RTCPeerConnection;
window.RTCPeerConnection = function (config, ...rest) {
  const pc = new Native({ ...config, iceTransportPolicy: "relay" }, ...rest);
  pc.addEventListener("icecandidate", (e) => {
    if (e.candidate?.candidate) window.iceCandidates.push(e.candidate.candidate);
  });
  return pc;
};
window.RTCPeerConnection.prototype = Native.prototype;
Object.setPrototypeOf(window.RTCPeerConnection, Native);
"""

# A tile of this kind ("local", "remote") plays a video with a picture.
SIZED_VIDEO = """(kind) =>
  document.querySelector(`#videos figure.tile[data-tile=${kind}] video`)?.videoWidth > 0"""


async def p2p_pair(make_lobby: LobbyFactory, tabs: Tabs) -> tuple[Tab, Tab]:
    """Alice and Bob in a peer-to-peer lobby whose pages can reach nobody over WebRTC."""
    lobby = await make_lobby(media="p2p")
    alice = await tabs.open("alice")
    bob = await tabs.open("bob")
    for tab in (alice, bob):
        await tab.context.add_init_script(NO_CANDIDATES)
        await tab.login(lobby.http, tab.name)
    return alice, bob


async def test_a_peer_that_cannot_be_reached_is_said_so_within_15_seconds(
    make_lobby: LobbyFactory, tabs: Tabs
):
    """Peer to peer between networks without STUN/TURN: the pages say so, with the fix."""
    alice, bob = await p2p_pair(make_lobby, tabs)
    await alice.create_room("FAR", "Alice")
    await alice.in_call()
    # Alone: nothing to wait for.
    await expect(alice.page.locator("#call-status")).to_have_text("Connected to the call")
    await bob.join_listed("FAR", "Bob")
    joined = time.monotonic()
    await bob.in_call()

    # Until a link is up, neither page claims to be connected.
    for tab in (alice, bob):
        tile = tab.tile("remote")
        status = tab.page.locator("#call-status")
        await expect(status).to_have_text("Connecting to the call…")
        await expect(tile).to_have_attribute("data-link", "connecting")
        await expect(tile.locator(".tile-status")).to_have_text("Connecting…")

    # Then, within 15 s of joining, both say in words that the other cannot be reached.
    for tab, other in ((alice, "Bob"), (bob, "Alice")):
        tile = tab.tile("remote")
        left = max(0.0, 15 - (time.monotonic() - joined))
        await expect(tile).to_have_attribute("data-link", "unreachable", timeout=left * 1000)
        await expect(tile.locator(".tile-status")).to_contain_text(f"Can't reach {other}")
        status = tab.page.locator("#call-status")
        await expect(status).to_contain_text(f"Can't reach {other}")
        await expect(status).to_contain_text("LOBBY_ICE_SERVERS")
        await expect(tab.page.locator("#call")).to_have_attribute("data-media", "unreachable")
        # The pages really gathered nothing (so nothing was sent off loopback).
        assert await tab.page.evaluate("window.iceCandidates") == []
        assert await tab.page.evaluate("window.peerConnections.length") >= 1


@pytest.fixture
async def asking_browser(browser: Browser) -> AsyncIterator[Browser]:
    """A Chromium with fake devices whose pages must be given camera and microphone.

    Without `--use-fake-ui-for-media-stream` nobody answers the permission
    prompt of a headless Chromium: getUserMedia fails with NotAllowedError
    unless the context was granted "camera" and "microphone". (`browser` first:
    it skips or fails the test where there is no Chromium.)
    """
    args = [arg for arg in CHROMIUM_ARGS if arg != "--use-fake-ui-for-media-stream"]
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=args
        )
        yield launched
        await launched.close()


DEVICES = ["camera", "microphone"]


@pytest.mark.parametrize("media", ["p2p", "openvidu"])
async def test_a_denied_camera_is_explained_and_retried_in_place(
    make_lobby: LobbyFactory, asking_browser: Browser, media: str
):
    """Through the browser's own getUserMedia (p2p) and openvidu-browser's (OpenVidu 2,
    whose stand-in then refuses the publish itself: that is another note, below)."""
    lobby = await make_lobby(media=media)
    opened = Tabs(asking_browser)
    try:
        alice = await opened.open("alice", permissions=DEVICES)
        await alice.login(lobby.http, "alice")
        await alice.create_room("DENY", "Alice", check=False)
        # The check has its camera and microphone (so it leaves both switched on)…
        await alice.page.wait_for_function(
            "() => document.getElementById('prejoin-video').srcObject?.getTracks().length === 2"
        )
        await expect(alice.page.locator("#prejoin-video-on")).to_be_checked()
        await expect(alice.page.locator("#prejoin-audio-on")).to_be_checked()
        # …then the person blocks the site's camera and microphone just as the call starts.
        await alice.context.clear_permissions()
        await alice.pass_prejoin()
        await alice.in_call()

        panel = alice.page.locator("#device-problem")
        await expect(panel).to_be_visible()
        await expect(panel).to_have_attribute("role", "alert")
        await expect(panel).to_contain_text("blocks the camera and microphone")
        await expect(panel).to_contain_text("address bar")
        retry = alice.page.get_by_role("button", name="Try again")
        await expect(retry).to_be_visible()
        await expect(alice.page.locator("#toggle-camera")).to_be_hidden()
        await alice.mark()

        # Still denied: the panel stays, with the same advice.
        await retry.click()
        await expect(panel).to_be_visible()
        await expect(panel).to_contain_text("blocks the camera and microphone")

        # Allowed in the browser: Try again brings the camera into this very call.
        await alice.context.grant_permissions(DEVICES, origin=lobby.http)
        await retry.click()
        await expect(panel).to_be_hidden()
        await expect(alice.page.locator("#toggle-camera")).to_be_visible()
        await alice.page.wait_for_function(SIZED_VIDEO, arg="local")
        await alice.in_call()
        assert await alice.still_same_page()
        assert len(alice.frames("token")) == 1  # the same call: no second join
        assert opened.remote_requests() == []
        assert opened.page_errors() == []
    finally:
        await opened.close()


@pytest.mark.loopback_rtc
async def test_a_peer_whose_media_stops_is_shown_reconnecting_not_frozen(
    make_lobby: LobbyFactory, tabs: Tabs
):
    """Real media on loopback (scripts/loopback-only): connected only once it flows, then
    Bob's tab closes within the grace period and Alice's page dims his tile and says so."""
    if not loopback_only():
        pytest.fail("run this under scripts/loopback-only (pytest -m loopback_rtc)")
    lobby = await make_lobby(media="p2p", reconnect_grace=60.0)
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    await alice.create_room("LIVE", "Alice")
    await alice.in_call()
    await bob.join_listed("LIVE", "Bob")
    await bob.in_call()
    tile = alice.tile("remote")
    status = alice.page.locator("#call-status")
    await expect(tile).to_have_attribute("data-link", "connected", timeout=15_000)
    await expect(status).to_have_text("Connected to the call")
    await alice.page.wait_for_function(SIZED_VIDEO, arg="remote")

    await bob.close()  # within the grace period: the lobby keeps him, his media is gone
    await expect(tile).to_have_attribute("data-link", "reconnecting", timeout=30_000)
    await expect(tile.locator(".tile-status")).to_have_text("Bob is reconnecting…")
    await expect(status).to_contain_text("Bob is reconnecting…")
    opacity = await tile.locator(".tile-media").evaluate("(m) => getComputedStyle(m).opacity")
    assert float(opacity) < 1  # dimmed, not a frozen last frame at full strength
