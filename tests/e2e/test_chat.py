"""Room chat in real Chromium: two pages in one call, the panel, the unread count, history.

The calls run on the OpenVidu stand-in (as in test_call.py); chat itself needs no
media, only the lobby socket.
"""

from __future__ import annotations

from playwright.async_api import Locator, expect

from tests.conftest import LobbyFactory
from tests.e2e.tabs import Tab, Tabs
from tests.openvidu_standin import OpenViduStandin

HOSTILE = '<b>x</b><img src=x onerror="window.pwned = 1"> https://example.com/?a=1&b=2'


async def in_a_call(make_lobby: LobbyFactory, tabs: Tabs) -> tuple[Tab, Tab, str]:
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    await alice.create_room("TUTORIAL", "Alice")
    await alice.in_call()
    await bob.join_listed("TUTORIAL", "Bob")
    await bob.in_call()
    return alice, bob, str(lobby.http)


async def send(tab: Tab, text: str) -> None:
    """Type `text` into the open chat panel and press Enter."""
    await tab.page.fill("#chat-input", text)
    await tab.page.press("#chat-input", "Enter")
    await expect(tab.page.locator("#chat-input")).to_have_value("")


def badge(tab: Tab) -> Locator:
    return tab.page.locator("#chat-toggle .chat-badge")


def texts(tab: Tab) -> Locator:
    return tab.page.locator("#chat-log .chat-text")


async def test_a_message_reaches_the_other_page_as_text_never_html(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
) -> None:
    alice, bob, _ = await in_a_call(make_lobby, tabs)
    await expect(bob.page.locator("#chat-panel")).to_be_hidden()
    await expect(badge(bob)).to_be_hidden()
    await alice.page.click("#chat-toggle")
    await expect(alice.page.locator("#chat-input")).to_be_focused()
    await send(alice, "  " + HOSTILE + "  ")
    await expect(texts(alice)).to_have_text([HOSTILE])
    # Bob's panel is closed: his Chat button counts the message.
    await expect(badge(bob)).to_have_text("1")
    await expect(bob.page.locator("#chat-toggle")).to_have_attribute("aria-label", "Chat, 1 unread")
    await bob.page.click("#chat-toggle")
    await expect(badge(bob)).to_be_hidden()
    await expect(texts(bob)).to_have_text([HOSTILE])
    await expect(bob.page.locator("#chat-log .chat-name")).to_have_text(["Alice (alice)"])
    for tab in (alice, bob):
        log = tab.page.locator("#chat-log")
        # Markup and links stayed characters: no element came out of the text.
        assert await log.locator("b, img, a").count() == 0
        assert await tab.page.evaluate("window.pwned") is None
        await expect(log).to_have_attribute("role", "log")
        await expect(log).to_have_attribute("aria-live", "polite")


async def test_the_unread_count_grows_while_closed_and_clears_on_open(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
) -> None:
    alice, bob, _ = await in_a_call(make_lobby, tabs)
    await alice.page.click("#chat-toggle")
    for n in range(3):
        await send(alice, f"message {n}")
        await expect(badge(bob)).to_have_text(str(n + 1))
    await expect(badge(alice)).to_be_hidden()  # open, and her own
    # Keyboard: the toggle opens the panel and focuses the box; Close hands focus back.
    await bob.page.focus("#chat-toggle")
    await bob.page.keyboard.press("Enter")
    await expect(bob.page.locator("#chat-input")).to_be_focused()
    await expect(badge(bob)).to_be_hidden()
    await expect(texts(bob)).to_have_text([f"message {n}" for n in range(3)])
    await bob.page.get_by_role("button", name="Close the chat").click()
    await expect(bob.page.locator("#chat-toggle")).to_be_focused()
    await expect(bob.page.locator("#chat-toggle")).to_have_attribute("aria-expanded", "false")
    await send(alice, "one more")
    await expect(badge(bob)).to_have_text("1")
    await bob.page.click("#chat-toggle")
    await expect(badge(bob)).to_be_hidden()
    await expect(texts(bob)).to_have_count(4)


async def test_a_reloaded_page_and_a_newcomer_get_the_history(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
) -> None:
    alice, bob, url = await in_a_call(make_lobby, tabs)
    await alice.page.click("#chat-toggle")
    await send(alice, "first\nsecond line")
    await bob.page.click("#chat-toggle")
    await send(bob, "hello <i>alice</i>")
    await expect(texts(alice)).to_have_count(2)
    await bob.page.reload()
    await bob.in_call()
    await expect(badge(bob)).to_have_text("1")  # Alice's; his own is no news to him
    await bob.page.click("#chat-toggle")
    await expect(texts(bob)).to_have_text(["first\nsecond line", "hello <i>alice</i>"])
    await expect(bob.page.locator('#chat-log .chat-message[data-self="true"]')).to_have_count(1)
    sam = await tabs.login(url, "mod")
    await sam.join_listed("TUTORIAL", "Sam")
    await sam.in_call()
    await sam.page.click("#chat-toggle")
    await expect(texts(sam)).to_have_text(["first\nsecond line", "hello <i>alice</i>"])
    # Leaving empties the panel: the lobby shows no chat.
    await sam.page.click("#leave")
    await expect(sam.page.locator("#chat-panel")).to_be_hidden()
    await expect(texts(sam)).to_have_count(0)


async def test_a_refused_message_says_why_under_the_box(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
) -> None:
    alice, _, _ = await in_a_call(make_lobby, tabs)
    await alice.page.click("#chat-toggle")
    await send(alice, "evil\u202etxt.exe")
    await expect(alice.page.locator(".chat-error")).to_contain_text("direction overrides")
    await expect(texts(alice)).to_have_count(0)
