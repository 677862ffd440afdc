"""One frozen `Settings`, read once from the environment.

Every setting the server reads is declared in `SETTINGS` with its default and a
sentence for the README table; a test fails when the README misses one.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from lobby.media.p2p import IceServer


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "LOBBY_MEDIA",
        None,
        "Who carries the calls: `openvidu` (an OpenVidu 2.x server) or `p2p` (browsers connect "
        "to each other, the lobby relays their signalling). Default: `openvidu` when "
        "`OPENVIDU_URL` is set, `p2p` otherwise.",
    ),
    Setting(
        "OPENVIDU_URL",
        None,
        "Base URL of the OpenVidu 2.x server (its REST API lives under `/openvidu/api`); "
        "setting it selects the OpenVidu back end. With `LOBBY_MEDIA=openvidu` and no URL: "
        "`http://localhost:4443`, the openvidu-dev container.",
    ),
    Setting(
        "OPENVIDU_SECRET",
        None,
        "OpenVidu secret (Basic auth `OPENVIDUAPP:<secret>`). Required with OpenVidu outside demo "
        "mode; "
        "demo mode uses `MY_SECRET`, the openvidu-dev container's default.",
    ),
    Setting(
        "OPENVIDU_VERIFY_TLS",
        "true",
        "`false` turns off certificate checks for OpenVidu (development only).",
    ),
    Setting(
        "OPENVIDU_CA_FILE",
        None,
        "PEM file of the CA that signed a self-signed OpenVidu certificate.",
    ),
    Setting(
        "OPENVIDU_TIMEOUT",
        "5",
        "Seconds for each OpenVidu REST call; a join fails with `media_unavailable` after it.",
    ),
    Setting("LOBBY_DATABASE", "lobby.sqlite3", "SQLite file holding users and login sessions."),
    Setting(
        "LOBBY_SECRET_KEY",
        None,
        "Key that signs cookies and CSRF tokens. Required outside demo mode; demo mode "
        "generates one at each start.",
    ),
    Setting(
        "LOBBY_DEMO",
        "false",
        "`true` creates the demo users (`publisher1`, `publisher2`, `subscriber`, password "
        "`pass`); same as `lobby serve --demo`.",
    ),
    Setting("LOBBY_HOST", "127.0.0.1", "Address `lobby serve` listens on."),
    Setting("LOBBY_PORT", "5000", "Port `lobby serve` listens on."),
    Setting(
        "LOBBY_RECONNECT_GRACE",
        "10",
        "Seconds a participant whose socket went away stays in its room, waiting for its "
        "page to come back (reload, network blip) before everyone sees it leave.",
    ),
    Setting(
        "LOBBY_ALLOWED_ORIGINS",
        "",
        "Comma-separated extra origins (e.g. `https://app.example.com`) allowed to open "
        "`/ws`, besides the server's own.",
    ),
    Setting("LOBBY_PING_INTERVAL", "15", "Seconds between server WebSocket pings."),
    Setting(
        "LOBBY_PING_TIMEOUT", "10", "Seconds to wait for a pong before the socket counts as gone."
    ),
    Setting("LOBBY_SESSION_TTL", "43200", "Seconds a login session lasts (default 12 hours)."),
    Setting(
        "LOBBY_FORWARDED_ALLOW_IPS",
        "127.0.0.1",
        "Proxies trusted to set `X-Forwarded-Proto`/`X-Forwarded-For` (uvicorn's "
        "`forwarded_allow_ips`); cookies are `Secure` when the request came over https.",
    ),
    Setting("LOBBY_LOG_LEVEL", "info", "Log level: debug, info, warning, error."),
    Setting(
        "LOBBY_MAX_SOCKETS",
        "18000",
        "Lobby sockets this process holds; more are refused at the handshake with HTTP 503 "
        "(keep it under the open-files limit).",
    ),
    Setting(
        "LOBBY_MAX_SOCKETS_PER_USER",
        "20",
        "Open lobby sockets (tabs) per user; more are refused with HTTP 429.",
    ),
    Setting(
        "LOBBY_MESSAGE_RATE",
        "10",
        "Messages per second a socket may send on average (token bucket).",
    ),
    Setting(
        "LOBBY_MESSAGE_BURST",
        "30",
        "Messages a socket may send at once; beyond the bucket they get `rate_limited`, and a "
        "socket that keeps flooding is closed with 1008.",
    ),
    Setting(
        "LOBBY_JOINS_PER_MINUTE",
        "30",
        "`join`s per user per minute (each one costs OpenVidu calls); more get `rate_limited`.",
    ),
    Setting(
        "LOBBY_ROOM_SIZE",
        None,
        "Most participants in one room (away ones count: they keep their seat for the grace "
        "period); a `join` beyond it gets `room_full`. Default: 4 with `p2p` (every pair of "
        "browsers has its own connection), no limit with OpenVidu. `0`: no limit.",
    ),
    Setting(
        "LOBBY_ICE_SERVERS",
        "[]",
        "STUN/TURN servers for `p2p` calls, as JSON in the browser's `RTCIceServer` shape: "
        '`[{"urls": "stun:stun.example.com:3478"}, {"urls": ["turn:turn.example.com:3478"], '
        '"username": "u", "credential": "p"}]`. Empty: direct connections only (same machine '
        'or network). See "Calls across NATs" below.',
    ),
    Setting(
        "LOBBY_TURN_SECRET",
        None,
        "coturn's `static-auth-secret`: each page gets its own TURN credentials, valid for "
        "`LOBBY_SESSION_TTL`, for the `turn:`/`turns:` servers of `LOBBY_ICE_SERVERS` that "
        "have no `username` (the TURN REST scheme, `use-auth-secret` in coturn).",
    ),
    Setting(
        "LOBBY_HEADER_TIMEOUT",
        "5",
        "Seconds a client has to send a whole HTTP request (a WebSocket upgrade's head; "
        "any other request's head and body); slower connections are dropped (slowloris).",
    ),
)

DEMO_OPENVIDU_SECRET = "MY_SECRET"
DEV_OPENVIDU_URL = "http://localhost:4443"
MEDIA_KINDS = ("openvidu", "p2p")
P2P_ROOM_SIZE = 4
# Frames a client may send: lobby requests are small; a `signal` carries an SDP
# offer (5-6 KB from Chromium with audio and video, more with simulcast).
MAX_FRAME_BYTES = 4096
P2P_MAX_FRAME_BYTES = 32768
ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def _number(name: str, value: str, *, minimum: float = 0.0) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, not {value!r}")
    return number


def _ice_servers(value: str, *, turn_secret: bool) -> tuple[IceServer, ...]:
    """`LOBBY_ICE_SERVERS`: a JSON list of `RTCIceServer` objects, checked before pages see it."""
    name = "LOBBY_ICE_SERVERS"
    try:
        parsed = json.loads(value or "[]")
    except ValueError:
        raise ConfigError(f"{name} must be a JSON list, not {value!r}") from None
    if not isinstance(parsed, list):
        raise ConfigError(f"{name} must be a JSON list of objects with 'urls'")
    return tuple(_ice_server(name, entry, turn_secret=turn_secret) for entry in parsed)


def _ice_server(name: str, entry: object, *, turn_secret: bool) -> IceServer:
    if not isinstance(entry, dict) or not set(entry) <= {"urls", "username", "credential"}:
        raise ConfigError(f"{name}: each server is an object with 'urls', 'username', 'credential'")
    urls = entry.get("urls")
    urls = [urls] if isinstance(urls, str) else urls
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ConfigError(f"{name}: 'urls' must be a URL or a non-empty list of URLs")
    for url in urls:
        if not url.startswith(ICE_SCHEMES):
            raise ConfigError(f"{name}: {url!r} is not a stun:, stuns:, turn: or turns: URL")
    username, credential = entry.get("username"), entry.get("credential")
    for key, text in (("username", username), ("credential", credential)):
        if text is not None and not isinstance(text, str):
            raise ConfigError(f"{name}: {key!r} must be a string")
    server = IceServer(tuple(urls), username, credential)
    if server.turn and (username is None or credential is None) and not turn_secret:
        raise ConfigError(
            f"{name}: TURN servers need 'username' and 'credential', or LOBBY_TURN_SECRET"
        )
    return server


@dataclass(frozen=True, slots=True)
class Settings:
    media: str = "openvidu"
    openvidu_url: str = DEV_OPENVIDU_URL
    openvidu_secret: str = field(default=DEMO_OPENVIDU_SECRET, repr=False)
    openvidu_verify_tls: bool = True
    openvidu_ca_file: str | None = None
    openvidu_timeout: float = 5.0
    database: str = "lobby.sqlite3"
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    demo: bool = False
    host: str = "127.0.0.1"
    port: int = 5000
    reconnect_grace: float = 10.0
    allowed_origins: tuple[str, ...] = ()
    ping_interval: float = 15.0
    ping_timeout: float = 10.0
    session_ttl: float = 43200.0
    forwarded_allow_ips: str = "127.0.0.1"
    log_level: str = "info"
    max_sockets: int = 18000
    max_sockets_per_user: int = 20
    message_rate: float = 10.0
    message_burst: int = 30
    joins_per_minute: int = 30
    header_timeout: float = 5.0
    room_size: int = 0  # 0: no limit
    ice_servers: tuple[IceServer, ...] = ()
    turn_secret: str | None = field(default=None, repr=False)

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame a client may send (a protocol limit, not from the environment)."""
        return P2P_MAX_FRAME_BYTES if self.media == "p2p" else MAX_FRAME_BYTES

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, demo: bool | None = None
    ) -> Settings:
        """Read every setting; missing ones take the defaults in `SETTINGS`."""
        source = os.environ if env is None else env

        def get(name: str) -> str:
            value = source.get(name)
            if value is not None:
                return value
            default = next(s.default for s in SETTINGS if s.name == name)
            return default or ""

        is_demo = _bool("LOBBY_DEMO", get("LOBBY_DEMO")) if demo is None else demo
        url = get("OPENVIDU_URL").rstrip("/")
        media = get("LOBBY_MEDIA").strip().lower() or ("openvidu" if url else "p2p")
        if media not in MEDIA_KINDS:
            raise ConfigError(f"LOBBY_MEDIA must be openvidu or p2p, not {media!r}")
        url = url or DEV_OPENVIDU_URL
        secret = get("OPENVIDU_SECRET") or (DEMO_OPENVIDU_SECRET if is_demo else "")
        if not secret and media == "openvidu":
            raise ConfigError("OPENVIDU_SECRET is required with OpenVidu outside demo mode")
        key = get("LOBBY_SECRET_KEY") or (secrets.token_urlsafe(32) if is_demo else "")
        if not key:
            raise ConfigError(
                "LOBBY_SECRET_KEY is required outside demo mode "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if len(key) < 16:
            raise ConfigError("LOBBY_SECRET_KEY must be at least 16 characters long")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"OPENVIDU_URL must start with http:// or https://, not {url!r}")
        log_level = get("LOBBY_LOG_LEVEL").lower()
        if log_level not in {"debug", "info", "warning", "error"}:
            raise ConfigError(
                f"LOBBY_LOG_LEVEL must be debug, info, warning or error, not {log_level!r}"
            )
        ping_interval = _number("LOBBY_PING_INTERVAL", get("LOBBY_PING_INTERVAL"), minimum=0.1)
        ping_timeout = _number("LOBBY_PING_TIMEOUT", get("LOBBY_PING_TIMEOUT"), minimum=0.1)
        room_size = get("LOBBY_ROOM_SIZE").strip()
        turn_secret = get("LOBBY_TURN_SECRET") or None
        return cls(
            media=media,
            openvidu_url=url,
            openvidu_secret=secret,
            openvidu_verify_tls=_bool("OPENVIDU_VERIFY_TLS", get("OPENVIDU_VERIFY_TLS")),
            openvidu_ca_file=get("OPENVIDU_CA_FILE") or None,
            openvidu_timeout=_number("OPENVIDU_TIMEOUT", get("OPENVIDU_TIMEOUT"), minimum=0.1),
            database=get("LOBBY_DATABASE"),
            secret_key=key,
            demo=is_demo,
            host=get("LOBBY_HOST"),
            port=int(_number("LOBBY_PORT", get("LOBBY_PORT"))),
            reconnect_grace=_number("LOBBY_RECONNECT_GRACE", get("LOBBY_RECONNECT_GRACE")),
            allowed_origins=tuple(
                o.strip().rstrip("/") for o in get("LOBBY_ALLOWED_ORIGINS").split(",") if o.strip()
            ),
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            session_ttl=_number("LOBBY_SESSION_TTL", get("LOBBY_SESSION_TTL"), minimum=60),
            forwarded_allow_ips=get("LOBBY_FORWARDED_ALLOW_IPS"),
            log_level=log_level,
            max_sockets=int(_number("LOBBY_MAX_SOCKETS", get("LOBBY_MAX_SOCKETS"), minimum=1)),
            max_sockets_per_user=int(
                _number("LOBBY_MAX_SOCKETS_PER_USER", get("LOBBY_MAX_SOCKETS_PER_USER"), minimum=1)
            ),
            message_rate=_number("LOBBY_MESSAGE_RATE", get("LOBBY_MESSAGE_RATE"), minimum=0.1),
            message_burst=int(
                _number("LOBBY_MESSAGE_BURST", get("LOBBY_MESSAGE_BURST"), minimum=1)
            ),
            joins_per_minute=int(
                _number("LOBBY_JOINS_PER_MINUTE", get("LOBBY_JOINS_PER_MINUTE"), minimum=1)
            ),
            header_timeout=_number(
                "LOBBY_HEADER_TIMEOUT", get("LOBBY_HEADER_TIMEOUT"), minimum=0.1
            ),
            room_size=int(_number("LOBBY_ROOM_SIZE", room_size))
            if room_size
            else (P2P_ROOM_SIZE if media == "p2p" else 0),
            ice_servers=_ice_servers(get("LOBBY_ICE_SERVERS"), turn_secret=bool(turn_secret)),
            turn_secret=turn_secret,
        )
