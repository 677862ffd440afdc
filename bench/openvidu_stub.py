"""`python -m bench.openvidu_stub PORT SECRET`: a fast OpenVidu 2.x REST stand-in that times itself.

It answers the calls the lobby makes the way `tests/openvidu_standin.py` does
(same statuses, empty 409/404/400 bodies, bodies with OpenVidu's keys, Basic
auth) but over a bare asyncio protocol on uvloop, so its own service time is
small, and it is known: every API call is logged with the CLOCK_MONOTONIC
times at which its last byte was read and its answer was written.
`GET /_bench/log` hands that log over (and clears it), so the bench subtracts
exactly the stand-in's own time from a token's latency: what is left is the
lobby's overhead (its parsing, httpx, its event loop, the loopback hops).

Connections never become active (no browser joins with a token), so sessions
live until the lobby deletes them, as they would on OpenVidu.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
import time
from typing import Any

import uvloop

API = "/openvidu/api/sessions"
PHRASES = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized"}
PHRASES |= {404: "Not Found", 409: "Conflict"}


def _now_ms() -> int:
    return int(time.time() * 1000)


class Stub:
    def __init__(self, secret: str, port: int) -> None:
        credentials = base64.b64encode(f"OPENVIDUAPP:{secret}".encode()).decode()
        self.authorization = f"Basic {credentials}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.sessions: dict[str, dict[str, dict[str, Any]]] = {}
        self.log: list[tuple[str, str, str, int, int]] = []

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        if headers.get("authorization") != self.authorization:
            return 401, None
        parts = path[len(API) :].strip("/").split("/") if path.startswith(API) else None
        if parts is None:
            return 404, None
        if parts == [""]:
            if method == "POST":
                return self.create_session(json.loads(body or b"{}").get("customSessionId", ""))
            content = [self.session_json(sid) for sid in self.sessions]
            return 200, {"numberOfElements": len(content), "content": content}
        sid = parts[0]
        if len(parts) == 1 and method == "DELETE":
            return (204, None) if self.sessions.pop(sid, None) is not None else (404, None)
        if len(parts) == 2 and parts[1] == "connection" and method == "POST":
            return self.create_connection(sid, json.loads(body or b"{}"))
        if len(parts) == 3 and parts[1] == "connection" and method == "DELETE":
            connections = self.sessions.get(sid)
            if connections is None:
                return 400, None
            return (204, None) if connections.pop(parts[2], None) is not None else (404, None)
        return 404, None

    def create_session(self, custom: str) -> tuple[int, Any]:
        if custom in self.sessions:
            return 409, None
        sid = custom or "ses_" + secrets.token_hex(5)
        self.sessions[sid] = {}
        return 200, self.session_json(sid)

    def session_json(self, sid: str) -> dict[str, Any]:
        return {
            "id": sid, "object": "session", "sessionId": sid, "createdAt": _now_ms(),
            "recording": False, "broadcasting": False, "mediaMode": "ROUTED",
            "recordingMode": "MANUAL", "customSessionId": sid,
            "forcedVideoCodec": "MEDIA_SERVER_PREFERRED", "allowTranscoding": False,
            "connections": {"numberOfElements": 0, "content": []},
        }  # fmt: skip

    def create_connection(self, sid: str, params: dict[str, Any]) -> tuple[int, Any]:
        connections = self.sessions.get(sid)
        if connections is None:
            return 404, None
        cid = "con_" + secrets.token_hex(5)
        token = f"{self.ws_url}?sessionId={sid}&token=tok_{secrets.token_hex(8)}"
        connection = {
            "id": cid, "object": "connection", "status": "pending", "connectionId": cid,
            "sessionId": sid, "createdAt": _now_ms(), "type": "WEBRTC",
            "record": params.get("record", True), "role": params.get("role", "PUBLISHER"),
            "kurentoOptions": None, "customIceServers": [], "rtspUri": None,
            "adaptativeBitrate": None, "onlyPlayWithSubscribers": None, "networkCache": None,
            "serverData": params.get("data", ""), "token": token, "activeAt": None,
            "location": None, "ip": None, "platform": None, "clientData": None,
            "publishers": None, "subscribers": None,
        }  # fmt: skip
        connections[cid] = connection
        return 200, connection


class Http(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, enough for httpx: Content-Length bodies, no chunking."""

    def __init__(self, stub: Stub) -> None:
        self.stub = stub
        self.buf = b""
        self.started = 0  # when the request being parsed was complete
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # The clock starts when the request is complete: httpx writes the head and the
        # body separately, and the gap between them is the client's time, not ours.
        self.started = time.monotonic_ns()
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.answer(method, target.split("?", 1)[0], headers, body)
            self.started = time.monotonic_ns()  # a pipelined request waiting in the buffer

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        assert self.transport is not None
        if path == "/_bench/log":
            status, payload = 200, self.stub.log
            self.stub.log = []
        else:
            status, payload = self.stub.handle(method, path, headers, body)
        head = f"HTTP/1.1 {status} {PHRASES[status]}\r\n"
        if status == 401:
            head += 'www-authenticate: Basic realm="OpenVidu"\r\n'
        content = b""
        if payload is not None:
            content = json.dumps(payload, separators=(",", ":")).encode()
            head += "content-type: application/json\r\n"
        if status != 204:
            head += f"content-length: {len(content)}\r\n"
        self.transport.write(head.encode() + b"\r\n" + content)
        if path != "/_bench/log":
            room = path[len(API) :].strip("/").split("/")[0] if path.startswith(API) else ""
            if not room and body:
                room = json.loads(body).get("customSessionId", "")
            self.stub.log.append((method, path, room, self.started, time.monotonic_ns()))


async def serve(port: int, secret: str) -> None:
    stub = Stub(secret, port)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http(stub), "127.0.0.1", port, backlog=1024)
    print(f"listening {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))
