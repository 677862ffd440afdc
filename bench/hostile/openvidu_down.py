"""Case 7: OpenVidu down. The stand-in stops answering, later answers 500: how fast a
join fails while the breaker is open, and how long until joins succeed again."""

from __future__ import annotations

import asyncio
import math

from bench.hostile.accounts import user
from bench.hostile.figures import ms, now, pct, secs
from bench.hostile.raw_client import Msg, ws_lobby
from bench.hostile.report import Row
from bench.hostile.server import Bench
from tests.openvidu_standin import Fault


async def case_openvidu_down(b: Bench) -> Row:
    standin = b.standin
    async with b.server(
        "openvidu-down", OPENVIDU_TIMEOUT="1", LOBBY_JOINS_PER_MINUTE="1000"
    ) as srv:
        client = await ws_lobby(srv.port, b.cookies[user(0)])
        try:
            ref = [0]

            async def join() -> tuple[float, float, Msg]:
                """(sent, answered, reply); a token is given back with a `leave` at once."""
                ref[0] += 1
                sent = now()
                client.send({"type": "join", "room": "down", "nickname": "n", "ref": ref[0]})
                answered, reply = await client.reply(ref[0], within=30)
                if reply["type"] == "token":
                    ref[0] += 1
                    client.send({"type": "leave", "ref": ref[0]})
                    await client.reply(ref[0])
                return sent, answered, reply

            s, a, reply = await join()
            assert reply["type"] == "token", reply
            healthy = a - s
            parts, notes = [], []
            outages: list[tuple[Fault, float]] = [("slow", 2.5), (500, 7.5)]
            for fault, outage in outages:
                standin.delay = 5.0
                calls_before = len(standin.calls)
                standin.fault = fault
                s, a, reply = await join()
                assert reply.get("code") == "media_unavailable", reply
                first, tripped = a - s, a
                fast: list[float] = []
                for _ in range(10):
                    s, a, reply = await join()
                    assert reply.get("code") == "media_unavailable", reply
                    fast.append(a - s)
                await asyncio.sleep(max(0.0, tripped + outage - now()))
                standin.fault = None
                back = now()
                during = standin.calls[calls_before:]
                recovered, tries = math.nan, 0
                while now() - back < 40:
                    tries += 1
                    s, a, reply = await join()
                    if reply["type"] == "token":
                        recovered = a - back
                        break
                    await asyncio.sleep(0.2)
                label = "no answer for 5 s" if fault == "slow" else "HTTP 500"
                parts.append(
                    f"**{label}**: first join failed `media_unavailable` after {ms(first)}; the "
                    f"next 10 in {ms(pct(fast, 50))} median, {ms(max(fast))} max; OpenVidu back "
                    f"{outage:g} s after the trip → first successful join **{secs(recovered)} "
                    f"later**"
                )
                probes = sum(1 for c in during if c.method == "GET")
                notes.append(
                    f"{label}: OpenVidu received {len(during)} calls during the outage "
                    f"({probes} of them breaker probe{'' if probes == 1 else 's'}, "
                    f"`GET /sessions`); the 10 fast failures "
                    f"made none. {tries} join attempts, 0.2 s apart, until one succeeded."
                )
        finally:
            standin.fault = None
            client.close()
    row = Row(
        "7. OpenVidu down",
        "`OPENVIDU_TIMEOUT=1`; the stand-in stops answering (5 s delay), later answers 500; "
        "`LOBBY_JOINS_PER_MINUTE=1000` so retries are not rate-limited",
        ". ".join(parts),
        f"A healthy first join (creates the OpenVidu session): {ms(healthy)}. While the "
        "breaker is open a join costs no OpenVidu "
        "call; probes come 1, 2, 4, 8 … s apart (30 s cap), so the recovery delay grows "
        "with the outage: up to as long again",
        notes,
    )
    return row
