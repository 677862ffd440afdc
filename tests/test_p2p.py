"""Peer-to-peer rooms over real sockets: welcome, the relay, room sizes, TURN credentials."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json

import httpx
import pytest

from lobby.media.p2p import IceServer, PeerToPeerBackend
from tests.conftest import Client, Lobby, LobbyFactory, until
from tests.openvidu_standin import OpenViduStandin
from tests.test_signalling import RECEIVE, SEND, SMUGGLE


def hello(link: str = "l1") -> dict[str, object]:
    return {"kind": "hello", "link": link, "peer_link": None}


async def in_room(lobby: Lobby, room: str, *names: str) -> list[tuple[Client, str]]:
    """Clients that joined `room` in order, each with its participant id; events drained."""
    joined: list[tuple[Client, str]] = []
    for name in names:
        client = await lobby.client(name)
        token = await client.join(room)
        joined.append((client, token["participant"]["id"]))
        for other, _ in joined:
            await other.until("joined")
    return joined


async def reply(client: Client) -> dict[str, object]:
    """The next reply to a request (it has a `ref`), past any events."""
    while "ref" not in (frame := await client.recv(timeout=5)):
        pass
    return frame


@pytest.fixture
async def p2p(make_lobby: LobbyFactory) -> Lobby:
    lobby: Lobby = await make_lobby(media="p2p", room_size=4)
    return lobby


async def test_welcome_tells_the_page_how_calls_run(make_lobby: LobbyFactory) -> None:
    stun = IceServer(("stun:127.0.0.1:3478",))
    lobby = await make_lobby(media="p2p", room_size=3, ice_servers=(stun,))
    alice = await lobby.client("alice")
    assert alice.welcome["media"] == {
        "kind": "p2p",
        "ice_servers": [{"urls": ["stun:127.0.0.1:3478"]}],
    }
    assert alice.welcome["room_size"] == 3
    page = await lobby_page(lobby, alice)
    assert 'data-media="p2p"' in page
    assert "openvidu-browser" not in page  # no OpenVidu library in a p2p page


async def lobby_page(lobby: Lobby, client: Client) -> str:
    cookies = {"lobby_session": client.cookie}
    async with httpx.AsyncClient(base_url=lobby.http, cookies=cookies) as http:
        reply = await http.get("/lobby")
    assert reply.status_code == 200
    # No OpenVidu host may be contacted: the socket to this server is all a p2p page opens.
    assert "connect-src 'self';" in reply.headers["content-security-policy"]
    return reply.text


async def test_openvidu_mode_says_so_and_refuses_signalling(lobby: Lobby) -> None:
    alice = await lobby.client("alice")
    assert alice.welcome["media"] == {"kind": "openvidu"}
    assert alice.welcome["room_size"] is None
    await alice.join("A")
    ref = await alice.request({"type": "signal", "to": "p_x", "data": hello()})
    error = await alice.until("error")
    assert (error["ref"], error["code"]) == (ref, "unknown_type")


async def test_joining_needs_no_media_server(p2p: Lobby, standin: OpenViduStandin) -> None:
    [(alice, me)] = await in_room(p2p, "A", "alice")
    assert me.startswith("p_")
    ref = await alice.request({"type": "leave"})
    assert (await alice.until("ok"))["ref"] == ref
    await alice.until("room_closed")
    assert standin.calls == []  # OpenVidu is never asked


async def test_signals_go_to_one_peer_of_the_room_stamped_with_the_sender(p2p: Lobby) -> None:
    (alice, a), (bob, b), (carol, _) = await in_room(p2p, "A", "alice", "bob", "mod")
    data: dict[str, object] = {"kind": "description", "link": "la", "peer_link": "lb"}
    data["description"] = {"type": "offer", "sdp": SEND}
    await alice.send({"type": "signal", "to": b, "data": data, "from": "p_spoofed", "ref": 1})
    assert await bob.expect("signal") == {"type": "signal", "from": a, "data": data}
    await bob.send({"type": "signal", "to": a, "data": hello("lb")})
    assert await alice.expect("signal") == {"type": "signal", "from": b, "data": hello("lb")}
    # No reply to the sender, nothing to anyone else.
    for client in (alice, bob, carol):
        await client.nothing(0.2)


async def test_no_signal_crosses_rooms(p2p: Lobby) -> None:
    [(alice, a)] = await in_room(p2p, "A", "alice")
    bob = await p2p.client("bob")
    token = await bob.join("B")
    b = token["participant"]["id"]
    await alice.until("joined")
    await bob.until("joined")
    for sender, to in ((alice, b), (bob, a)):
        ref = await sender.request({"type": "signal", "to": to, "data": hello()})
        error = await sender.until("error")
        assert (error["ref"], error["code"]) == (ref, "unknown_peer")
    lonely = await p2p.client("mod")
    ref = await lonely.request({"type": "signal", "to": a, "data": hello()})
    assert (await lonely.until("error"))["code"] == "unknown_peer"
    await alice.nothing(0.2)
    await bob.nothing(0.2)


async def test_a_viewer_cannot_send_media_but_can_answer(p2p: Lobby) -> None:
    (alice, a), (sub, _) = await in_room(p2p, "A", "alice", "sub")
    offer = {
        "kind": "description",
        "link": "ls",
        "peer_link": "la",
        "description": {"type": "offer", "sdp": SEND},
    }
    ref = await sub.request({"type": "signal", "to": a, "data": offer})
    error = await sub.until("error")
    assert (error["ref"], error["code"]) == (ref, "not_allowed")
    answer = {**offer, "description": {"type": "answer", "sdp": RECEIVE}}
    await sub.send({"type": "signal", "to": a, "data": answer})
    assert (await alice.expect("signal"))["data"] == answer


async def test_a_viewers_offer_hiding_its_video_behind_an_odd_line_break_is_refused(
    p2p: Lobby,
) -> None:
    (alice, a), (sub, _) = await in_room(p2p, "A", "alice", "sub")
    description = {"type": "offer", "sdp": SMUGGLE}
    offer = {"kind": "description", "link": "ls", "peer_link": "la", "description": description}
    ref = await sub.request({"type": "signal", "to": a, "data": offer})
    error = await sub.until("error")
    assert (error["ref"], error["code"]) == (ref, "invalid_signal")
    await alice.nothing()


async def test_signals_to_an_away_peer_are_dropped(p2p: Lobby) -> None:
    (alice, _), (bob, b) = await in_room(p2p, "A", "alice", "bob")
    await bob.close()
    await until(lambda: p2p.state.handler.presence.member(b).away)  # type: ignore[union-attr]
    await alice.send({"type": "signal", "to": b, "data": hello(), "ref": 5})
    await alice.send({"type": "ping", "ref": 6})
    assert (await alice.expect("pong"))["ref"] == 6  # and no error before it


async def test_bad_signals_get_errors_and_the_socket_stays_usable(p2p: Lobby) -> None:
    (alice, _), (_, b) = await in_room(p2p, "A", "alice", "bob")
    frames: list[tuple[dict[str, object], str]] = [
        ({"type": "signal", "data": hello()}, "bad_request"),
        ({"type": "signal", "to": b, "data": "hi"}, "invalid_signal"),
        ({"type": "signal", "to": b, "data": {"kind": "hello"}}, "invalid_signal"),
        ({"type": "signal", "to": b, "data": {**hello(), "kind": "sing"}}, "invalid_signal"),
    ]
    for frame, code in frames:
        ref = await alice.request(frame)
        error = await alice.until("error")
        assert (error["ref"], error["code"]) == (ref, code)
    ref = await alice.request({"type": "ping"})
    assert (await alice.until("pong"))["ref"] == ref


async def test_an_sdp_sized_frame_passes_and_a_huge_one_closes(p2p: Lobby) -> None:
    (alice, _), (bob, b) = await in_room(p2p, "A", "alice", "bob")
    sdp = SEND + "a=x-padding:" + "y" * 15000 + "\r\n"  # a big offer, within 16384 characters
    data: dict[str, object] = {"kind": "description", "link": "la", "peer_link": "lb"}
    data["description"] = {"type": "offer", "sdp": sdp}
    await alice.send({"type": "signal", "to": b, "data": data})
    assert (await bob.expect("signal"))["data"]["description"]["sdp"] == sdp
    await alice.send("x" * (p2p.settings.max_frame_bytes + 1))
    assert await alice.close_code() == 1009


async def test_a_full_room_answers_room_full_and_away_members_keep_their_seat(
    make_lobby: LobbyFactory,
) -> None:
    lobby = await make_lobby(media="p2p", room_size=2, reconnect_grace=30)
    (alice, _), (bob, b) = await in_room(lobby, "A", "alice", "bob")
    carol = await lobby.client("mod")
    ref = await carol.request({"type": "join", "room": "A", "nickname": "Carol"})
    error = await carol.until("error")
    assert (error["ref"], error["code"]) == (ref, "room_full")
    assert "full" in error["message"]
    await bob.close()  # away, not gone: the seat stays Bob's for the grace period
    await until(lambda: lobby.state.handler.presence.member(b).away)
    await carol.request({"type": "join", "room": "A", "nickname": "Carol"})
    assert (await carol.until("error"))["code"] == "room_full"
    # Another room is fine, and a seat frees up when someone leaves.
    assert (await carol.join("B"))["room"] == "B"
    await alice.request({"type": "leave"})
    await alice.until("ok")
    await carol.until("left")
    assert (await carol.join("A"))["room"] == "A"


async def test_two_joins_for_the_last_seat_one_wins_and_the_other_is_revoked(
    make_lobby: LobbyFactory, standin: OpenViduStandin
) -> None:
    """With OpenVidu, a join waits for its grant: the seat is checked again after it."""
    lobby = await make_lobby(room_size=1, openvidu_timeout=3.0)
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    standin.fault, standin.delay = "slow", 0.3
    await alice.request({"type": "join", "room": "A", "nickname": "A"})
    await bob.request({"type": "join", "room": "A", "nickname": "B"})
    first, second = await reply(alice), await reply(bob)
    replies = sorted([str(first["type"]), str(second["type"])])
    assert replies == ["error", "token"], (first, second)
    loser = first if first["type"] == "error" else second
    assert loser["code"] == "room_full"
    # The loser's OpenVidu connection was made, then deleted.
    standin.fault = None
    await standin.wait_for(
        lambda: any(c.method == "DELETE" and "/connection/" in c.path for c in standin.calls)
    )
    assert lobby.state.handler.presence.size("A") == 1


def test_turn_credentials_follow_the_turn_rest_scheme() -> None:
    turn = IceServer(("turn:turn.example:3478", "turns:turn.example:5349"))
    fixed = IceServer(("turn:other.example",), "u", "p")
    stun = IceServer(("stun:stun.example",))
    backend = PeerToPeerBackend(
        (stun, turn, fixed), turn_secret="north", turn_ttl=3600, clock=lambda: 1_700_000_000.0
    )
    config = backend.page_config("alice")
    username = "1700003600:alice"
    password = base64.b64encode(hmac.new(b"north", username.encode(), hashlib.sha1).digest())
    assert config == {
        "kind": "p2p",
        "ice_servers": [
            {"urls": ["stun:stun.example"]},
            {
                "urls": ["turn:turn.example:3478", "turns:turn.example:5349"],
                "username": username,
                "credential": password.decode(),
            },
            {"urls": ["turn:other.example"], "username": "u", "credential": "p"},
        ],
    }
    json.dumps(config)  # it goes into `welcome` as it is


async def test_the_p2p_back_end_has_nothing_to_create_or_delete() -> None:
    backend = PeerToPeerBackend()
    assert backend.page_config("bob") == {"kind": "p2p", "ice_servers": []}
    assert repr(backend) == "PeerToPeerBackend()"
    grants = [await backend.grant("A", None) for _ in range(2)]  # type: ignore[arg-type]
    assert grants[0].token != grants[1].token
    assert grants[0].room == "A"
    await asyncio.gather(
        backend.revoke(grants[0]), backend.close_room("A"), backend.check(), backend.aclose()
    )
