"""A moderator and a publisher in two browsers: kick with a reason, close a room, lock a room."""

from __future__ import annotations

from playwright.async_api import expect

from tests.conftest import LobbyFactory
from tests.e2e.tabs import Tab, Tabs
from tests.openvidu_standin import OpenViduStandin


async def back_in_the_lobby(tab: Tab, message: str) -> None:
    await expect(tab.page.locator("#lobby-view")).to_be_visible()
    await expect(tab.page.locator("#call")).to_be_hidden()
    await expect(tab.page.locator("#error")).to_contain_text(message)


async def test_a_kick_with_a_reason_sends_the_page_back_and_it_cannot_rejoin(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
) -> None:
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    mod = await tabs.login(lobby.http, "mod")
    await alice.create_room("R1", "Alice <b>")
    await alice.in_call()
    chip = mod.card("R1").locator("li.chip")
    await expect(chip).to_have_text(["Alice <b> (alice)"])  # the kick button adds no text
    # Only the moderator has the controls.
    await expect(alice.page.locator(".chip-kick, .mod-tools")).to_have_count(0)

    await chip.get_by_role("button", name="Kick Alice <b> (alice)").click()
    dialog = mod.page.locator("#kick-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#kick-title")).to_have_text("Kick Alice <b> (alice) out of R1?")
    await dialog.locator("#kick-reason").fill("  Off topic <i>again</i>  ")
    await dialog.locator("#kick-confirm").click()
    await expect(dialog).to_be_hidden()

    reason = "mod removed you from room R1. Reason: “Off topic <i>again</i>”."
    await back_in_the_lobby(alice, reason)
    await expect(mod.card("R1")).to_have_count(0)
    assert await alice.page.evaluate("sessionStorage.getItem('lobby.resume')") is None
    # Joining that room again is refused, with the server's sentence; the page stays put.
    await alice.create_room("R1", "Alice")
    await expect(alice.page.locator("#error")).to_contain_text("you cannot join it again yet")
    await expect(alice.page.locator("#lobby-view")).to_be_visible()
    await expect(alice.page.locator("#join-submit")).to_be_enabled()
    # A reload does not bring the call back either.
    await alice.page.reload()
    await expect(alice.badge).to_have_attribute("data-state", "connected")
    await expect(alice.page.locator("#call")).to_be_hidden()


async def test_closing_a_room_sends_every_page_back_to_the_lobby_saying_so(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
) -> None:
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    mod = await tabs.login(lobby.http, "mod")
    await alice.create_room("R1", "Alice")
    await alice.in_call()
    await mod.join_listed("R1", "Mod")
    await mod.in_call()
    # In the call, the moderator's participant list has the room's controls.
    tools = mod.page.locator("#call-mod-tools")
    await expect(tools).to_be_visible()
    await expect(alice.page.locator("#call-mod-tools")).to_have_count(0)
    await tools.get_by_role("button", name="Close R1").click()

    for tab in (alice, mod):
        await back_in_the_lobby(tab, "A moderator closed room R1.")
        await expect(tab.card("R1")).to_have_count(0)
    await standin.wait_for(lambda: "R1" not in standin.sessions)


async def test_a_locked_room_is_marked_refuses_a_publisher_and_takes_a_moderator(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
) -> None:
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    mod = await tabs.login(lobby.http, "mod")
    await alice.create_room("R1", "Alice")
    await alice.in_call()
    for tab in (bob, mod):
        await expect(tab.card("R1").locator(".room-lock")).to_be_hidden()

    await mod.card("R1").get_by_role("button", name="Lock R1").click()
    for tab in (bob, mod):  # the mark, for everyone
        await expect(tab.card("R1").locator(".room-lock")).to_be_visible()
        await expect(tab.card("R1")).to_have_attribute("data-locked", "")
    await expect(mod.card("R1").get_by_role("button", name="Unlock R1")).to_be_visible()
    join = bob.card("R1").locator("button.room-join")
    await expect(join).to_be_disabled()
    await expect(join).to_have_text("Locked")
    # Typed into the form, the join is refused with a clear sentence.
    await bob.create_room("R1", "Bob")
    await expect(bob.page.locator("#error")).to_contain_text(
        "A moderator locked room R1: only moderators may join it now."
    )
    await expect(bob.page.locator("#lobby-view")).to_be_visible()

    # The moderator still gets in, and kicks from the call's participant list.
    await mod.join_listed("R1", "Mod")
    await mod.in_call()
    people = mod.page.locator("#call-participants")
    await expect(people.locator("li.chip")).to_have_text(["Alice (alice)", "Mod (mod)"])
    await expect(people.locator(".chip-kick")).to_have_count(1)  # not oneself
    await people.get_by_role("button", name="Kick Alice (alice)").click()
    await mod.page.locator("#kick-confirm").click()
    await back_in_the_lobby(alice, "mod removed you from room R1. You cannot join it again")

    # Unlocked, the room takes publishers again.
    await mod.page.locator("#call-mod-tools").get_by_role("button", name="Unlock R1").click()
    await expect(bob.card("R1").locator(".room-lock")).to_be_hidden()
    await bob.join_listed("R1", "Bob")
    await bob.in_call()
