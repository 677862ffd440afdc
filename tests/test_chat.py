"""Room chat through the real endpoint: real uvicorn, real `websockets` clients.

Who hears a message (its room's sockets, nobody else), the history a page gets
after `token` and `resumed`, and every refusal. Whether a socket got nothing is
read up to the `pong` of a `ping` sent after the message was delivered: the lobby
handles frames in order, so anything meant for that socket would have come first.
Two instances sharing presence through a real Redis are at the end.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lobby.rules.chat import CHAT_RULE, HISTORY, MAX_CHAT
from tests.conftest import Client, Lobby, LobbyFactory
from tests.redis_server import RedisServer
from tests.test_cluster_app import pair


async def frames_until_pong(client: Client) -> list[dict[str, Any]]:
    """Every frame `client` gets before the pong to a ping sent now."""
    ref = await client.request({"type": "ping"})
    seen = []
    while (message := await client.recv())["type"] != "pong":
        seen.append(message)
    assert message["ref"] == ref
    return seen


async def chats_until_pong(client: Client) -> list[dict[str, Any]]:
    return [m for m in await frames_until_pong(client) if m["type"].startswith("chat")]


async def say(client: Client, text: str) -> int:
    return await client.request({"type": "chat", "text": text})


async def refused(client: Client, frame: dict[str, Any]) -> dict[str, Any]:
    """The error answering `frame`, sent with a ref."""
    ref = await client.request(frame)
    error = await client.until("error")
    assert error["ref"] == ref
    return error


async def in_room(
    lobby: Lobby, name: str, room: str, cookie: str | None = None
) -> tuple[Client, dict[str, Any]]:
    """A new socket of `name` in `room`, and its `token` reply."""
    client = await lobby.client(name, cookie=cookie)
    token = await client.join(room)
    return client, token


async def test_a_message_reaches_the_rooms_sockets_and_nobody_else(lobby: Lobby) -> None:
    alice, token = await in_room(lobby, "alice", "R1")
    bob, _ = await in_room(lobby, "bob", "R1")
    elsewhere, _ = await in_room(lobby, "mod", "R2")
    lobby_only = await lobby.client("sub")
    before = datetime.now(UTC)
    await say(alice, "  <b>x</b><img src=x onerror=alert(1)>  ")
    got = await alice.until("chat")
    assert await bob.until("chat") == got
    at = datetime.fromisoformat(got.pop("at"))
    assert got == {
        "type": "chat",  # an event to the room: no ref
        "room": "R1",
        "from": token["participant"],
        "text": "<b>x</b><img src=x onerror=alert(1)>",
    }
    assert at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC) + timedelta(seconds=1)
    for outsider in (elsewhere, lobby_only):
        assert await chats_until_pong(outsider) == []
    for member in (alice, bob):
        assert await chats_until_pong(member) == []  # once, not twice


async def test_messages_keep_one_order_for_everyone_and_with_joins(lobby: Lobby) -> None:
    alice, _ = await in_room(lobby, "alice", "R1")
    bob, _ = await in_room(lobby, "bob", "R1")
    for n in range(3):
        await say(alice, f"a{n}")
        await say(bob, f"b{n}")
    carol, _ = await in_room(lobby, "mod", "R1")
    await say(carol, "c")
    await carol.until("chat")  # applied: everyone's copy went out before a later ping's pong
    heard = {}
    for client in (alice, bob):
        frames = await frames_until_pong(client)
        heard[client.name] = [
            m["text"] if m["type"] == "chat" else m["type"]
            for m in frames
            if m["type"] == "chat" or (m["type"] == "joined" and m["participant"]["user"] == "mod")
        ]
    assert heard["alice"] == heard["bob"]
    assert heard["alice"][-2:] == ["joined", "c"]
    assert sorted(heard["alice"][:6]) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert [t for t in heard["alice"] if t[0] == "a"] == ["a0", "a1", "a2"]


async def test_a_join_gets_the_last_fifty_right_after_its_token(lobby: Lobby) -> None:
    # A socket may send 5 messages in 5 s: eleven senders say 55 without waiting.
    cookie = await lobby.login("alice")
    senders = [(await in_room(lobby, "alice", "R1", cookie))[0] for _ in range(11)]
    for n in range(HISTORY + 5):
        await say(senders[n // 5], f"m{n}")
    await senders[-1].until("chat")
    while (await senders[-1].until("chat"))["text"] != f"m{HISTORY + 4}":
        pass
    bob = await lobby.client("bob")
    ref = await bob.request({"type": "join", "room": "R1", "nickname": "Bob"})
    token = await bob.expect("token")
    assert token["ref"] == ref
    history = await bob.expect("chat_history")
    assert history["room"] == "R1"
    assert "ref" not in history
    assert [m["text"] for m in history["messages"]] == [f"m{n}" for n in range(5, HISTORY + 5)]
    assert {m["from"]["user"] for m in history["messages"]} == {"alice"}
    assert all(m["type"] == "chat" and m["room"] == "R1" for m in history["messages"])
    assert (await bob.expect("joined"))["participant"] == token["participant"]
    # Each sender holds dozens of unread frames: read them (a full receive queue would hold
    # back the server's close frame until the close times out), then close.
    for sender in senders[:-1]:
        while (await sender.until("chat"))["text"] != f"m{HISTORY + 4}":
            pass
    for sender in senders:
        await sender.close()


async def test_a_join_into_a_room_without_messages_gets_no_history(lobby: Lobby) -> None:
    alice, _ = await in_room(lobby, "alice", "R1")
    await say(alice, "only here")
    bob = await lobby.client("bob")
    await bob.request({"type": "join", "room": "R2", "nickname": "Bob"})
    await bob.expect("token")
    assert (await bob.expect("joined"))["room"] == "R2"


@pytest.mark.parametrize("token", [False, True])
async def test_a_resume_gets_the_history_right_after_resumed(lobby: Lobby, token: bool) -> None:
    alice, joined = await in_room(lobby, "alice", "R1")
    bob, _ = await in_room(lobby, "bob", "R1")
    await say(alice, "before")
    await say(bob, "and <i>more</i>")
    await alice.until("chat")
    await alice.until("chat")
    await alice.close()
    again = await lobby.client("alice", cookie=alice.cookie)
    ref = await again.request({"type": "resume", "key": joined["resume_key"], "token": token})
    resumed = await again.expect("resumed")
    assert resumed["ref"] == ref
    assert ("token" in resumed) == token
    history = await again.expect("chat_history")
    assert [(m["from"]["user"], m["text"]) for m in history["messages"]] == [
        ("alice", "before"),
        ("bob", "and <i>more</i>"),
    ]
    await say(bob, "after")
    assert (await again.until("chat"))["text"] == "after"


async def test_the_history_is_gone_once_the_room_empties(lobby: Lobby) -> None:
    alice, _ = await in_room(lobby, "alice", "R1")
    bob, _ = await in_room(lobby, "bob", "R1")
    await say(alice, "secret plans")
    await alice.request({"type": "leave"})
    await bob.until("chat")
    await bob.request({"type": "leave"})
    await bob.until("room_closed")
    carol = await lobby.client("mod")
    await carol.request({"type": "join", "room": "R1", "nickname": "Carol"})
    await carol.expect("token")
    assert (await carol.expect("joined"))["room"] == "R1"  # no chat_history in between


async def test_a_message_of_the_most_characters_passes(lobby: Lobby) -> None:
    alice, _ = await in_room(lobby, "alice", "R1")
    longest = "👋" * (MAX_CHAT - 3) + "\n\té"
    # Raw UTF-8, as browsers' JSON.stringify sends it: 2,000-odd bytes, not 6,000 of escapes.
    await alice.send(json.dumps({"type": "chat", "text": longest}, ensure_ascii=False))
    assert (await alice.until("chat"))["text"] == longest


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "chat"}, "bad_request"),
        ({"type": "chat", "text": 42}, "bad_request"),
        ({"type": "chat", "text": None}, "bad_request"),
        ({"type": "chat", "text": "  \n "}, "invalid_chat"),
        ({"type": "chat", "text": "x" * (MAX_CHAT + 1)}, "invalid_chat"),
        ({"type": "chat", "text": "ring\x07"}, "invalid_chat"),
        ({"type": "chat", "text": "gpj.\u202eexe"}, "invalid_chat"),
        ({"type": "chat", "text": "\n".join("x" * 21)}, "invalid_chat"),
    ],
)
async def test_refusals_of_the_text(lobby: Lobby, frame: dict[str, Any], code: str) -> None:
    alice, _ = await in_room(lobby, "alice", "R1")
    bob, _ = await in_room(lobby, "bob", "R1")
    error = await refused(alice, frame)
    assert error["code"] == code
    if code == "invalid_chat":
        assert error["message"] == CHAT_RULE
    assert await chats_until_pong(bob) == []


async def test_a_lone_surrogate_is_refused(lobby: Lobby) -> None:
    alice, _ = await in_room(lobby, "alice", "R1")
    await alice.send('{"type": "chat", "text": "a\\ud83d", "ref": 9}')
    error = await alice.until("error")
    assert (error["ref"], error["code"]) == (9, "invalid_chat")


async def test_a_socket_in_no_room_may_not_chat(lobby: Lobby) -> None:
    alice, _ = await in_room(lobby, "alice", "R1")
    outsider = await lobby.client("bob")
    assert (await refused(outsider, {"type": "chat", "text": "hi"}))["code"] == "not_in_room"
    left, _ = await in_room(lobby, "mod", "R1")
    await left.request({"type": "leave"})
    await left.until("ok")
    assert (await refused(left, {"type": "chat", "text": "hi"}))["code"] == "not_in_room"
    assert await chats_until_pong(alice) == []


async def test_a_taken_over_socket_may_not_chat(lobby: Lobby) -> None:
    alice, joined = await in_room(lobby, "alice", "R1")
    second = await lobby.client("alice", cookie=alice.cookie)
    await second.request({"type": "resume", "key": joined["resume_key"]})
    await second.expect("resumed")
    await alice.until("taken_over")
    assert (await refused(alice, {"type": "chat", "text": "me?"}))["code"] == "not_in_room"
    await say(second, "me")
    assert (await second.until("chat"))["text"] == "me"


async def test_a_sixth_message_within_five_seconds_is_rate_limited(lobby: Lobby) -> None:
    alice, _ = await in_room(lobby, "alice", "R1")
    for n in range(5):
        await say(alice, f"m{n}")
    error = await refused(alice, {"type": "chat", "text": "one too many"})
    assert error["code"] == "rate_limited"
    texts = [m["text"] for m in await chats_until_pong(alice)]
    assert texts == [f"m{n}" for n in range(5)]
    other, _ = await in_room(lobby, "alice", "R1", cookie=alice.cookie)
    await say(other, "another socket has its own allowance")
    assert (await other.until("chat"))["text"].startswith("another")


# Two instances, one Redis


async def test_a_message_sent_on_one_instance_reaches_the_room_on_the_other(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis)
    alice, token = await in_room(a, "alice", "R1")
    bob, _ = await in_room(b, "bob", "R1")
    lobby_only = await b.client("sub")
    elsewhere, _ = await in_room(b, "mod", "R2")
    await bob.until("joined")  # his own
    await say(alice, "across <u>instances</u>")
    got = await bob.until("chat", timeout=10)
    assert (got["from"], got["text"]) == (token["participant"], "across <u>instances</u>")
    assert await alice.until("chat") == got
    for outsider in (lobby_only, elsewhere):
        assert await chats_until_pong(outsider) == []
    # History on the other instance: a join there, and a page reloaded onto it.
    carol = await b.client("mod")
    await carol.request({"type": "join", "room": "R1", "nickname": "Carol"})
    await carol.until("token", timeout=10)
    history = await carol.expect("chat_history")
    assert history["messages"] == [got]
    await alice.close()
    again = await b.client("alice")
    await again.request({"type": "resume", "key": token["resume_key"], "token": True})
    await again.until("resumed", timeout=10)
    assert (await again.expect("chat_history"))["messages"] == [got]
