"""Two people in two browsers: the lobby, the call, closing and reloading tabs, roles, nicknames."""

from __future__ import annotations

import json
import re
import time

from playwright.async_api import expect

from tests.conftest import LobbyFactory
from tests.e2e.tabs import Tabs, is_local, openvidu_reconnecting
from tests.openvidu_standin import OpenViduStandin


def joins(standin: OpenViduStandin) -> list[tuple[str, str]]:
    """(token, clientData) of every successful joinRoom the stand-in answered."""
    return [
        (call.params["token"], json.loads(call.params["metadata"])["clientData"])
        for call in standin.rpc_calls
        if call.method == "joinRoom" and call.error is None
    ]


async def test_two_people_meet_in_a_room_created_by_name(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    for tab in (alice, bob):
        await expect(tab.page.locator("#rooms-empty")).to_be_visible()
        await expect(tab.page.locator("#rooms li.room-card")).to_have_count(0)
    await bob.mark()

    await alice.create_room("TUTORIAL", "Alice")
    await alice.in_call()
    # Bob's lobby shows the room and who is in it, live.
    card = bob.card("TUTORIAL")
    await expect(card.locator("li.chip")).to_have_text(["Alice (alice)"])
    await expect(bob.page.locator("#rooms-empty")).to_be_hidden()
    assert await bob.still_same_page()

    await bob.join_listed("TUTORIAL", "Bob")
    await bob.in_call()
    await alice.in_call()
    # The stand-in saw both joins, with exactly the lobby's tokens and the nicknames.
    await standin.wait_for(lambda: len(joins(standin)) == 2)
    assert joins(standin) == [
        (alice.issued_tokens()[0], "Alice"),
        (bob.issued_tokens()[0], "Bob"),
    ]
    # The call view: a tile per person with the nickname and the user name (they differ),
    # yours marked and muted.
    for tab, me, other in (
        (alice, "Alice (alice)", "Bob (bob)"),
        (bob, "Bob (bob)", "Alice (alice)"),
    ):
        await expect(tab.tile("local").locator(".tile-label")).to_have_text(me)
        await expect(tab.tile("local").locator(".tile-you")).to_be_visible()
        await expect(tab.tile("remote").locator(".tile-label")).to_have_text(other)
        await expect(tab.page.locator("#call-participants li.chip")).to_have_count(2)
        video = tab.tile("local").locator("video")
        await expect(video).to_have_count(1)
        assert await video.evaluate("(v) => v.muted")
        # No media server behind the stand-in: the page says so and stays in the call.
        await expect(tab.page.locator("#publish-note")).to_contain_text(
            "Others cannot see or hear you"
        )
        await expect(tab.page.locator("#toggle-camera")).to_be_visible()
    await alice.page.click("#toggle-camera")
    await expect(alice.page.locator("#toggle-camera")).to_have_text("Turn camera on")
    await expect(alice.tile("local")).to_have_attribute("data-video", "off")
    await alice.in_call()
    for tab in (alice, bob):  # the refused publish is explained once, not as more errors
        await expect(tab.page.locator("#error")).to_be_empty()
    # WebRTC never looked beyond this machine: every peer connection had ICE servers
    # (none means openvidu-browser's public STUN list), all on loopback.
    for tab in (alice, bob):
        peer_connections = await tab.page.evaluate("window.iceServersUsed")
        assert peer_connections
        for servers in peer_connections:
            assert servers
            assert all(url.startswith("stun:127.0.0.1:") for s in servers for url in s["urls"])
    # Every request the pages made stayed on this machine (the fixture checks it again).
    assert tabs.requests()
    assert all(is_local(url) for url in tabs.requests())


async def test_closing_a_tab_shows_the_person_gone_after_the_grace_period(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    grace = 1.0
    lobby = await make_lobby(reconnect_grace=grace)
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    await alice.create_room("TUTORIAL", "Alice")
    await alice.in_call()
    await bob.join_listed("TUTORIAL", "Bob")
    await bob.in_call()
    await bob.page.click("#leave")  # back to the lobby, watching the room's card
    await expect(bob.card("TUTORIAL").locator("li.chip")).to_have_text(["Alice (alice)"])
    await standin.wait_for(lambda: len(joins(standin)) == 2)
    alice_connection = next(c.connection_id for c in standin.rpc_calls if c.method == "joinRoom")

    closed_at = time.monotonic()
    await alice.close()
    await expect(bob.card("TUTORIAL")).to_have_count(0, timeout=(grace + 1) * 1000)
    gone_after = time.monotonic() - closed_at
    assert grace <= gone_after <= grace + 1, gone_after
    await expect(bob.page.locator("#rooms-empty")).to_be_visible()
    await standin.wait_for(
        lambda: any(
            call.method == "DELETE" and call.path.endswith(f"/connection/{alice_connection}")
            for call in standin.calls
        )
    )


async def test_a_reload_in_a_call_is_invisible_to_the_others(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby(reconnect_grace=5.0)
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    await alice.create_room("TUTORIAL", "Alice")
    await alice.in_call()
    await bob.join_listed("TUTORIAL", "Bob")
    await bob.in_call()
    alice_id = alice.frames("token")[0]["participant"]["id"]
    await expect(bob.tile("remote")).to_have_attribute("data-participant", alice_id)
    await standin.wait_for(lambda: len(joins(standin)) == 2)
    first_token = alice.issued_tokens()[0]
    stale = next(c.connection_id for c in standin.rpc_calls if c.params.get("token") == first_token)
    await bob.watch_removals(f'[data-participant="{alice_id}"]')

    await alice.page.reload()
    await alice.in_call()
    # A fresh token, used to rejoin; the stale connection is deleted.
    tokens = alice.issued_tokens()
    assert len(tokens) == 2
    assert tokens[1] != first_token
    await standin.wait_for(lambda: len(joins(standin)) == 3)
    assert joins(standin)[2] == (tokens[1], "Alice")
    await standin.wait_for(
        lambda: any(
            c.method == "DELETE" and c.path.endswith(f"/connection/{stale}") for c in standin.calls
        )
    )
    # Bob never saw Alice leave: no `left`, no chip or tile of hers removed.
    await expect(bob.tile("remote").locator(".tile-status")).to_have_text(
        "Connecting…"
    )  # her camera never reaches the stand-in
    assert [f for f in bob.frames("left") if f["participant"]["id"] == alice_id] == []
    assert await bob.removed() == []
    await expect(bob.chip(alice_id, "#call-participants")).to_have_text("Alice (alice)")
    await expect(alice.tile("local")).to_have_attribute("data-participant", alice_id)


async def test_a_subscriber_watches_without_a_camera(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    viewer = await tabs.login(lobby.http, "sub")
    await alice.create_room("TUTORIAL", "Alice")
    await alice.in_call()
    await viewer.join_listed("TUTORIAL", "Viewer")
    await viewer.in_call()
    note = viewer.page.locator("#subscriber-note")
    await expect(note).to_be_visible()
    await expect(note).to_contain_text("Subscriber")
    await expect(note).to_contain_text("camera and microphone stay off")
    # It sees the others.
    await expect(viewer.tile("remote").locator(".tile-label")).to_have_text("Alice (alice)")
    await expect(viewer.page.locator("#call-participants li.chip")).to_have_text(
        ["Alice (alice)", "Viewer (sub)"]
    )
    await expect(viewer.tile("local").locator(".tile-status")).to_have_text("Viewer")
    # It never asked for a camera nor tried to publish; Alice's page did both.
    for hidden in ("#toggle-camera", "#toggle-mic", "#publish-note"):
        await expect(viewer.page.locator(hidden)).to_be_hidden()
    await expect(alice.page.locator("#publish-note")).to_be_visible()  # Alice tried
    assert await viewer.page.evaluate("window.getUserMediaCalls") == 0
    assert await alice.page.evaluate("window.getUserMediaCalls") >= 1
    await standin.wait_for(lambda: len(joins(standin)) == 2)
    connection_of = {
        json.loads(c.params["metadata"])["clientData"]: c.connection_id
        for c in standin.rpc_calls
        if c.method == "joinRoom"
    }
    publishers = {c.connection_id for c in standin.rpc_calls if c.method == "publishVideo"}
    assert publishers == {connection_of["Alice"]}


async def test_a_nickname_with_html_shows_as_text_everywhere(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    nickname = "<img src=x onerror=alert(1)>"
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    await alice.create_room("TUTORIAL", nickname)
    await alice.in_call()
    await expect(bob.card("TUTORIAL").locator("li.chip")).to_have_text([f"{nickname} (alice)"])
    # Bob takes another user's name as his nickname: the user name gives him away.
    await bob.join_listed("TUTORIAL", "alice")
    await bob.in_call()
    await expect(bob.tile("remote").locator(".tile-label")).to_have_text(f"{nickname} (alice)")
    await expect(bob.tile("local").locator(".tile-label")).to_have_text("alice (bob)")
    await expect(alice.tile("remote").locator(".tile-label")).to_have_text("alice (bob)")
    await expect(bob.page.locator("#call-participants li.chip").first).to_have_text(
        f"{nickname} (alice)"
    )
    await expect(alice.tile("local").locator(".tile-label")).to_have_text(f"{nickname} (alice)")
    await expect(alice.page.locator("#call-participants li.chip").first).to_have_text(
        f"{nickname} (alice)"
    )
    await expect(alice.card("TUTORIAL").locator("li.chip").first).to_have_text(
        f"{nickname} (alice)"
    )
    await standin.wait_for(lambda: len(joins(standin)) == 2)
    assert joins(standin)[0][1] == nickname
    for tab in (alice, bob):
        assert await tab.page.locator("img").count() == 0
        assert tab.dialogs == []
        assert not [url for url in tab.requests if url.endswith("/x")]


async def test_the_lobby_shows_who_is_in_the_call_and_who_dropped_out_of_it(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    await alice.create_room("TUTORIAL", "Alice")
    await alice.in_call()
    # Alice's page reports its call once openvidu-browser joined; everyone's lobby shows it.
    chip = bob.card("TUTORIAL").locator("li.chip")
    await expect(chip).to_have_attribute("data-call", "connected")
    await expect(chip).to_have_attribute("title", "in the call")
    await expect(chip).to_have_class(re.compile(r"\bcall-connected\b"))
    await expect(chip).to_have_text("Alice (alice)")  # the state is no part of the name
    mine = alice.page.locator("#call-participants li.chip")
    await expect(mine).to_have_attribute("data-call", "connected")
    # The network takes Alice's media connection away while her lobby socket stays open.
    tabs.tolerated.append(openvidu_reconnecting)
    [browser] = standin.browsers.values()
    browser.close()
    await expect(chip).to_have_attribute("data-call", "dropped")
    await expect(chip).to_have_attribute("title", "dropped out of the call")
    await expect(chip).to_have_class(re.compile(r"\bcall-dropped\b"))
    await expect(mine).to_have_attribute("data-call", "dropped")
    await expect(alice.page.locator("#call-problem-text")).to_contain_text("dropped")


async def test_a_tile_says_its_participant_dropped_out_of_the_call(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tabs: Tabs
):
    lobby = await make_lobby()
    alice = await tabs.login(lobby.http, "alice")
    bob = await tabs.login(lobby.http, "bob")
    await alice.create_room("TUTORIAL", "Alice")
    await alice.in_call()
    await bob.join_listed("TUTORIAL", "alice")
    await bob.in_call()
    status = bob.tile("remote").locator(".tile-status")
    await expect(status).to_have_text(
        "Connecting…"
    )  # in Bob's media session, her camera not (yet) here
    # Alice's media connection goes while her lobby socket stays: Bob's tile says so.
    tabs.tolerated.append(openvidu_reconnecting)
    alice_browser = next(iter(standin.browsers.values()))  # the first to join the call
    alice_browser.close()
    await expect(status).to_have_text("Alice is reconnecting…")
    await expect(bob.tile("remote")).to_have_attribute("data-link", "reconnecting")
