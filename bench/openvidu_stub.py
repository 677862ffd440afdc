"""`python -m bench.openvidu_stub PORT SECRET`: a fast OpenVidu 2.x REST stand-in that times itself.

It answers the calls the lobby makes the way `tests/openvidu_standin.py` does
(same statuses, empty 409/404/400 bodies, bodies with OpenVidu's keys, Basic
auth) but on bare non-blocking sockets under uvloop, so its own service time is
small, and it is known. Every API call is logged with three CLOCK_MONOTONIC
times: when the request's last byte *arrived* on the socket (the kernel's receive
timestamp, `SO_TIMESTAMPNS`), when the stand-in got around to reading it, and
when its answer was written. `GET /_bench/log` hands that log over (and clears
it), so the bench subtracts the stand-in's own time from a token's latency:

- from arrival to answer: OpenVidu's response time as the lobby sees it on the
  wire, including the stand-in's own wake-up. On this machine waking an idle
  process takes 0.1-0.5 ms; that is the media server's time, not the lobby's;
- from reading to answer: the handler alone (what earlier runs subtracted).

What is left is the lobby's overhead: its wake-ups, parsing, HTTP client, event
loop, and the hops to and from the client.

Connections never become active (no browser joins with a token), so sessions
live until the lobby deletes them, as they would on OpenVidu.

The sockets, the HTTP and the log serve any `Service`: `bench.livekit_stub` is
LiveKit's RoomService on the same footing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import sys
import time
from typing import Any, Protocol

import uvloop

from bench.wsclient import SO_TIMESTAMPNS, kernel_arrival

API = "/openvidu/api/sessions"
PHRASES = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized"}
PHRASES |= {404: "Not Found", 409: "Conflict"}


def _now_ms() -> int:
    return int(time.time() * 1000)


class Service(Protocol):
    """What `Http` answers for: the API's handler, and the log it keeps of every call."""

    # (method, path, room, arrived, read, answered): CLOCK_MONOTONIC ns
    log: list[tuple[str, str, str, int, int, int]]
    connections: set[Http]

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]: ...


class Stub:
    def __init__(self, secret: str, port: int) -> None:
        credentials = base64.b64encode(f"OPENVIDUAPP:{secret}".encode()).decode()
        self.authorization = f"Basic {credentials}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.sessions: dict[str, dict[str, dict[str, Any]]] = {}
        # (method, path, room, arrived, read, answered): CLOCK_MONOTONIC ns
        self.log: list[tuple[str, str, str, int, int, int]] = []
        self.connections: set[Http] = set()

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


class Http:
    """HTTP/1.1 with keep-alive on one socket, enough for httpx: Content-Length bodies."""

    def __init__(self, stub: Service, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.stub = stub
        self.sock = sock
        self.loop = loop
        self.buf = b""
        self.out = b""  # what the socket did not take yet (only the log is ever that big)
        self.arrived = 0  # when the request being parsed was complete on the socket
        self.started = 0  # when we read it
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop.add_reader(sock.fileno(), self.readable)
        stub.connections.add(self)

    def readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        # The clock starts when the request is complete: a client may write the head and
        # the body separately, and the gap between them is the client's time, not ours.
        self.started = time.monotonic_ns()
        self.arrived = kernel_arrival(ancillary) or self.started
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
            # A pipelined request waiting in the buffer has been there since this read.
            self.started = time.monotonic_ns()

    def write(self, data: bytes) -> None:
        if not self.out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close()
                return
            data = data[sent:]
            if data:
                self.loop.add_writer(self.sock.fileno(), self.flush)
        self.out += data

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            self.sock.close()
        self.stub.connections.discard(self)

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
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
        self.write(head.encode() + b"\r\n" + content)
        if path != "/_bench/log":
            room = ""
            if path.startswith(API):  # OpenVidu's: the session in the path, or the new one's
                room = path[len(API) :].strip("/").split("/")[0]
                if not room and body:
                    room = json.loads(body).get("customSessionId", "")
            entry = (method, path, room, self.arrived, self.started, time.monotonic_ns())
            self.stub.log.append(entry)


async def serve(stub: Service, port: int) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)

    def accept() -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        Http(stub, sock, loop)  # it keeps itself in stub.connections until closed

    loop.add_reader(listener.fileno(), accept)
    print(f"listening {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    port = int(sys.argv[1])
    uvloop.run(serve(Stub(sys.argv[2], port), port))
