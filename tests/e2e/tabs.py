"""Browser tabs for the tests: one page per context, with a record of everything it did.

Each `Tab` is a page in its own browser context (its own cookies: one user),
and keeps what the tests assert on and what a failure report needs: every
request the page made (HTTP and WebSocket), the frames its lobby socket
received, its console output and any dialog it tried to open.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Locator,
    Page,
    Request,
    WebSocket,
    expect,
)

from tests.conftest import PASSWORD

# Debian's Chromium, never a downloaded one; flags that keep it quiet and give it a fake camera.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # Raw-IP ICE candidates: no mDNS names, so no multicast announcements on the LAN.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def loopback_only() -> bool:
    """Whether this process runs in a network namespace with nothing but loopback.

    Only there may Chromium send WebRTC media: with `--allow-loopback-in-peer-connection`
    it then offers 127.0.0.1 candidates and nothing else (`make test` runs the suite
    under `unshare -n`; elsewhere media would go to the machine's external address).
    """
    return [name for _, name in socket.if_nameindex()] == ["lo"]


if loopback_only():
    CHROMIUM_ARGS.append("--allow-loopback-in-peer-connection")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Page-side probes: camera/microphone requests (so a test can tell a page never
# asked) and the ICE servers of every RTCPeerConnection (WebRTC traffic is not
# seen by Playwright; its STUN/TURN servers are where it would go).
PROBES = """
window.getUserMediaCalls = 0;
if (navigator.mediaDevices) {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (...args) => {
    window.getUserMediaCalls += 1;
    return original(...args);
  };
}
window.iceServersUsed = [];
window.peerConnections = [];
const NativePeerConnection = window.RTCPeerConnection;
if (NativePeerConnection) {
  window.RTCPeerConnection = function (config, ...rest) {
    window.iceServersUsed.push(JSON.parse(JSON.stringify(config?.iceServers ?? [])));
    const pc = new NativePeerConnection(config, ...rest);
    window.peerConnections.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = NativePeerConnection.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, NativePeerConnection);
}
"""


# For failure reports: each connection's states and each video's playback.
DIAGNOSIS = """async () => {
  const connections = [];
  for (const pc of window.peerConnections) {
    const inbound = [];
    for (const r of (await pc.getStats()).values()) {
      if (r.type !== "inbound-rtp") continue;
      inbound.push(`${r.kind}:${r.packetsReceived}/${r.framesDecoded}`);
    }
    const states = [pc.connectionState, pc.iceConnectionState, pc.signalingState];
    connections.push(`${states.join("/")} ${inbound}`);
  }
  const videos = [...document.querySelectorAll("#videos figure.tile")].map((tile) => {
    const v = tile.querySelector("video");
    const size = v && `${v.videoWidth}x${v.videoHeight}`;
    const what = v ? `${size} paused=${v.paused} ready=${v.readyState}` : "none";
    return `${tile.dataset.participant}: ${what}`;
  });
  return { connections, videos };
}"""


def is_local(url: str) -> bool:
    """Whether a request to `url` stays on this machine."""
    parts = urlsplit(url)
    if parts.scheme in {"data", "blob", "about"}:
        return True
    return parts.hostname in LOCAL_HOSTS


class Tab:
    """A page in its own browser context, and everything it did."""

    def __init__(self, name: str, context: BrowserContext, page: Page) -> None:
        self.name = name
        self.context = context
        self.page = page
        self.requests: list[str] = []  # every URL asked for, HTTP and WebSocket
        self.lobby_frames: list[dict[str, Any]] = []  # received on /ws, decoded
        self.log: list[str] = []  # console, page errors, failed requests, dialogs
        self.errors: list[tuple[str, str]] = []  # uncaught errors: (message, stack)
        self.dialogs: list[str] = []
        self.closed = False
        context.on("request", self._on_request)
        page.on("websocket", self._on_websocket)
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)
        page.on("requestfailed", lambda r: self.log.append(f"[requestfailed] {r.url}"))
        page.on("dialog", self._on_dialog)

    # -- recording ------------------------------------------------------------------

    def _on_page_error(self, error: Error) -> None:
        self.log.append(f"[pageerror] {error}")
        self.errors.append((error.message, error.stack or ""))

    def _on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _on_websocket(self, websocket: WebSocket) -> None:
        self.requests.append(websocket.url)
        if urlsplit(websocket.url).path == "/ws":
            websocket.on("framereceived", self._on_lobby_frame)

    def _on_lobby_frame(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.lobby_frames.append(json.loads(payload))

    def _on_console(self, message: ConsoleMessage) -> None:
        self.log.append(f"[{message.type}] {message.text}")

    async def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        self.log.append(f"[dialog] {dialog.type}: {dialog.message}")
        await dialog.dismiss()

    def frames(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.lobby_frames if frame.get("type") == kind]

    def issued_tokens(self) -> list[str]:
        """The OpenVidu tokens the lobby gave this tab, in order (`token` and `resumed`)."""
        kinds = {"token", "resumed"}
        return [f["token"] for f in self.lobby_frames if f.get("type") in kinds and f.get("token")]

    # -- driving the pages ----------------------------------------------------------

    async def login(self, base_url: str, user: str, password: str = PASSWORD) -> None:
        """Sign in through the real form and wait for the live lobby."""
        await self.page.goto(base_url + "/")
        await self.page.fill("input[name=user]", user)
        await self.page.fill("input[name=pass]", password)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_url(re.compile(r"/lobby$"))
        await expect(self.badge).to_have_attribute("data-state", "connected")

    async def create_room(self, room: str, nickname: str, *, check: bool = True) -> None:
        """Type a room name and a nickname into the join form and submit it; with `check`,
        a publisher then joins from the pre-join check as it is."""
        await self.page.fill("#room-input", room)
        await self.page.fill("#nickname-input", nickname)
        await self.page.click("#join-submit")
        if check:
            await self.pass_prejoin()

    async def join_listed(self, room: str, nickname: str, *, check: bool = True) -> None:
        """Click Join on the room's card in the lobby (with `check`, pass the pre-join check)."""
        await self.page.fill("#nickname-input", nickname)
        await self.card(room).locator("button.room-join").click()
        if check:
            await self.pass_prejoin()

    async def pass_prejoin(self) -> None:
        """A publisher's page shows the pre-join check: press "Join now"; a viewer's does not."""
        role = await self.page.locator("#main").get_attribute("data-role")
        if role != "SUBSCRIBER":
            await self.page.locator("#prejoin-join").click()

    async def in_call(self, state: str = "connected") -> None:
        await expect(self.page.locator("#call")).to_have_attribute("data-state", state)

    async def mark(self) -> None:
        """Set a marker in the page: `still_same_page` fails after a reload or navigation."""
        await self.page.evaluate("window.testMarker = true")

    async def still_same_page(self) -> bool:
        return bool(await self.page.evaluate("window.testMarker === true"))

    async def watch_removals(self, selector: str) -> None:
        """Record elements matching `selector` that leave the page (moves do not count)."""
        await self.page.evaluate(
            """(selector) => {
                window.removedNodes = [];
                new MutationObserver((records) => {
                  for (const record of records) {
                    for (const node of record.removedNodes) {
                      if (node.nodeType !== 1) continue;
                      if (node.matches(selector)) window.removedNodes.push(node);
                      window.removedNodes.push(...node.querySelectorAll(selector));
                    }
                  }
                }).observe(document.documentElement, { childList: true, subtree: true });
            }""",
            selector,
        )

    async def removed(self) -> list[str]:
        """Watched elements that were removed and are still gone."""
        found: list[str] = await self.page.evaluate(
            "window.removedNodes.filter((n) => !n.isConnected).map((n) => n.outerHTML)"
        )
        return found

    # -- what is on the page --------------------------------------------------------

    @property
    def badge(self) -> Locator:
        return self.page.locator("#connection-state")

    def card(self, room: str) -> Locator:
        return self.page.locator(f'li.room-card[data-room="{room}"]')

    def chip(self, participant_id: str, where: str = "#rooms") -> Locator:
        return self.page.locator(f'{where} li.chip[data-participant="{participant_id}"]')

    def tile(self, kind: str) -> Locator:
        return self.page.locator(f'#videos figure.tile[data-tile="{kind}"]')

    # -- the end ----------------------------------------------------------------------

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.context.close()

    async def screenshot(self, folder: Path) -> list[Path]:
        """A full-page screenshot, if the page is still open; the file written."""
        if self.closed or self.page.is_closed():
            return []
        shot = folder / f"{self.name}.png"
        try:
            await self.page.screenshot(path=str(shot), full_page=True)
        except Error as error:
            self.log.append(f"[screenshot failed] {error}")
            return []
        return [shot]

    async def diagnose(self) -> None:
        """Add the state of the page's peer connections and videos to its log."""
        if self.closed or self.page.is_closed():
            return
        try:
            self.log.append(f"[diagnosis] {await self.page.evaluate(DIAGNOSIS)}")
        except Error as error:
            self.log.append(f"[diagnosis failed] {error}")

    def write_log(self, folder: Path) -> Path:
        """Console, requests and lobby frames in one text file; its path."""
        log = folder / f"{self.name}.log"
        lines = [f"console of {self.name}:", *self.log, "requests:"]
        lines += [f"  {url}" for url in self.requests]
        lines += ["lobby frames received:", *(f"  {json.dumps(f)}" for f in self.lobby_frames)]
        log.write_text("\n".join(lines) + "\n")
        return log


def openvidu_reconnecting(message: str, stack: str) -> bool:
    """openvidu-browser 2.32.2, once its connection to the media server is cut, retries
    and sends on the new socket before it is open: thrown inside the library (never in our
    pages, whose socket checks `readyState`). Only tests that cut that connection expect it."""
    return "Still in CONNECTING state" in message and "openvidu-browser-" in stack


class Tabs:
    """Opens tabs in one shared browser; closes them all at the end."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.opened: list[Tab] = []
        # Uncaught errors a test expects (message, stack -> expected); all others fail it.
        self.tolerated: list[Callable[[str, str], bool]] = []

    async def open(self, name: str, **context_options: Any) -> Tab:
        context = await self.browser.new_context(**context_options)
        await context.add_init_script(PROBES)
        tab = Tab(name, context, await context.new_page())
        self.opened.append(tab)
        return tab

    async def login(self, base_url: str, user: str, **context_options: Any) -> Tab:
        tab = await self.open(user, **context_options)
        await tab.login(base_url, user)
        return tab

    def requests(self) -> list[str]:
        return [url for tab in self.opened for url in tab.requests]

    def remote_requests(self) -> list[str]:
        return [url for url in self.requests() if not is_local(url)]

    def page_errors(self) -> list[str]:
        return [
            f"[pageerror] {message}"
            for tab in self.opened
            for message, stack in tab.errors
            if not any(tolerated(message, stack) for tolerated in self.tolerated)
        ]

    async def save(self, folder: Path) -> list[Path]:
        """Every tab's screenshot and log in `folder`; the files written."""
        folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a test's end, nothing waits)
        for tab in self.opened:
            await tab.diagnose()
        saved = [shot for tab in self.opened for shot in await tab.screenshot(folder)]
        return saved + [tab.write_log(folder) for tab in self.opened]

    async def close(self) -> None:
        for tab in self.opened:
            await tab.close()
