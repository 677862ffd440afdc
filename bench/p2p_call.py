"""How fast a peer-to-peer call comes up, and what its signalling costs the lobby.

    scripts/loopback-only .venv/bin/python -m bench.p2p_call [--rounds 10]

Two Chromium pages with fake cameras, a lobby with p2p rooms (in this process,
like the tests), all on loopback in a network namespace of its own. Each round:
Alice is in a room, Bob clicks Join; we time until each page shows the other's
video (`videoWidth > 0`), then Bob reloads and we time until Alice shows his
video again. We also count the `signal` frames the lobby relayed for the setup,
and time the relay rule itself (parse, route, render) in-process. Writes
docs/bench/p2p.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lobby.app import create_app, media_backend  # noqa: E402
from lobby.rules import protocol, relay  # noqa: E402
from lobby.rules.presence import Participant, Presence  # noqa: E402
from lobby.server import uvicorn_config  # noqa: E402
from tests.conftest import make_users  # noqa: E402
from tests.conftest import test_settings as lobby_settings  # noqa: E402
from tests.e2e.tabs import CHROMIUM, CHROMIUM_ARGS, Tabs, loopback_only  # noqa: E402
from tests.e2e.test_p2p import participant_id  # noqa: E402
from tests.live import LiveServer  # noqa: E402
from tests.openvidu_standin import running_standin  # noqa: E402

OUT = ROOT / "docs" / "bench" / "p2p.md"
SHOWS = "(pid) => document.querySelector(`figure.tile[data-participant='${pid}'] video`)"


async def shows_video(page: Page, pid: str) -> None:
    await page.wait_for_function(f"(pid) => ({SHOWS})(pid)?.videoWidth > 0", arg=pid, polling=10)


async def one_round(tabs: Tabs, url: str, room: str) -> dict[str, float]:
    alice = await tabs.login(url, "alice")
    bob = await tabs.login(url, "bob")
    await alice.create_room(room, "Alice")
    await alice.in_call()
    await bob.page.fill("#nickname-input", "Bob")
    started = time.monotonic()
    await bob.card(room).locator("button.room-join").click()
    await expect(bob.page.locator("#call")).to_have_attribute("data-state", "connected")
    a, b = participant_id(alice), participant_id(bob)
    await asyncio.gather(shows_video(alice.page, b), shows_video(bob.page, a))
    both = time.monotonic() - started
    signals = [f for f in alice.lobby_frames + bob.lobby_frames if f.get("type") == "signal"]
    size = sum(len(json.dumps(f, separators=(",", ":"))) for f in signals)
    await alice.page.evaluate("window.testMarker = true")
    started = time.monotonic()
    await bob.page.reload()
    await expect(bob.page.locator("#call")).to_have_attribute("data-state", "connected")
    await alice.page.wait_for_function(
        f"(pid) => window.peerConnections.length > 1 && ({SHOWS})(pid)?.videoWidth > 0",
        arg=b,
        polling=10,
    )
    back = time.monotonic() - started
    await alice.close()
    await bob.close()
    return {"join": both * 1000, "reload": back * 1000, "signals": len(signals), "bytes": size}


def relay_cost(rounds: int = 20000) -> float:
    """µs to parse, route and render one `candidates` signal (the most common kind)."""
    presence: Presence[None] = Presence()
    presence.join(1, Participant("p_a", "alice", "Alice", "PUBLISHER"), "A", "ka", None)
    presence.join(2, Participant("p_b", "bob", "Bob", "PUBLISHER"), "A", "kb", None)
    candidate = "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0 ufrag x"
    data = {"kind": "candidates", "link": "l1", "peer_link": "l2"}
    frame = json.dumps({"type": "signal", "to": "p_b", "data": {**data, "candidates": [
        {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "x"}
    ] * 2}})  # fmt: skip
    started = time.perf_counter()
    for _ in range(rounds):
        request = protocol.parse(frame)
        assert isinstance(request, protocol.Signal)
        relay.route(presence, 1, request)
    return (time.perf_counter() - started) / rounds * 1e6


def table(rows: list[dict[str, float]]) -> str:
    def stats(key: str) -> str:
        values = sorted(r[key] for r in rows)
        p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
        return f"{statistics.median(values):.0f} | {p90:.0f} | {values[-1]:.0f}"

    return "\n".join(
        [
            "| measure | median | p90 | max |",
            "| --- | ---: | ---: | ---: |",
            f"| Bob clicks Join → both pages show the other's video (ms) | {stats('join')} |",
            f"| Bob reloads → Alice shows his video again (ms) | {stats('reload')} |",
            f"| `signal` frames relayed for one setup | {stats('signals')} |",
            f"| their bytes on the wire | {stats('bytes')} |",
        ]
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if not loopback_only():
        sys.exit("run it in a loopback-only namespace: scripts/loopback-only .venv/bin/python -m …")
    async with running_standin() as standin:  # unused by p2p rooms; the settings want a URL
        settings = lobby_settings(standin, media="p2p", reconnect_grace=10.0, log_level="warning")
        app = create_app(settings, users=make_users(), media=media_backend(settings))
        async with (
            LiveServer(config=uvicorn_config(app, settings)) as live,
            async_playwright() as p,
        ):
            browser = await p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            rows = []
            for n in range(args.rounds):
                tabs = Tabs(browser)
                rows.append(await one_round(tabs, live.http, f"R{n}"))
                await tabs.close()
            await browser.close()
    cost = relay_cost()
    report = "\n".join(
        [
            "# Peer-to-peer calls: setup time and signalling cost",
            "",
            f"`scripts/loopback-only .venv/bin/python -m bench.p2p_call --rounds {args.rounds}`:"
            " two headless Chromium pages (fake camera and microphone, 640x480) on loopback, the"
            " lobby in the same process; each round a fresh pair of tabs.",
            "",
            table(rows),
            "",
            f"The relay rule (parse, check, route, render one `candidates` signal): {cost:.1f} µs"
            " of server CPU per signal, in-process.",
            "",
        ]
    )
    OUT.write_text(report)
    print(report)


if __name__ == "__main__":
    asyncio.run(main())
