"""The hub and its connections (`lobby.hub`): fan-out, cut-offs and closes, the keepalive's
pings and the heap freezer, on fake writers."""

from __future__ import annotations

import gc
import json

from prometheus_client.parser import text_string_to_metric_families

from lobby.hub import HeapFreezer, Hub, Keepalive
from lobby.rules.frames import text_frame
from lobby.rules.protocol import CloseCode
from lobby.web.metrics import Metrics
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


def started(keepalive: Keepalive) -> Keepalive:
    """The keepalive past its first interval (nobody is pinged then), at time 0."""
    keepalive.sweep(-keepalive.interval)
    return keepalive


def sweep_for(keepalive: Keepalive, start: float, seconds: float) -> float:
    """Run the sweep tick by tick from `start` for `seconds`; the time it stopped at."""
    now = start
    while now < start + seconds:
        keepalive.sweep(now)
        now += keepalive.tick
    return now


def test_every_socket_is_pinged_once_an_interval_in_batches_sharing_a_frame() -> None:
    sockets = [fake_socket(f"u{i}", session_id=f"s{i}") for i in range(40)]
    keepalive = started(Keepalive(hub_of(*sockets), interval=1.0, timeout=5.0, tick=0.1))
    now = sweep_for(keepalive, 0.0, 0.95)
    assert [len(s.writer.pings) for s in sockets] == [1] * 40
    payloads = [s.writer.pings[0] for s in sockets]
    # Spread: several batches, none holding everyone; within a batch, one payload.
    batches = {p: payloads.count(p) for p in payloads}
    assert len(batches) >= 5
    assert max(batches.values()) < 10
    for s in sockets:
        s.writer.pong()
    sweep_for(keepalive, now + 0.1, 1.0)
    assert [len(s.writer.pings) for s in sockets] == [2] * 40
    assert not any(s.writer.cuts for s in sockets)


def test_a_socket_without_a_pong_is_cut_at_its_deadline_and_the_others_stay() -> None:
    quiet, alive = fake_socket("quiet", session_id="sq"), fake_socket("alive", session_id="sa")
    keepalive = started(Keepalive(hub_of(quiet, alive), interval=1.0, timeout=0.5, tick=0.1))
    now = 0.0
    while now < 3.0:
        keepalive.sweep(now)
        alive.writer.pong()  # answers every ping at once
        now += 0.1
    assert quiet.writer.pings
    assert len(quiet.writer.pings) == 1
    assert quiet.writer.cuts == [(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")]
    assert not quiet.conn.open
    assert len(alive.writer.pings) >= 2
    assert alive.conn.open
    assert not alive.writer.cuts


def test_an_unanswered_ping_is_not_repeated_before_its_deadline() -> None:
    """A timeout longer than the interval: one ping in flight, then the cut."""
    slow = fake_socket()
    keepalive = started(Keepalive(hub_of(slow), interval=0.4, timeout=1.0, tick=0.1))
    sweep_for(keepalive, 0.0, 0.95)
    assert len(slow.writer.pings) == 1
    assert slow.conn.open
    slow.writer.pong()  # late, but before the deadline: it stays, and is pinged again
    sweep_for(keepalive, 1.0, 0.5)
    assert slow.conn.open
    assert len(slow.writer.pings) == 2


def test_nobody_is_pinged_in_the_first_interval() -> None:
    fresh = fake_socket()
    keepalive = Keepalive(hub_of(fresh), interval=1.0, timeout=0.5, tick=0.1)
    sweep_for(keepalive, 0.0, 0.95)
    assert fresh.writer.pings == []
    sweep_for(keepalive, 1.0, 1.0)
    assert len(fresh.writer.pings) == 1


def test_a_closed_socket_is_neither_pinged_nor_cut() -> None:
    gone = fake_socket()
    gone.conn.close(1000)
    keepalive = started(Keepalive(hub_of(gone), interval=0.4, timeout=0.2, tick=0.1))
    sweep_for(keepalive, 0.0, 2.0)
    assert gone.writer.pings == []
    assert gone.writer.cuts == []


def test_the_heap_is_frozen_after_each_wave_and_collected_after_as_many_left() -> None:
    sockets = [fake_socket(f"u{i}", session_id=f"s{i}") for i in range(6)]
    hub = hub_of(sockets[0])
    freezer = HeapFreezer(hub, wave=2)
    try:
        assert freezer.check() is None  # below a wave: a small server never freezes
        hub.add(sockets[1].conn)
        assert freezer.check() == "froze"
        assert gc.get_freeze_count() > 0
        hub.add(sockets[2].conn)
        assert freezer.check() is None
        hub.add(sockets[3].conn)
        assert freezer.check() == "froze"
        for s in sockets[:3]:
            hub.remove(s.conn)
        assert freezer.check() is None  # 3 left of the 4 frozen: not yet
        hub.remove(sockets[3].conn)
        assert freezer.check() == "collected"
        assert freezer.check() is None
    finally:
        gc.unfreeze()


def test_the_hub_counts_each_broadcast_once_and_each_slow_cut() -> None:
    metrics = Metrics("p2p")
    stuck = fake_socket("alice", max_buffered=1000)
    others = [fake_socket("bob"), fake_socket("mod")]
    hub = Hub(metrics=metrics)
    for socket in (stuck, *others):
        hub.add(socket.conn)
    hub.broadcast('{"type":"pong","ref":1}')
    stuck.writer.backlog = 1001
    hub.broadcast('{"type":"pong","ref":2}')  # cuts the stuck one off
    stuck.conn.send('{"type":"pong","ref":3}')  # already cut: not counted again
    scraped = {
        s.name: s.value
        for family in text_string_to_metric_families(metrics.text().decode())
        for s in family.samples
    }
    assert scraped["lobby_events_broadcast_total"] == 2
    assert scraped["lobby_frames_written_total"] == 6  # one increment of 3 per event
    assert scraped["lobby_fanout_seconds_count"] == 2
    assert scraped["lobby_slow_sockets_cut_total"] == 1
