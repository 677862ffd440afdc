"""The call never claims more than is true, and a denied camera is retried in place.

These run outside the loopback-only namespace: no media flows here. The
peer-to-peer pages' connections gather no ICE candidates at all (see
`NO_CANDIDATES`), so their links can never connect, which is exactly what a
call between two networks without STUN/TURN looks like to the pages.
"""

from __future__ import annotations

import time

from playwright.async_api import expect

from tests.conftest import LobbyFactory
from tests.e2e.tabs import Tab, Tabs

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
