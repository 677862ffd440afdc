"""The pre-join check and the media marks, in real Chromium with its fake camera and microphone.

A publisher sees its camera, a moving level meter and the fake devices before it
enters a call, may switch either off, and finds its choice again after a reload; a
browser that refuses the camera explains why and still lets it join; viewers never see
the check. The marks that come from the pages' `media` reports (muted microphone,
shared screen) reach the other pages through the lobby. The OpenVidu stand-in carries
no media, so what crosses here is the lobby's part; real frames are in test_screen.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.conftest import LobbyFactory
from tests.e2e.tabs import CHROMIUM, CHROMIUM_ARGS, Tab, Tabs
from tests.openvidu_standin import OpenViduStandin

# No video track of the page's own feed is live and enabled (OpenVidu 2 sends a disabled one).
NO_PICTURE = """() => [...document.querySelectorAll('#videos video')]
  .flatMap((v) => v.srcObject?.getVideoTracks() ?? [])
  .every((t) => !t.enabled || t.readyState !== 'live')"""


def participant_id(tab: Tab) -> str:
    pid: str = tab.frames("token")[-1]["participant"]["id"]
    return pid


async def test_the_check_previews_the_fake_devices_and_remembers_the_choice(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    page = alice.page
    await alice.create_room("TUTORIAL", "Alice", check=False)
    await expect(page.locator("#prejoin")).to_be_visible()
    await expect(page.locator("#prejoin-room")).to_have_text("TUTORIAL")
    await expect(page.locator("#lobby-view")).to_be_hidden()
    assert alice.frames("token") == []  # not in the room before "Join now"
    # The camera plays, the meter moves with the fake microphone's beeps.
    await page.wait_for_function("() => document.getElementById('prejoin-video').videoWidth > 0")
    await page.wait_for_function("() => document.getElementById('prejoin-level').value > 0.05")
    # Chromium's fake devices, listed by name.
    await expect(page.locator("#prejoin-camera option")).to_have_text(["fake_device_0"])
    await expect(page.locator("#prejoin-microphone option")).to_have_text(
        ["Fake Default Audio Input", "Fake Audio Input 1", "Fake Audio Input 2"]
    )
    await expect(page.locator("#prejoin-speaker-field")).to_be_visible()  # setSinkId works here
    await expect(page.locator("#prejoin-speaker option")).to_have_count(3)
    await expect(page.locator("#prejoin-problem")).to_be_hidden()

    # Camera off and another microphone; Cancel keeps nothing, Join now remembers.
    await page.locator("#prejoin-video-on").uncheck()
    await expect(page.locator("#prejoin-no-video")).to_be_visible()
    await page.wait_for_function("() => !document.getElementById('prejoin-video').srcObject")
    await page.locator("#prejoin-microphone").select_option(label="Fake Audio Input 1")
    await page.wait_for_function("() => document.getElementById('prejoin-level').value > 0.05")
    chosen = await page.locator("#prejoin-microphone").input_value()
    await page.locator("#prejoin-join").click()
    await alice.in_call()
    # Joined with the camera off: no picture goes out, the tile and the button say so.
    await expect(alice.tile("local")).to_have_attribute("data-video", "off")
    await expect(page.locator("#toggle-camera")).to_have_text("Turn camera on")
    await expect(page.locator("#toggle-mic")).to_have_text("Mute microphone")
    assert await page.evaluate(NO_PICTURE)
    # The lobby was told: the participant's media is camera off, microphone on.
    me = participant_id(alice)
    await lobby_media_is(alice, me, {"camera": False, "microphone": True, "screen": False})

    # After a reload and a leave, the next check starts from the remembered choice.
    await page.click("#leave")
    await page.reload()
    await expect(alice.badge).to_have_attribute("data-state", "connected")
    await alice.create_room("AGAIN", "Alice", check=False)
    await expect(page.locator("#prejoin")).to_be_visible()
    await expect(page.locator("#prejoin-video-on")).not_to_be_checked()
    await expect(page.locator("#prejoin-audio-on")).to_be_checked()
    await expect(page.locator("#prejoin-microphone")).to_have_value(chosen)
    await expect(page.locator("#prejoin-no-video")).to_be_visible()
    # Cancel: back in the lobby, nothing joined, the preview stopped.
    await page.locator("#prejoin-cancel").click()
    await expect(page.locator("#lobby-view")).to_be_visible()
    await expect(page.locator("#prejoin")).to_be_hidden()
    assert [f["room"] for f in alice.frames("token")] == ["TUTORIAL"]


async def lobby_media_is(tab: Tab, pid: str, media: dict[str, bool]) -> None:
    """The lobby holds `media` for participant `pid` (its latest `media` event says so)."""
    await tab.page.wait_for_function(
        """([pid, media]) => window.lobbyDebug.rooms.some((room) => room.participants.some(
             (p) => p.id === pid && JSON.stringify(p.media) === JSON.stringify(media)))""",
        arg=[pid, media],
    )


@pytest.fixture
async def denying(browser: Browser) -> AsyncIterator[Tabs]:
    """Tabs in a Chromium that refuses cameras and microphones (no fake permission prompt)."""
    args = [arg for arg in CHROMIUM_ARGS if arg != "--use-fake-ui-for-media-stream"]
    launch = browser.browser_type.launch
    other = await launch(executable_path=str(CHROMIUM), headless=True, args=args)
    opened = Tabs(other)
    try:
        yield opened
    finally:
        await opened.close()
        await other.close()
    assert opened.remote_requests() == []
    assert opened.page_errors() == []


async def test_a_refused_camera_is_explained_and_joining_still_works(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs, denying: Tabs
):
    lobby = await make_lobby()
    alice = await denying.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    page = alice.page
    await alice.create_room("TUTORIAL", "Alice", check=False)
    problem = page.locator("#prejoin-problem")
    await expect(problem).to_be_visible()
    await expect(problem).to_contain_text("Your browser blocks the camera")
    await expect(problem).to_contain_text("Your browser blocks the microphone")
    await expect(problem).to_contain_text("You can still join")
    await expect(page.locator("#prejoin-video-on")).not_to_be_checked()
    await expect(page.locator("#prejoin-audio-on")).not_to_be_checked()
    await expect(page.locator("#prejoin-no-video")).to_be_visible()
    await page.locator("#prejoin-join").click()
    await alice.in_call()
    # In the call without media: no error, nothing published, Bob sees Alice's tile.
    await expect(page.locator("#call-problem")).to_be_hidden()
    await expect(page.locator("#publish-note")).to_be_hidden()
    await expect(page.locator("#toggle-camera")).to_be_hidden()
    await bob.join_listed("TUTORIAL", "Bob")
    await bob.in_call()
    await expect(bob.tile("remote").locator(".tile-label")).to_have_text("Alice (alice)")


async def test_viewers_skip_the_check(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    viewer = await tabs.login(lobby.http, "sub")
    await viewer.create_room("TUTORIAL", "Viewer", check=False)
    await viewer.in_call()
    await expect(viewer.page.locator("#prejoin")).to_be_hidden()
    await expect(viewer.page.locator("#toggle-screen")).to_be_hidden()
    assert await viewer.page.evaluate("window.getUserMediaCalls") == 0
    # A viewer's page cannot claim to send either: the lobby refuses it.
    refused = await viewer.page.evaluate(
        """() => new Promise((resolve) => {
             const ws = new WebSocket(location.origin.replace("http", "ws") + "/ws");
             ws.onmessage = (event) => {
               const msg = JSON.parse(event.data);
               if (msg.type === "welcome") {
                 ws.send(JSON.stringify({type: "join", room: "OTHER", nickname: "V", ref: 1}));
               } else if (msg.type === "token") {
                 ws.send(JSON.stringify({type: "media", camera: false, microphone: false,
                                          screen: true, ref: 2}));
               } else if (msg.type === "error") { resolve(msg.code); ws.close(); }
             };
           })"""
    )
    assert refused == "not_allowed"


async def test_a_muted_microphone_shows_on_everyones_chips_and_tiles(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    await bob.create_room("TUTORIAL", "Bob")
    await bob.in_call()
    bob_id = participant_id(bob)
    chip = alice.chip(bob_id)
    await expect(chip).to_have_attribute("data-call", "connected")
    await expect(chip).not_to_have_attribute("data-muted", "")
    await bob.page.click("#toggle-mic")
    await expect(bob.page.locator("#toggle-mic")).to_have_text("Unmute microphone")
    # Bob's own tile, and Alice's lobby chip, from the lobby's `media` event.
    await expect(bob.tile("local")).to_have_attribute("data-muted", "")
    await expect(bob.tile("local").locator(".tile-muted")).to_have_text("Microphone off")
    await expect(chip).to_have_attribute("data-muted", "")
    await expect(chip).to_have_attribute("aria-label", "Bob (bob), microphone off")
    # Alice joins later: the mark is on Bob's tile and chip at once (from `joined`/`welcome`).
    await alice.join_listed("TUTORIAL", "Alice")
    await alice.in_call()
    tile = alice.page.locator(f'#videos figure.tile[data-participant="{bob_id}"]')
    await expect(tile).to_have_attribute("data-muted", "")
    await expect(alice.chip(bob_id, "#call-participants")).to_have_attribute("data-muted", "")
    await bob.page.click("#toggle-mic")
    await expect(tile).not_to_have_attribute("data-muted", "")
    await expect(tile.locator(".tile-muted")).to_be_hidden()


async def test_sharing_a_screen_the_media_server_cannot_take_is_explained_and_not_reported(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    # The stand-in refuses every publish (it has no media server): the page's camera
    # never reaches the call, so neither can a screen in its place.
    lobby = await make_lobby()
    bob = await tabs.login(lobby.http, "bob")
    alice = await tabs.login(lobby.http, "alice")
    await bob.create_room("TUTORIAL", "Bob")
    await bob.in_call()
    await expect(bob.page.locator("#publish-note")).to_be_visible()
    share = bob.page.locator("#toggle-screen")
    await expect(share).to_have_text("Share screen")
    await share.click()
    await expect(bob.page.locator("#error")).to_have_text(
        "Your screen could not be shared (your camera does not reach the call)."
    )
    await expect(share).to_have_text("Share screen")
    await expect(bob.tile("screen")).to_have_count(0)
    # What the lobby holds for Bob never said "screen": Alice's chip has no sharing mark.
    bob_id = participant_id(bob)
    await lobby_media_is(alice, bob_id, {"camera": True, "microphone": True, "screen": False})
    await expect(alice.chip(bob_id)).not_to_have_attribute("data-sharing", "")
    assert not any(f["media"]["screen"] for f in alice.frames("media"))
