"""`make screenshots`: drive the real pages and write the pictures in docs/img/.

lobby.png (the lobby), prejoin.png (the pre-join check), call.png (a call),
moderation.png (a moderator's controls), screen.png (a call with a shared screen),
call-chat.png (that call with its chat open), call-phone.png (the call on a phone,
entered through the room's address), call-connecting.png (a call whose peer is not
reached yet) and lobby-reconnecting.png (the lobby while its server restarts).

Everything runs on this machine: a lobby server with peer-to-peer rooms (in this
process, like the tests) and Debian's Chromium with fake cameras, whose pages
really send each other video. `make screenshots` runs it in a loopback-only
network namespace (`scripts/loopback-only`), the only place Chromium sends
WebRTC media on this machine.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the stand-in and the test helpers live in tests/

# After the path is set: these come from tests/.
from lobby.app import create_app, media_backend  # noqa: E402
from lobby.config import Settings  # noqa: E402
from lobby.server import uvicorn_config  # noqa: E402
from lobby.store.users import UserStore  # noqa: E402
from tests.conftest import PASSWORD, Client, Lobby, make_users  # noqa: E402
from tests.conftest import test_settings as lobby_settings  # noqa: E402
from tests.e2e.restart import RestartableLobby  # noqa: E402
from tests.e2e.tabs import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.e2e.test_call_states import NO_CANDIDATES  # noqa: E402
from tests.live import LiveServer  # noqa: E402
from tests.openvidu_standin import running_standin  # noqa: E402

IMAGES = ROOT / "docs" / "img"
VIEWPORT: ViewportSize = {"width": 1200, "height": 760}
# (user, role): people beyond the test users alice, bob, sub and mod.
PEOPLE = [
    ("carol", "PUBLISHER"),
    ("dave", "SUBSCRIBER"),
    ("erin", "PUBLISHER"),
    ("fay", "PUBLISHER"),
    ("frank", "PUBLISHER"),
    ("gina", "PUBLISHER"),
]
PHONE: ViewportSize = {"width": 375, "height": 667}
# Who sits in which room before Alice looks (lobby sockets that never join the call).
SEATED = [
    ("carol", "standup", "Carol"),
    ("dave", "standup", "Dave"),
    ("erin", "design-review", "Erin"),
]


async def open_page(
    browser: Browser,
    base_url: str,
    user: str,
    viewport: ViewportSize = VIEWPORT,
    script: str = "",
) -> Page:
    """A new browser context, signed in through the login form, on the live lobby."""
    context = await browser.new_context(viewport=viewport, device_scale_factor=1)
    if script:
        await context.add_init_script(script)
    page = await context.new_page()
    await page.goto(base_url + "/")
    await page.fill("input[name=user]", user)
    await page.fill("input[name=pass]", PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#connection-state")).to_have_attribute("data-state", "connected")
    return page


async def join(page: Page, room: str, nickname: str) -> None:
    await page.fill("#room-input", room)
    await page.fill("#nickname-input", nickname)
    await page.click("#join-submit")
    if await page.locator("#main").get_attribute("data-role") != "SUBSCRIBER":
        await page.locator("#prejoin-join").click()  # the pre-join check, as it is
    await expect(page.locator("#call")).to_have_attribute("data-state", "connected")


async def shoot(browser: Browser, lobby: Lobby) -> None:
    clients: list[Client] = []
    for user, room, nickname in SEATED:
        client = await lobby.client(user)
        await client.join(room, nickname)
        clients.append(client)
    bob = await open_page(browser, lobby.http, "bob")
    await join(bob, "TUTORIAL", "Bob")
    viewer = await open_page(browser, lobby.http, "sub")
    await join(viewer, "TUTORIAL", "Sam")

    alice = await open_page(browser, lobby.http, "alice")
    await expect(alice.locator("#rooms li.room-card")).to_have_count(3)
    await alice.fill("#nickname-input", "Alice")
    await alice.locator("#nickname-input").blur()
    await alice.screenshot(path=str(IMAGES / "lobby.png"))

    await alice.locator('li.room-card[data-room="TUTORIAL"] button.room-join').click()
    # The pre-join check: her camera playing, the meter up on a beep of the fake microphone.
    await alice.wait_for_function(
        "() => document.getElementById('prejoin-video').currentTime > 0.5"
        " && document.getElementById('prejoin-level').value > 0.4"
    )
    await alice.locator("#prejoin-join").focus()
    await alice.screenshot(path=str(IMAGES / "prejoin.png"))
    await alice.locator("#prejoin-join").click()
    await expect(alice.locator("#call")).to_have_attribute("data-state", "connected")
    # A few frames of her camera and of Bob's (from his browser), then the picture.
    await alice.wait_for_function(
        "() => [...document.querySelectorAll('figure.tile video')].filter("
        " (v) => v.readyState >= 2 && v.currentTime > 0.5).length === 2"
    )
    await alice.screenshot(path=str(IMAGES / "call.png"), full_page=True)

    # A moderator's lobby: kick on each chip, lock and close on each card; standup locked
    # (the mark everyone sees).
    mod = await open_page(browser, lobby.http, "mod")
    await expect(mod.locator("#rooms li.room-card")).to_have_count(3)
    standup = mod.locator('li.room-card[data-room="standup"]')
    await standup.get_by_role("button", name="Lock standup").click()
    await expect(standup.locator(".room-lock")).to_be_visible()
    await mod.fill("#nickname-input", "Mo")
    await mod.locator("#nickname-input").blur()
    await mod.screenshot(path=str(IMAGES / "moderation.png"))
    # Alice shares her screen (Chromium's fake one) and mutes; Bob sees both.
    await alice.click("#toggle-screen")
    await alice.click("#toggle-mic")
    await bob.wait_for_function(
        "() => { const v = document.querySelector('figure.tile[data-screen-of] video');"
        " return v && v.readyState >= 2 && v.currentTime > 0.5; }"
    )
    await expect(bob.locator("#call-participants li.chip[data-muted]")).to_have_count(1)
    await bob.locator("#toggle-screen").focus()
    await bob.screenshot(path=str(IMAGES / "screen.png"), full_page=True)
    await chat(alice, bob, viewer)
    await phone(browser, lobby)
    await connecting(browser, lobby)
    for client in clients:
        await client.close()


async def connecting(browser: Browser, lobby: Lobby) -> None:
    """Frank and Gina, whose connections find no way to each other (relay only, no relay
    server, as tests/e2e/test_call_states.py): a call still connecting, for its first 10 s."""
    frank = await open_page(browser, lobby.http, "frank", script=NO_CANDIDATES)
    gina = await open_page(browser, lobby.http, "gina", script=NO_CANDIDATES)
    await join(frank, "far-away", "Frank")
    await join(gina, "far-away", "Gina")
    await expect(frank.locator("#call")).to_have_attribute("data-media", "connecting")
    await expect(frank.locator("figure.tile[data-tile=remote]")).to_have_attribute(
        "data-link", "connecting"
    )
    await frank.screenshot(path=str(IMAGES / "call-connecting.png"), full_page=True)
    await gina.context.close()
    await frank.context.close()


async def reconnecting(browser: Browser, settings: Settings, users: UserStore) -> None:
    """The lobby while its server is away: a second server, stopped under Alice's page."""
    server = RestartableLobby(
        lambda: create_app(settings, users=users, media=media_backend(settings)), settings
    )
    await server.start()
    try:
        bob = await open_page(browser, server.http, "bob")
        await join(bob, "standup", "Bob")
        alice = await open_page(browser, server.http, "alice")
        await expect(alice.locator("#rooms li.room-card")).to_have_count(1)
        await server.stop()
        await expect(alice.locator("#connection-banner")).to_be_visible()
        await expect(alice.locator("#rooms-stale")).to_be_visible()
        await alice.screenshot(path=str(IMAGES / "lobby-reconnecting.png"))
        await alice.context.close()
        await bob.context.close()
    finally:
        await server.stop()


async def say(page: Page, text: str) -> None:
    await page.fill("#chat-input", text)
    await page.press("#chat-input", "Enter")
    await expect(page.locator("#chat-input")).to_have_value("")


async def chat(alice: Page, bob: Page, viewer: Page) -> None:
    """The call again with the chat open: a few messages, one of them markup shown as typed."""
    await bob.click("#chat-toggle")
    await say(bob, "Morning! Can everyone hear me?")
    await viewer.click("#chat-toggle")
    await say(viewer, "Loud and clear. I'm only watching today.")
    await say(bob, "Tip: <b>tags</b> show as typed, and https://example.com stays plain text.")
    await expect(alice.locator("#chat-toggle .chat-badge")).to_have_text("3")
    await alice.click("#chat-toggle")
    await say(alice, "Great, let's start.")
    await expect(alice.locator("#chat-log .chat-text")).to_have_count(4)
    await alice.locator("#chat-input").blur()
    await alice.screenshot(path=str(IMAGES / "call-chat.png"), full_page=True)


async def phone(browser: Browser, lobby: Lobby) -> None:
    """Fay opens the room's address on her phone: the pre-join check, then the call."""
    page = await open_page(browser, lobby.http, "fay", PHONE)
    await page.goto(lobby.http + "/room/TUTORIAL")
    await page.locator("#prejoin-join").click()
    await expect(page.locator("#call")).to_have_attribute("data-state", "connected")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('figure.tile video')].filter("
        " (v) => v.readyState >= 2 && v.currentTime > 0.5).length >= 2"
    )
    await page.screenshot(path=str(IMAGES / "call-phone.png"))


async def main() -> None:
    if not CHROMIUM.exists():
        sys.exit(f"screenshots need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    IMAGES.mkdir(parents=True, exist_ok=True)
    async with running_standin() as standin:  # unused in p2p mode; the settings want a URL
        settings = lobby_settings(standin, media="p2p", reconnect_grace=10.0, log_level="warning")
        users = make_users()
        for user, role in PEOPLE:
            users.add(user, role, PASSWORD)
        app = create_app(settings, users=users, media=media_backend(settings))
        async with (
            LiveServer(config=uvicorn_config(app, settings)) as live,
            async_playwright() as p,
        ):
            browser = await p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                await shoot(browser, Lobby(live, app, settings))
                await reconnecting(browser, settings, users)
            finally:
                await browser.close()
    names = (
        "lobby.png",
        "prejoin.png",
        "call.png",
        "moderation.png",
        "screen.png",
        "call-chat.png",
        "call-phone.png",
        "call-connecting.png",
        "lobby-reconnecting.png",
    )
    for name in names:
        path = IMAGES / name
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    asyncio.run(main())
