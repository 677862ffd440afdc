"""Peer-to-peer signalling between the participants of one room: the routing rule.

A page addresses a `signal` to a participant id; the lobby delivers it to the
socket holding that participant, stamped with the sender's participant id
(taken from presence, never from the frame, so nobody can speak for another),
and only within the sender's own room. Viewers (SUBSCRIBER) may receive media
but not offer to send any. A participant that is away (its page is reloading or
reconnecting) has no socket: its signals are dropped, as its page starts its
connections over with `hello` when it is back.

Pure: presence in, a delivery or an error out; no sockets.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from lobby.rules import render
from lobby.rules.grants import can_publish
from lobby.rules.presence import Presence
from lobby.rules.protocol import ProtocolError, Signal


@dataclass(frozen=True, slots=True)
class Delivery:
    socket: Hashable
    text: str


def route(
    presence: Presence[Any], socket: Hashable, signal: Signal
) -> Delivery | ProtocolError | None:
    """Where `socket`'s `signal` goes; an error for the sender; None when dropped (peer away)."""
    sender = presence.member_of(socket)
    if sender is None:
        return ProtocolError("unknown_peer", "Join a room before signalling.", signal.ref)
    target = presence.member(signal.to)
    if target is None or target.room != sender.room or target is sender:
        return ProtocolError(
            "unknown_peer", f"There is no other participant {signal.to!r} in your room.", signal.ref
        )
    if signal.sends_media and not can_publish(sender.participant.role):
        return ProtocolError(
            "not_allowed", "Viewers receive audio and video but cannot send them.", signal.ref
        )
    if target.socket is None:
        return None
    return Delivery(target.socket, render.signal(sender.participant.id, signal.data))
