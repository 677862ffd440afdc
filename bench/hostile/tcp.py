"""Raw TCP on loopback: connect with a chosen window and segment size, wait for the server
to hang up, and read both ends' kernel queues."""

from __future__ import annotations

import asyncio
import fcntl
import re
import socket
import struct
import subprocess
import termios
from dataclasses import dataclass

from bench.hostile.figures import now


async def raw_connect(
    port: int, *, rcvbuf: int | None = None, mss: int | None = None
) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Both before connect: the SYN announces the window and the segment size.
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def closed_by_peer(sock: socket.socket, within: float) -> float | None:
    """Read until the peer closes or resets; when that was, or None after `within` seconds."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            while await loop.sock_recv(sock, 4096):
                pass
    except TimeoutError:
        return None
    except OSError:
        pass  # reset: the server aborted
    return now()


def unread_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's kernel receive queue (SIOCINQ)."""
    answer: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    return answer


@dataclass
class SsInfo:
    state: str
    recv_q: int
    send_q: int
    sndbuf: int  # skmem tb: the socket's send buffer limit


async def ss_info(server_port: int, peer_port: int) -> SsInfo | None:
    """The server side of one loopback connection, as `ss -tnm` shows it."""
    proc = await asyncio.create_subprocess_exec(
        "ss",
        "-tnmH",
        "state",
        "all",
        f"( sport = :{server_port} and dport = :{peer_port} )",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    words = out.decode().split()
    if len(words) < 5:
        return None
    found = re.search(r"tb(\d+)", out.decode())
    return SsInfo(words[0], int(words[1]), int(words[2]), int(found.group(1)) if found else 0)
