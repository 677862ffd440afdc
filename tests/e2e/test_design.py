"""The pages at phone width, with the keyboard alone, and axe-core's checks (contrast too)."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.conftest import LobbyFactory
from tests.e2e.axe import violations
from tests.e2e.tabs import Tab, Tabs
from tests.openvidu_standin import OpenViduStandin

PHONE = {"width": 375, "height": 740}


async def overflow(page: Page) -> int:
    """Pixels the page is wider than the viewport (a horizontal scrollbar)."""
    width: int = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return width


async def unlabelled(page: Page) -> list[str]:
    """Visible form fields without a label and buttons without a name."""
    found: list[str] = await page.evaluate(
        """() => [
          ...[...document.querySelectorAll("input:not([type=hidden])")]
            .filter((input) => input.labels.length === 0 && !input.getAttribute("aria-label"))
            .map((input) => input.outerHTML),
          ...[...document.querySelectorAll("button")]
            .filter((b) => b.checkVisibility())
            .filter((b) => !(b.getAttribute("aria-label") || b.textContent.trim()))
            .map((b) => b.outerHTML),
        ]"""
    )
    return found


async def tab_to(tab: Tab, selector: str, *, limit: int = 20) -> list[str]:
    """Press Tab until `selector` has the focus; what got the focus on the way."""
    visited: list[str] = []
    for _ in range(limit):
        await tab.page.keyboard.press("Tab")
        focused: str = await tab.page.evaluate(
            "(() => { const e = document.activeElement;"
            " return e.id || e.getAttribute('aria-label') || e.textContent.trim(); })()"
        )
        visited.append(focused)
        if await tab.page.locator(selector).evaluate("(e) => e === document.activeElement"):
            # Keyboard focus shows: the browser's :focus-visible, with our ring.
            assert await tab.page.evaluate(
                "document.activeElement.matches(':focus-visible')"
                " && getComputedStyle(document.activeElement).outlineStyle !== 'none'"
            )
            return visited
    pytest.fail(f"Tab never reached {selector}; focus went through {visited}")


async def focused_id(page: Page) -> str:
    element_id: str = await page.evaluate("document.activeElement.id")
    return element_id


async def test_a_phone_and_a_keyboard_are_enough(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    bob = await tabs.login(lobby.http, "bob")
    await bob.create_room("TUTORIAL", "Bob")
    await bob.in_call()
    phone = await tabs.login(lobby.http, "alice", viewport=PHONE)
    await expect(phone.card("TUTORIAL")).to_be_visible()
    assert await overflow(phone.page) == 0
    assert await unlabelled(phone.page) == []

    # The form first, then each room's Join; Enter joins; focus follows the view.
    visited = await tab_to(phone, 'button[aria-label="Join TUTORIAL"]')
    assert visited[-4:] == ["room-input", "nickname-input", "join-submit", "Join TUTORIAL"]
    await phone.page.keyboard.press("Enter")
    # The pre-join check: focus on its title, labelled controls, no overflow; Enter joins.
    await expect(phone.page.locator("#prejoin")).to_be_visible()
    assert await focused_id(phone.page) == "prejoin-title"
    await expect(phone.page.locator("#prejoin-camera option")).not_to_have_count(0)
    assert await overflow(phone.page) == 0
    assert await unlabelled(phone.page) == []
    await tab_to(phone, "#prejoin-join")
    await phone.page.keyboard.press("Enter")
    await phone.in_call()
    assert await focused_id(phone.page) == "call-title"
    await expect(phone.tile("local")).to_be_visible()
    await expect(phone.tile("remote")).to_be_visible()
    assert await overflow(phone.page) == 0
    assert await unlabelled(phone.page) == []
    await tab_to(phone, "#toggle-camera")
    await phone.page.keyboard.press("Enter")
    await expect(phone.page.locator("#toggle-camera")).to_have_text("Turn camera on")
    await tab_to(phone, "#leave")
    await phone.page.keyboard.press("Enter")
    await expect(phone.page.locator("#lobby-view")).to_be_visible()
    assert await focused_id(phone.page) == "lobby-title"


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_every_page_passes_axe_in_both_colour_schemes(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs, scheme: str
):
    # Two people fill a room: a third sees its Join button disabled ("Full").
    lobby = await make_lobby(room_size=2)
    guest = await tabs.open("guest", color_scheme=scheme)
    await guest.page.goto(lobby.http + "/?logged_out=1")
    await guest.page.fill("input[name=user]", "alice")
    await guest.page.click("button[type=submit]")  # no password: an error under its field
    await expect(guest.page.locator("#login-pass-error")).to_have_text("Enter your password.")
    assert await violations(guest.page) == []

    bob = await tabs.login(lobby.http, "bob", color_scheme=scheme)
    await bob.create_room("TUTORIAL", "Bob", check=False)
    await expect(bob.page.locator("#prejoin-camera option")).not_to_have_count(0)
    assert await violations(bob.page) == []  # the pre-join check
    await bob.pass_prejoin()
    await bob.in_call()
    await bob.page.click("#toggle-camera")  # a "Camera off" status and a pressed-off button
    viewer = await tabs.login(lobby.http, "sub", color_scheme=scheme)
    await viewer.join_listed("TUTORIAL", "Viewer")
    await viewer.in_call()
    await expect(bob.page.locator("#publish-note")).to_be_visible()
    for tab in (bob, viewer):
        assert await violations(tab.page) == [], tab.name

    alice = await tabs.login(lobby.http, "alice", color_scheme=scheme)
    await expect(alice.card("TUTORIAL").locator("button.room-join")).to_be_disabled()
    await alice.page.fill("#room-input", "tutorial")  # a warning: it differs only by case
    await alice.page.fill("#nickname-input", "")
    await alice.page.click("#join-submit")  # an error under the nickname
    await expect(alice.page.locator("#room-warning")).to_be_visible()
    await expect(alice.page.locator("#nickname-error")).to_be_visible()
    assert await violations(alice.page) == []

    await viewer.page.click("#leave")  # "You left the call…"
    await expect(viewer.page.locator("#notice")).not_to_be_empty()
    assert await violations(viewer.page) == []
    # Avatar colours depend on the participant id: try every one.
    tile = bob.tile("local")  # its camera is off: the avatar shows
    for hue in range(8):
        await tile.evaluate("(tile, hue) => { tile.dataset.hue = String(hue); }", hue)
        assert await violations(bob.page) == [], hue


async def test_chips_name_the_user_only_when_the_nickname_differs_and_long_names_are_cut(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    long_name = "Quarterly-planning-for-the-whole-engineering-department_2026-Q3"
    bob = await tabs.login(lobby.http, "bob", viewport=PHONE)
    await bob.create_room(long_name, "bob")  # the nickname is the user name
    await bob.in_call()
    alice = await tabs.login(lobby.http, "alice", viewport=PHONE)
    await alice.join_listed(long_name, "Ann")
    await alice.in_call()
    chips = bob.page.locator("#call-participants li.chip")
    await expect(chips).to_have_text(["bob", "Ann (alice)"])

    viewer = await tabs.login(lobby.http, "sub", viewport=PHONE)
    card = viewer.card(long_name)
    name = card.locator(".room-name")
    # Cut with "…" on screen, whole on hover and to screen readers.
    await expect(name).to_have_attribute("title", long_name)
    await expect(name).to_have_css("text-overflow", "ellipsis")
    assert await name.evaluate("(e) => e.scrollWidth > e.clientWidth")
    await expect(card.get_by_role("heading", name=long_name)).to_be_visible()
    title = bob.page.locator("#call-room")
    await expect(title).to_have_attribute("title", long_name)
    assert await title.evaluate("(e) => e.scrollWidth > e.clientWidth")
    await expect(bob.page.get_by_role("heading", name=f"Call in room {long_name}")).to_be_visible()
    assert await overflow(bob.page) == 0
    assert await overflow(viewer.page) == 0
