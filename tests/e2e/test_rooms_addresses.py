"""Rooms have addresses: `/room/NAME` in the browser, through the login and back, Back to
leave, Copy link, a bad name, and the warning about a name that differs only by case."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.conftest import PASSWORD, LobbyFactory
from tests.e2e.tabs import Tab, Tabs
from tests.openvidu_standin import OpenViduStandin


async def sign_in_at(tab: Tab, url: str, user: str) -> None:
    """Open `url` logged out: the login form; sign in there."""
    await tab.page.goto(url)
    await expect(tab.page).to_have_url(re.compile(r"/\?next=%2Froom%2F"))
    await tab.page.fill("input[name=user]", user)
    await tab.page.fill("input[name=pass]", PASSWORD)
    await tab.page.get_by_role("button", name="Sign in").click()


async def test_an_address_logs_in_enters_the_room_and_back_leaves_it(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    bob = await tabs.login(lobby.http, "bob")
    await bob.create_room("Standup", "Bob")
    await bob.in_call()
    await expect(bob.page).to_have_url(lobby.http + "/room/Standup")
    await expect(bob.page).to_have_title("Standup · Lobby")

    alice = await tabs.open("alice")
    await sign_in_at(alice, lobby.http + "/room/Standup", "alice")
    # Back at the room's address: the pre-join check for a publisher, as a click would.
    await expect(alice.page.locator("#prejoin")).to_be_visible()
    await expect(alice.page.locator("#prejoin-room")).to_have_text("Standup")
    await alice.pass_prejoin()
    await alice.in_call()
    await expect(alice.page).to_have_url(lobby.http + "/room/Standup")
    await expect(alice.page).to_have_title("Standup · Lobby")
    await expect(bob.tile("remote")).to_be_visible()

    # The browser's Back button leaves the call for the lobby, and says so.
    await alice.mark()
    await alice.page.go_back()
    await expect(alice.page.locator("#lobby-view")).to_be_visible()
    await expect(alice.page).to_have_url(lobby.http + "/lobby")
    await expect(alice.page).to_have_title("Lobby")
    await expect(alice.page.locator("#notice")).to_have_text("You left the call in Standup.")
    assert await alice.still_same_page()
    await expect(bob.tile("remote")).to_have_count(0)  # alice really left

    # Leave with the button: the address and title go back to the lobby's.
    await bob.page.click("#leave")
    await expect(bob.page).to_have_url(lobby.http + "/lobby")
    await expect(bob.page).to_have_title("Lobby")
    await expect(bob.page.locator("#notice")).to_have_text("You left the call in Standup.")
    # Logging out says so too, on the login form.
    await bob.page.get_by_role("button", name="Log out").click()
    await expect(bob.page.locator("#notice")).to_have_text("You are logged out.")


async def test_a_viewer_at_an_address_goes_straight_into_the_call(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    bob = await tabs.login(lobby.http, "bob")
    await bob.create_room("Standup", "Bob")
    await bob.in_call()
    viewer = await tabs.login(lobby.http, "sub")  # logged in already: no login form
    await viewer.page.goto(lobby.http + "/room/Standup")
    await viewer.in_call()
    await expect(viewer.page).to_have_url(lobby.http + "/room/Standup")
    assert await viewer.page.evaluate("window.getUserMediaCalls") == 0


async def test_copy_link_copies_the_rooms_address(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    bob = await tabs.login(lobby.http, "bob")
    await bob.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await bob.create_room("Standup", "Bob")
    await bob.in_call()
    await bob.page.click("#copy-link")
    await expect(bob.page.locator("#copy-status")).to_have_text("Link copied")
    copied = await bob.page.evaluate("navigator.clipboard.readText()")
    assert copied == lobby.http + "/room/Standup"


async def test_without_a_clipboard_the_link_shows_selected(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    bob = await tabs.open("bob")
    # A browser without the Clipboard API (as on a plain-http address that is not localhost).
    await bob.context.add_init_script("delete Navigator.prototype.clipboard")
    await bob.login(lobby.http, "bob")
    await bob.create_room("Standup", "Bob")
    await bob.in_call()
    await bob.page.click("#copy-link")
    box = bob.page.locator("#link-box")
    await expect(box).to_be_visible()
    await expect(box).to_have_value(lobby.http + "/room/Standup")
    await expect(box).to_be_focused()
    selected = await box.evaluate("(box) => box.value.slice(box.selectionStart, box.selectionEnd)")
    assert selected == lobby.http + "/room/Standup"
    await expect(bob.page.locator("#copy-status")).to_contain_text("Copy the selected link")


async def test_a_bad_name_in_the_address_is_explained_in_the_lobby(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    await alice.page.goto(lobby.http + "/room/not%20a%20room")
    error = alice.page.locator("#room-error")
    await expect(error).to_have_text(
        "“not a room” is not a room name: use 1 to 64 letters, digits, “_” or “-”."
    )
    room = alice.page.locator("#room-input")
    await expect(room).to_have_value("not a room")
    await expect(room).to_have_attribute("aria-invalid", "true")
    await expect(room).to_have_attribute("aria-describedby", re.compile(r"\broom-error\b"))
    await expect(alice.page).to_have_url(lobby.http + "/lobby")
    await expect(alice.page.locator("#prejoin")).to_be_hidden()


async def test_a_name_that_differs_only_by_case_is_warned_about_but_allowed(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    bob = await tabs.login(lobby.http, "bob")
    await bob.create_room("Standup", "Bob")
    await bob.in_call()
    alice = await tabs.login(lobby.http, "alice")
    await expect(alice.card("Standup")).to_be_visible()
    await alice.page.fill("#room-input", "standup")
    warning = alice.page.locator("#room-warning")
    await expect(warning).to_have_text("A room named “Standup” exists; names are case-sensitive.")
    room = alice.page.locator("#room-input")
    await expect(room).to_have_attribute("aria-describedby", re.compile(r"\broom-warning\b"))
    await alice.page.fill("#room-input", "Standup")  # the room itself: nothing to warn about
    await expect(warning).to_be_hidden()
    await alice.create_room("standup", "Alice")  # still allowed: a room of its own
    await alice.in_call()
    await expect(alice.page).to_have_url(lobby.http + "/room/standup")
    assert {r["name"] for r in await alice.page.evaluate("window.lobbyDebug.rooms")} == {
        "Standup",
        "standup",
    }


async def test_an_empty_room_name_is_named_under_its_field(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    await alice.page.click("#join-submit")
    await expect(alice.page.locator("#room-error")).to_have_text("Enter a room name.")
    await expect(alice.page.locator("#room-input")).to_be_focused()
    await expect(alice.page.locator("#error")).to_be_empty()  # not in the page's alert
    await alice.page.fill("#room-input", "Standup")  # typing clears it
    await expect(alice.page.locator("#room-error")).to_be_hidden()
