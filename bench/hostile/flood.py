"""Case 5: a message flood. One socket writes thousands of frames at once, then one
that also ignores the server's close frame and sends on: how fast the rate limit ends it
and what the frames cost."""

from __future__ import annotations

import asyncio
import math

from bench.hostile.accounts import user
from bench.hostile.figures import ms, now, secs
from bench.hostile.raw_client import WsClient, close_all, ws_lobby
from bench.hostile.report import Row
from bench.hostile.server import Bench
from bench.wsclient import client_frame

UVICORN_CLOSE_TIMEOUT = 10.0  # uvicorn's sans-I/O protocol: wait for the peer's close frame


def ping_frames(first: int, count: int) -> bytes:
    return b"".join(
        client_frame(f'{{"type":"ping","ref":{ref}}}'.encode())
        for ref in range(first, first + count)
    )


async def case_flood(b: Bench) -> Row:
    count = 20_000
    async with b.server("flood") as srv:
        clients: list[WsClient] = []
        try:
            flooder = await ws_lobby(srv.port, b.cookies[user(0)])
            clients.append(flooder)
            frames = ping_frames(0, count)
            await asyncio.sleep(0.3)
            cpu0, t0 = srv.cpu(), now()
            flooder.write(frames)  # as fast as the kernel takes it
            lost_at = await asyncio.wait_for(asyncio.shield(flooder.lost), 60)
            await asyncio.sleep(0.2)
            cpu1 = srv.cpu()
            kinds: dict[str, int] = {}
            while not flooder.inbox.empty():
                _, message = flooder.inbox.get_nowait()
                kind = message.get("code") or message["type"]
                kinds[kind] = kinds.get(kind, 0) + 1

            # B: the same, but it never answers the close frame and keeps sending.
            rude = await ws_lobby(srv.port, b.cookies[user(1)])
            clients.append(rude)
            rude.silent = True
            batch = ping_frames(0, 1000)
            sent = sent_after = 0
            cpu_close = t_close = math.nan
            tb0 = now()
            while not rude.lost.done() and now() - tb0 < 30:
                if rude.close_at is not None and math.isnan(t_close):
                    cpu_close, t_close = srv.cpu(), rude.close_at
                if rude.buffered() < 1 << 18:
                    rude.write(batch)
                    sent += 1000
                    if rude.close_at is not None:
                        sent_after += 1000
                await asyncio.sleep(0.001)
            rude_lost = rude.lost.result() if rude.lost.done() else math.nan
            cpu_end = srv.cpu()
        finally:
            close_all(clients)
    closed = (flooder.close_at - t0) if flooder.close_at is not None else math.nan
    if math.isnan(t_close):  # the cut: 1008 written, then the connection closed at once
        t_close, cpu_close = tb0, cpu_end
    window = rude_lost - t_close
    seen_close = (
        f"closed with **{flooder.close_code} {ms(closed)}** after the first frame"
        if flooder.close_code is not None
        else "cut off (1008 sent, then the connection closed; with its frames still unread "
        "the kernel answers with a reset, so a flooder may never read the 1008)"
    )
    rude_text = (
        f"(b) 1008 after {ms(t_close - tb0)}, but the connection lived **{secs(window)} longer** "
        f"and took in {sent_after:,} more frames"
        if window > 0.5
        else f"(b) dropped **{ms(rude_lost - tb0)}** after it started, "
        f"{sent:,} frames written in all"
    )
    row = Row(
        "5. Message flood",
        f'One socket writes {count:,} `{{"type":"ping"}}` frames at once (defaults: '
        "`LOBBY_MESSAGE_RATE=10`, `LOBBY_MESSAGE_BURST=30`); (b) the same flooder ignoring "
        "the close frame and sending on",
        f"Answered {kinds.get('pong', 0)} `pong` + {kinds.get('rate_limited', 0)} "
        f"`rate_limited`, then {seen_close}; TCP gone {ms(lost_at - t0)} after the first "
        f"frame. {rude_text}",
        f"CPU {cpu1 - cpu0:.2f} s for the {count:,} frames "
        f"(≈{(cpu1 - cpu0) / count * 1e6:.0f} µs each)"
        + (
            f"; (b) {(cpu_end - cpu_close) / window * 100:.0f}% of a core for those {secs(window)}"
            if window > 0.5
            else ""
        ),
    )
    row.notes.append(
        f"Replies seen by the flooder: {kinds}. After the 1008 the server stops reading the "
        "socket at once (`Conn.cut`), so a flooder that ignores the close costs nothing more."
    )
    if window > 5:
        row.findings.append(
            f"**A flooder can shrug off the 1008.** One that ignores the close frame and sends "
            f"on keeps its connection {secs(window)} longer (uvicorn's close timeout, "
            f"{UVICORN_CLOSE_TIMEOUT:g} s, which lobby settings do not reach), and meanwhile the "
            f"server reads, parses and drops everything it sends: {sent_after:,} frames, "
            f"{(cpu_end - cpu_close) / window * 100:.0f}% of a core for one socket. Reconnecting "
            "after each drop (a handshake costs under a millisecond) would make it last; "
            "aborting the transport shortly after the 1008, as `Writer.cut` does after a 4008, "
            "would end it at once."
        )
    return row
