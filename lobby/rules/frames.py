"""WebSocket frames the server sends, built once per message (RFC 6455 section 5.2).

Server-to-client frames are not masked, so a text frame is the same bytes for
every recipient: a broadcast frames its message once and writes those bytes to
every socket. Pure: no uvicorn, no sockets.
"""

from __future__ import annotations

import struct


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying `payload` (UTF-8)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def ping_frame(payload: bytes) -> bytes:
    """A ping frame carrying `payload` (at most 125 bytes); the pong echoes it."""
    return bytes((0x89, len(payload))) + payload


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with `code` and `reason` (cut to fit a control frame's 125 bytes)."""
    body = struct.pack("!H", code) + reason.encode()[:120]
    return bytes((0x88, len(body))) + body
