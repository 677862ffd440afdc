"""Web origins (RFC 6454) and the server's own host names, parsed strictly.

An `Origin` header comes from anyone, so a malformed one (`http://[`, a path, a
query, user info, a port past 65535) is `None`, never an exception: the caller
refuses it. Browsers send the serialized form only (scheme, host, optional port),
so anything more is not a browser's and not ours.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

DEFAULT_PORTS = {"http": 80, "https": 443}
# Names the server answers to when it listens on a loopback address: what `make run`
# prints and what a browser on the same machine may type.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# Addresses that mean "every interface": they name no host a browser would use.
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")

_HOST = r"\[[0-9a-f:.]{2,45}\]|[a-z0-9.-]{1,253}"  # IPv6 in brackets, or a name or IPv4
_ORIGIN = re.compile(
    rf"(?P<scheme>https?)://(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?",
    re.ASCII | re.IGNORECASE,
)


class Origin(NamedTuple):
    scheme: str  # "http" or "https"
    host: str  # lower case; an IPv6 address in brackets
    port: int  # the default port made explicit: http://x and http://x:80 are one origin

    def __str__(self) -> str:
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"


def parse_origin(text: str) -> Origin | None:
    """The origin `text` serializes, or None unless it is exactly scheme://host[:port]."""
    match = _ORIGIN.fullmatch(text)
    if match is None:
        return None
    scheme, host = match["scheme"].lower(), match["host"].lower()
    if host.startswith("[") and not _is_ipv6(host[1:-1]):
        return None
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None
    return Origin(scheme, host, port)


def own_hosts(listen_host: str) -> tuple[str, ...]:
    """The host names a server listening on `listen_host` answers to when no public URL is
    configured: the loopback names for a loopback address, the address itself otherwise, and
    none for a wildcard address (it names no host: the public URL must be configured)."""
    host = listen_host.strip().lower()
    if host in WILDCARD_HOSTS:
        return ()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == "localhost" or _is_loopback(bare):
        return LOOPBACK_HOSTS
    return (f"[{bare}]",) if _is_ipv6(bare) else (host,)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False
