"""The hub and its connections (`lobby.hub`): fan-out, cut-offs and closes, on fake writers."""

from __future__ import annotations

import json

from lobby.hub import Hub
from lobby.rules.frames import text_frame
from lobby.rules.protocol import CloseCode
from tests.fakes import FakeSocket, decode_text_frame, fake_socket


def hub_of(*sockets: FakeSocket) -> Hub:
    hub = Hub()
    for socket in sockets:
        hub.add(socket.conn)
    return hub


def test_a_broadcast_is_framed_once_and_the_same_bytes_go_to_everyone() -> None:
    sockets = [fake_socket("alice"), fake_socket("bob"), fake_socket("alice", session_id="s2")]
    hub = hub_of(*sockets)
    hub.broadcast('{"type":"room_closed","room":"R1"}')
    [frame] = sockets[0].writer.frames
    assert frame == text_frame(b'{"type":"room_closed","room":"R1"}')
    assert all(s.writer.frames[0] is frame for s in sockets)  # one object: framed once
    assert [s.take() for s in sockets] == [[{"type": "room_closed", "room": "R1"}]] * 3


def test_send_reaches_one_socket_only_in_any_size() -> None:
    alice, bob = fake_socket("alice"), fake_socket("bob")
    hub_of(alice, bob)
    for size in (10, 200, 70_000):  # the three length encodings of a frame
        alice.conn.send(json.dumps({"type": "pong", "pad": "x" * size}))
    assert [len(m["pad"]) for m in alice.take()] == [10, 200, 70_000]
    assert [len(decode_text_frame(f)) for f in alice.writer.frames][-1] > 1 << 16
    assert bob.take() == []


def test_a_socket_past_max_buffered_is_cut_with_4008_and_nobody_else_waits() -> None:
    stuck = fake_socket("alice", max_buffered=1000)
    others = [fake_socket("bob", max_buffered=1000), fake_socket("mod", max_buffered=1000)]
    hub = hub_of(stuck, *others)
    stuck.writer.backlog = 1000  # at the limit: still fine
    hub.broadcast('{"type":"pong","ref":1}')
    assert stuck.conn.open
    stuck.writer.backlog = 1001
    hub.broadcast('{"type":"pong","ref":2}')
    assert stuck.conn.close_code == CloseCode.TOO_SLOW
    assert stuck.writer.cuts == [(4008, "too slow: stopped reading")]
    hub.broadcast('{"type":"pong","ref":3}')  # nothing more is written to it
    assert [m["ref"] for m in stuck.take()] == [1, 2]
    for socket in others:
        assert [m["ref"] for m in socket.take()] == [1, 2, 3]
        assert socket.conn.open
    assert stuck.closer.closes == []  # cut, not closed: no waiting for its answer


def test_a_refused_write_marks_the_connection_closed() -> None:
    gone, bob = fake_socket("alice"), fake_socket("bob")
    hub = hub_of(gone, bob)
    gone.writer.refuse = True
    hub.broadcast('{"type":"pong","ref":1}')
    assert gone.conn.close_code == 1006
    assert not gone.conn.open
    gone.writer.refuse = False
    gone.conn.send('{"type":"pong","ref":2}')  # never written again
    assert gone.take() == []
    assert (gone.writer.cuts, gone.closer.closes) == ([], [])
    assert [m["ref"] for m in bob.take()] == [1]


def test_close_or_cut_happens_exactly_once_and_the_first_code_stays() -> None:
    closed, cut = fake_socket("alice"), fake_socket("bob")
    closed.conn.close(CloseCode.SESSION_ENDED, "session ended")
    closed.conn.close(CloseCode.RESTARTING, "server restarting")
    closed.conn.cut(CloseCode.FLOODING, "too many messages")
    assert closed.closer.closes == [(4001, "session ended")]
    assert closed.writer.cuts == []
    assert closed.conn.close_code == 4001
    cut.conn.cut(CloseCode.FLOODING, "too many messages")
    cut.conn.close(CloseCode.NORMAL)
    cut.conn.cut(CloseCode.TOO_SLOW, "too slow")
    assert cut.writer.cuts == [(1008, "too many messages")]
    assert cut.closer.closes == []
    assert cut.conn.close_code == 1008
    closed.conn.send('{"type":"pong"}')  # a closing socket is sent nothing more
    assert closed.take() == []


def test_sockets_are_counted_per_user() -> None:
    tab1, tab2, bob = fake_socket("alice"), fake_socket("alice"), fake_socket("bob")
    hub = hub_of(tab1, tab2, bob)
    assert (hub.sockets_of("alice"), hub.sockets_of("bob"), hub.sockets_of("mod")) == (2, 1, 0)
    assert len(hub) == 3
    hub.remove(tab1.conn)
    hub.remove(tab1.conn)  # twice: counted once
    assert hub.sockets_of("alice") == 1
    hub.remove(tab2.conn)
    assert hub.sockets_of("alice") == 0
    assert list(hub) == [bob.conn]
    assert len(hub) == 1


def test_connections_are_found_by_id_and_by_session() -> None:
    a1 = fake_socket("alice", session_id="s1")
    a2 = fake_socket("alice", session_id="s1")
    a3 = fake_socket("alice", session_id="s2")
    hub = hub_of(a1, a2, a3)
    assert hub.of_session("s1") == [a1.conn, a2.conn]
    assert hub.of_session("s9") == []
    assert hub.get(a3.conn.id) is a3.conn
    assert len({a1.conn.id, a2.conn.id, a3.conn.id}) == 3
    hub.remove(a3.conn)
    assert hub.get(a3.conn.id) is None
    assert repr(a1.conn) == f"<Conn {a1.conn.id} alice>"


def test_iterating_the_hub_is_safe_while_connections_go() -> None:
    sockets = [fake_socket(name) for name in ("alice", "bob", "mod")]
    hub = hub_of(*sockets)
    for conn in hub:
        hub.remove(conn)
    assert len(hub) == 0
