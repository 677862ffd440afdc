"""Screen sharing, camera-off joins, muted and speaking marks in peer-to-peer calls: real frames.

Chromium shares its fake screen (1280x720, told apart from the 640x480 fake camera)
without a picker under `--use-fake-ui-for-media-stream`; its fake microphone beeps,
which is what the speaking highlight hears. Like test_p2p.py, these run only in a
loopback-only network namespace (`scripts/loopback-only`).
"""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.conftest import LobbyFactory
from tests.e2e.tabs import Tab, Tabs
from tests.e2e.test_p2p import (
    MEDIA_TIMEOUT,
    _media_can_flow,  # noqa: F401 (autouse: skip or fail outside the namespace)
    alice_and_bob_in_a_call,
    participant_id,
    peer_to_peer,
    sees_video_of,
)

pytestmark = pytest.mark.loopback_rtc

# The frames a <video> has shown so far.
SHOWN = "(v) => v.getVideoPlaybackQuality().totalVideoFrames"
# Video tracks this page sends on its peer connections.
VIDEO_SENDERS = """() => window.peerConnections
  .filter((pc) => pc.connectionState !== 'closed')
  .flatMap((pc) => pc.getSenders())
  .filter((s) => s.track?.kind === 'video' && s.track.readyState === 'live').length"""


async def plays(tab: Tab, selector: str, width: int) -> None:
    """The video at `selector` is `width` pixels wide and keeps showing new frames."""
    video = tab.page.locator(selector)
    await expect(video).to_have_count(1, timeout=MEDIA_TIMEOUT)
    await tab.page.wait_for_function(
        "([s, w]) => document.querySelector(s)?.videoWidth === w",
        arg=[selector, width],
        timeout=MEDIA_TIMEOUT,
    )
    before: int = await video.evaluate(SHOWN)
    await tab.page.wait_for_function(
        f"([s, n]) => ({SHOWN})(document.querySelector(s)) >= n",
        arg=[selector, before + 10],
        timeout=MEDIA_TIMEOUT,
    )


async def test_a_shared_screen_is_a_second_tile_until_the_browser_stops_it(
    make_lobby: LobbyFactory, tabs: Tabs
):
    alice, bob = await alice_and_bob_in_a_call(make_lobby, tabs)
    a, b = participant_id(alice), participant_id(bob)
    await sees_video_of(bob, a)
    await sees_video_of(alice, b)
    assert await alice.page.evaluate(VIDEO_SENDERS) == 1

    await alice.page.click("#toggle-screen")
    await expect(alice.page.locator("#toggle-screen")).to_have_text("Stop sharing")
    await expect(alice.tile("screen").locator(".tile-status")).to_have_text(
        "You are sharing your screen"
    )
    # Bob: Alice's camera in her tile, her screen in a second tile right after it.
    screen = f'#videos figure.tile[data-screen-of="{a}"]'
    await plays(bob, f"{screen} video", 1280)
    await plays(bob, f'#videos figure.tile[data-participant="{a}"] video', 640)
    await expect(bob.page.locator(screen).locator(".tile-label")).to_have_text(
        "Alice (alice): screen"
    )
    tiles = bob.page.locator("#videos figure.tile")
    await expect(tiles).to_have_count(3)
    assert await tiles.nth(2).get_attribute("data-screen-of") == a  # after Bob's own, Alice's
    # The lobby's list knows: Bob's chip for Alice carries the sharing mark.
    chip = bob.chip(a, "#call-participants")
    await expect(chip).to_have_attribute("data-sharing", "")
    await expect(chip).to_have_attribute("aria-label", "Alice (alice), sharing a screen")
    assert await alice.page.evaluate(VIDEO_SENDERS) == 2

    # The browser's own "Stop sharing" ends the track.
    await alice.page.locator('#videos figure.tile[data-tile="screen"] video').evaluate(
        """(video) => {
             const [track] = video.srcObject.getVideoTracks();
             track.stop();
             track.dispatchEvent(new Event("ended"));
           }"""
    )
    await expect(bob.page.locator(screen)).to_have_count(0)
    await expect(chip).not_to_have_attribute("data-sharing", "")
    await expect(alice.page.locator("#toggle-screen")).to_have_text("Share screen")
    await expect(alice.tile("screen")).to_have_count(0)
    await alice.page.wait_for_function(f"() => ({VIDEO_SENDERS})() === 1")
    await plays(bob, f'#videos figure.tile[data-participant="{a}"] video', 640)


async def test_a_camera_off_join_sends_no_picture_and_marks_follow_the_microphone(
    make_lobby: LobbyFactory, tabs: Tabs
):
    url = await peer_to_peer(make_lobby)
    alice = await tabs.login(url, "alice")
    bob = await tabs.login(url, "bob")
    await alice.create_room("TUTORIAL", "Alice")
    await alice.in_call()
    await bob.join_listed("TUTORIAL", "Bob", check=False)
    await bob.page.locator("#prejoin-video-on").uncheck()
    await expect(bob.page.locator("#prejoin-no-video")).to_be_visible()
    await bob.page.locator("#prejoin-join").click()
    await bob.in_call()
    a, b = participant_id(alice), participant_id(bob)
    await sees_video_of(bob, a)
    # Bob sends no picture at all, and Alice's tile of him says why.
    bobs_tile = alice.page.locator(f'#videos figure.tile[data-participant="{b}"]')
    await expect(bobs_tile).to_have_attribute("data-video", "off")
    await expect(bobs_tile.locator(".tile-status")).to_have_text("Camera off")
    assert await bob.page.evaluate(VIDEO_SENDERS) == 0

    # His fake microphone beeps: Alice sees him speaking, named for screen readers.
    await expect(bobs_tile).to_have_attribute("data-speaking", "", timeout=MEDIA_TIMEOUT)
    await expect(bobs_tile.locator(".tile-speaking")).to_have_text("Speaking")
    await expect(bob.tile("local")).to_have_attribute("data-speaking", "", timeout=MEDIA_TIMEOUT)
    # Muted: the mark on his tile and chip for Alice, and no more speaking.
    await bob.page.click("#toggle-mic")
    await expect(bobs_tile).to_have_attribute("data-muted", "")
    await expect(bobs_tile.locator(".tile-muted")).to_be_visible()
    await expect(bobs_tile).not_to_have_attribute("data-speaking", "")
    await expect(alice.chip(b, "#call-participants")).to_have_attribute("data-muted", "")
    await expect(bob.tile("local")).to_have_attribute("data-muted", "")
    await expect(bob.tile("local")).to_have_attribute("data-video", "off")

    # The camera turned on later is asked for now and reaches Alice (a renegotiation).
    await bob.page.click("#toggle-camera")
    await expect(bob.page.locator("#toggle-camera")).to_have_text("Turn camera off")
    await sees_video_of(alice, b)
    await expect(bobs_tile).to_have_attribute("data-video", "on")
    await plays(bob, '#videos figure.tile[data-tile="local"] video', 640)  # and his own tile
    assert await bob.page.evaluate(VIDEO_SENDERS) == 1
