"""One frozen `Settings`, read once from the environment, and the table that declares it.

Each `Setting` in `SETTINGS` says everything about one environment variable: the
`Settings` field it fills, how its text is parsed, its default, and its line in
the README. `Settings.from_env` parses each one alone, then settles the few that
depend on each other (`_settle`). The README's table and `lobby serve --help`
are generated from `SETTINGS`; `tests/test_docs.py` fails when the README drifts.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lobby.media.p2p import IceServer, ice_servers_from_json
from lobby.rules.origins import own_hosts, parse_origin


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


DEMO_OPENVIDU_SECRET = "MY_SECRET"
DEV_OPENVIDU_URL = "http://localhost:4443"
# The LiveKit dev server (`livekit-server --dev`), which OpenVidu 3's local deployment runs too.
DEV_LIVEKIT_URL = "ws://localhost:7880"
DEMO_LIVEKIT_API_KEY = "devkey"
DEMO_LIVEKIT_API_SECRET = "secret"
MEDIA_KINDS = ("openvidu", "livekit", "p2p")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("plain", "json")
P2P_ROOM_SIZE = 4
MIN_SECRET_KEY_LENGTH = 16
# Frames a client may send: lobby requests are small; a `signal` carries an SDP
# offer (5-6 KB from Chromium with audio and video, more with simulcast).
MAX_FRAME_BYTES = 4096
P2P_MAX_FRAME_BYTES = 32768

# A parser turns one variable's text into its value, or raises a `ConfigError`
# that names the variable (its first argument).
Parser = Callable[[str, str], object]


def _text(name: str, text: str) -> str:
    return text


def _bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, not {text!r}")


def _number(minimum: float = 0.0) -> Callable[[str, str], float]:
    def parse(name: str, text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {text!r}") from None
        if number < minimum:
            raise ConfigError(f"{name} must be at least {minimum:g}, not {text!r}")
        return number

    return parse


def _whole(minimum: int = 0) -> Callable[[str, str], int]:
    number = _number(minimum)
    return lambda name, text: int(number(name, text))


def _choice(*options: str) -> Callable[[str, str], str]:
    either = ", ".join(options[:-1]) + " or " + options[-1]

    def parse(name: str, text: str) -> str:
        chosen = text.lower()
        if chosen not in options:
            raise ConfigError(f"{name} must be {either}, not {chosen!r}")
        return chosen

    return parse


def _optional(parse: Parser) -> Parser:
    """None for a blank text (unset: `_settle` decides), else `parse` of the stripped text."""
    return lambda name, text: parse(name, text.strip()) if text.strip() else None


def _text_or_none(name: str, text: str) -> str | None:
    return text or None


def _origins(name: str, text: str) -> tuple[str, ...]:
    """Comma-separated origins (a trailing slash tolerated), each as browsers write it."""
    origins = []
    for given in (o.strip() for o in text.split(",") if o.strip()):
        origin = parse_origin(given.removesuffix("/"))
        if origin is None:
            raise ConfigError(
                f"{name}: {given!r} is no origin (scheme://host[:port], no path), "
                "e.g. https://lobby.example.com"
            )
        origins.append(str(origin))
    return tuple(origins)


def _networks(name: str, text: str) -> tuple[str, ...]:
    """Comma-separated addresses or networks (CIDR), e.g. `127.0.0.1, ::1, 10.0.0.0/8`."""
    found = []
    for given in (a.strip() for a in text.split(",") if a.strip()):
        try:
            found.append(str(ipaddress.ip_network(given, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: {given!r} is no address or network (CIDR)") from None
    return tuple(found)


def _http_url(name: str, text: str) -> str | None:
    url = text.rstrip("/")
    if not url:
        return None  # unset: `_settle` decides
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must start with http:// or https://, not {url!r}")
    return url


def _url(schemes: tuple[str, ...]) -> Callable[[str, str], str | None]:
    """A URL in one of `schemes`, with a host and no credentials; None when blank."""
    either = " or ".join(f"{scheme}://" for scheme in schemes)

    def parse(name: str, text: str) -> str | None:
        url = text.strip().rstrip("/")
        if not url:
            return None  # unset: `_settle` decides
        parts = urlsplit(url)
        if parts.scheme.lower() not in schemes or not parts.hostname:
            raise ConfigError(f"{name} must start with {either} and name a host, not {url!r}")
        if "@" in parts.netloc:
            # It would reach log lines and the page; the API key and secret have their own.
            raise ConfigError(f"{name} must not carry a user name or password")
        return url

    return parse


def _database(name: str, text: str) -> str:
    """A SQLite path, or a PostgreSQL URL (libpq reads it; `lobby.store.db` tells them apart)."""
    location = text.strip()
    scheme = location.partition("://")[0].lower() if "://" in location else ""
    if scheme and scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{name} must be a SQLite file or a postgresql:// URL, not a {scheme}:// URL"
        )
    return location


REDIS_SCHEMES = ("redis", "rediss", "unix")


def _redis_url(name: str, text: str) -> str | None:
    """redis://[:password@]host[:port][/db], rediss:// (TLS) or unix:///path; None when blank."""
    url = text.strip()
    if not url:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    # A password may be in the URL (Redis's own convention), so the URL is never echoed.
    if scheme not in REDIS_SCHEMES or not (parts.path if scheme == "unix" else parts.hostname):
        raise ConfigError(
            f"{name} must be redis://host[:port][/db], rediss://host[:port][/db] (TLS) "
            "or unix:///path/to/redis.sock"
        )
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when asked)
    except ValueError:
        raise ConfigError(f"{name} has a malformed port") from None
    return url


def _secret_key(name: str, text: str) -> str | None:
    if not text:
        return None  # unset: `_settle` decides
    if len(text) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(f"{name} must be at least {MIN_SECRET_KEY_LENGTH} characters long")
    return text


def _ice_servers(name: str, text: str) -> tuple[IceServer, ...]:
    try:
        return ice_servers_from_json(name, text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: the field it fills, how it is read, its default, its docs."""

    name: str
    attribute: str  # the `Settings` field
    parse: Parser
    default: str | None  # as an operator would write it; None: unset
    help: str  # one paragraph, the README's "What it does"
    shown: str = ""  # the README's default when it depends on other settings

    @property
    def readme_default(self) -> str:
        if self.shown:
            return self.shown
        return f"`{self.default}`" if self.default else "—"


# One entry per variable: name, `Settings` field, parser, default, then its help.
# A table reads best with each entry's facts on its first line, so ruff leaves it alone.
# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("LOBBY_MEDIA", "media", _optional(_choice(*MEDIA_KINDS)), None,
            "Who carries the calls: `p2p` (built in: the browsers connect to each other, the "
            "lobby relays their signalling), `openvidu` (an OpenVidu 2.x server) or `livekit` "
            "(a LiveKit server, which OpenVidu 3 is; only this setting selects it).",
            shown="`p2p`, or `openvidu` when `OPENVIDU_URL` is set"),
    Setting("OPENVIDU_URL", "openvidu_url", _http_url, None,
            "Base URL of the OpenVidu 2.x server (its REST API lives under `/openvidu/api`); "
            "setting it selects the OpenVidu back end. With `LOBBY_MEDIA=openvidu` and no URL: "
            "`http://localhost:4443`, the openvidu-dev container."),
    Setting("OPENVIDU_SECRET", "openvidu_secret", _text_or_none, None,
            "OpenVidu secret (Basic auth `OPENVIDUAPP:<secret>`). Required with OpenVidu outside "
            "demo mode; demo mode uses `MY_SECRET`, the openvidu-dev container's default."),
    Setting("OPENVIDU_VERIFY_TLS", "openvidu_verify_tls", _bool, "true",
            "`false` turns off certificate checks for OpenVidu (development only)."),
    Setting("OPENVIDU_CA_FILE", "openvidu_ca_file", _text_or_none, None,
            "PEM file of the CA that signed a self-signed OpenVidu certificate."),
    Setting("OPENVIDU_TIMEOUT", "openvidu_timeout", _number(minimum=0.1), "5",
            "Seconds for each OpenVidu REST call; a join fails with `media_unavailable` after it."),
    Setting("LOBBY_OPENVIDU_WEBHOOK_SECRET", "openvidu_webhook_secret", _secret_key, None,
            "A secret (16 characters or more) that turns on OpenVidu 2's webhooks at "
            "`POST /webhooks/openvidu`: OpenVidu must send it as "
            '`OPENVIDU_WEBHOOK_HEADERS=["Authorization: Bearer <secret>"]`. With it the lobby '
            "learns who is in each call from OpenVidu; without it, from the pages."),
    Setting("LIVEKIT_URL", "livekit_url", _url(("ws", "wss")), None,
            "URL browsers connect to the LiveKit (OpenVidu 3) server at, `ws://` or `wss://`: "
            "livekit-client opens its signalling socket there with the lobby's token, so it must "
            "be the address browsers reach (in production `wss://`, e.g. your OpenVidu 3 "
            "domain or a LiveKit Cloud project's URL). Required with `livekit` outside demo mode.",
            shown="`ws://localhost:7880` in demo mode (the LiveKit dev server, OpenVidu 3's "
            "local deployment)"),
    Setting("LIVEKIT_API_URL", "livekit_api_url", _url(("http", "https")), None,
            "URL the lobby calls LiveKit's RoomService at (server to server), when it differs "
            "from the one browsers use.",
            shown="`LIVEKIT_URL` with `ws` → `http`, `wss` → `https`"),
    Setting("LIVEKIT_API_KEY", "livekit_api_key", _text_or_none, None,
            "LiveKit API key: the issuer of the tokens the lobby signs. Required with `livekit` "
            "outside demo mode; demo mode uses `devkey`, the dev server's."),
    Setting("LIVEKIT_API_SECRET", "livekit_api_secret", _text_or_none, None,
            "LiveKit API secret, which signs join tokens and RoomService calls. Required with "
            "`livekit` outside demo mode; demo mode uses `secret`, the dev server's."),
    Setting("LIVEKIT_TOKEN_TTL", "livekit_token_ttl", _number(minimum=1), "60",
            "Seconds a LiveKit join token is valid. The page uses it at once, and LiveKit "
            "refreshes the token of a connected participant itself, so keep it short: a LiveKit "
            "token cannot be revoked before it expires. Removing the participant (on leave) is "
            "what ends a call; until the token expires, its holder could join again."),
    Setting("LIVEKIT_TIMEOUT", "livekit_timeout", _number(minimum=0.1), "5",
            "Seconds for each LiveKit RoomService call (removing a participant, deleting a room, "
            "the health check). Joins make none: their tokens are signed by the lobby."),
    Setting("LOBBY_CALL_RECONCILE_INTERVAL", "call_reconcile_interval", _number(), "30",
            "Seconds between two checks of who the media server (LiveKit, OpenVidu) has in "
            "each room's call: they correct call states whose webhook was lost and remove "
            "participants the lobby does not know (a leaked token, a stale tab). `0`: never."),
    Setting("LOBBY_DATABASE", "database", _database, "lobby.sqlite3",
            "Where users and login sessions live: a SQLite file (instances on one machine may "
            "share it), or a `postgresql://` URL (`postgresql://lobby@db.example.com/lobby`) "
            "for instances on several machines; keep its password in `PGPASSWORD` or "
            "`~/.pgpass` rather than in the URL. With PostgreSQL the participants are not kept "
            "across restarts. See [PostgreSQL](docs/deployment.md#postgresql)."),
    Setting("LOBBY_SECRET_KEY", "secret_key", _secret_key, None,
            "Key that signs cookies and CSRF tokens. Required outside demo mode; demo mode "
            "generates one at each start."),
    Setting("LOBBY_DEMO", "demo", _bool, "false",
            "`true` creates the demo users (`publisher1`, `publisher2`, `subscriber`, password "
            "`pass`); same as `lobby serve --demo`."),
    Setting("LOBBY_HOST", "host", _text, "127.0.0.1", "Address `lobby serve` listens on."),
    Setting("LOBBY_PORT", "port", _whole(), "5000", "Port `lobby serve` listens on."),
    Setting("LOBBY_WORKERS", "workers", _whole(minimum=1), "1",
            "Processes `lobby serve` runs on that one port (`--workers`), each its own lobby "
            "instance; more than one requires `LOBBY_REDIS_URL`."),
    Setting("LOBBY_PUBLIC_URL", "public_origins", _origins, None,
            "Comma-separated origins browsers reach the lobby at, e.g. `https://lobby.example.com` "
            "behind a TLS proxy. A request whose `Host` names another host gets HTTP 400 (DNS "
            "rebinding); sockets and form posts must come from one of these origins. Required "
            "when `LOBBY_HOST` is `0.0.0.0` or `::`.",
            shown="`http://` and the address and port the server listens on (with a loopback "
            "`LOBBY_HOST`: `127.0.0.1`, `localhost` and `[::1]`)"),
    Setting("LOBBY_RECONNECT_GRACE", "reconnect_grace", _number(), "10",
            "Seconds a participant whose socket went away stays in its room, waiting for its page "
            "to come back (reload, network blip) before everyone sees it leave."),
    Setting("LOBBY_ALLOWED_ORIGINS", "allowed_origins", _origins, "",
            "Comma-separated extra origins (e.g. `https://app.example.com`) allowed to open "
            "`/ws`, besides the server's own."),
    Setting("LOBBY_PING_INTERVAL", "ping_interval", _number(minimum=0.1), "15",
            "Seconds between server WebSocket pings."),
    Setting("LOBBY_PING_TIMEOUT", "ping_timeout", _number(minimum=0.1), "10",
            "Seconds to wait for a pong before the socket counts as gone."),
    Setting("LOBBY_SESSION_TTL", "session_ttl", _number(minimum=60), "43200",
            "Seconds a login session lasts (default 12 hours)."),
    Setting("LOBBY_FORWARDED_ALLOW_IPS", "forwarded_allow_ips", _text, "127.0.0.1",
            "Proxies trusted to set `X-Forwarded-Proto`/`X-Forwarded-For` (uvicorn's "
            "`forwarded_allow_ips`); cookies are `Secure` when the request came over https."),
    Setting("LOBBY_METRICS_ALLOW", "metrics_allow", _networks, "127.0.0.0/8,::1",
            "Addresses or networks (comma-separated, CIDR) that may read `/metrics`, asking "
            "directly (a request a proxy forwarded never may); anyone else gets 404. Empty: "
            "nobody on the main port."),
    Setting("LOBBY_METRICS_PORT", "metrics_port", _optional(_whole(minimum=1)), None,
            "A second port, on `LOBBY_HOST`, serving only `/metrics` to whoever reaches it, for a "
            "Prometheus on another machine: firewall it."),
    Setting("LOBBY_DRAIN_SECONDS", "drain_seconds", _number(), "5",
            "On SIGTERM the instance fails `/readyz` at once, refuses new sockets with 503 and "
            "closes its open ones (code 1012, pages reconnect and resume) in batches spread over "
            "this many seconds, then stops. Keep systemd's `TimeoutStopSec` above it."),
    Setting("LOBBY_LOG_LEVEL", "log_level", _choice(*LOG_LEVELS), "info",
            "Log level: debug, info, warning, error."),
    Setting("LOBBY_LOG_FORMAT", "log_format", _choice(*LOG_FORMATS), "plain",
            "`plain`: `time level logger: message [ids]` lines; `json`: one JSON object per line "
            "(`timestamp`, `level`, `logger`, `message`, and the ids it knows: `socket`, `user`, "
            "`participant`, `room`, `request`), for uvicorn's lines too. Both pass the same "
            "redaction: no cookie, token, resume key, password or secret."),
    Setting("LOBBY_MAX_SOCKETS", "max_sockets", _whole(minimum=1), "18000",
            "Lobby sockets this process holds; more are refused at the handshake with HTTP 503. "
            "At start the lobby raises its soft open-files limit to the hard one; if this plus "
            "100 still does not fit, it holds fewer and logs one line saying how to raise the "
            "limit (`LimitNOFILE=`)."),
    Setting("LOBBY_MAX_SOCKETS_PER_USER", "max_sockets_per_user", _whole(minimum=1), "20",
            "Open lobby sockets (tabs) per user; more are refused with HTTP 429."),
    Setting("LOBBY_MESSAGE_RATE", "message_rate", _number(minimum=0.1), "10",
            "Messages per second a socket may send on average (token bucket)."),
    Setting("LOBBY_MESSAGE_BURST", "message_burst", _whole(minimum=1), "30",
            "Messages a socket may send at once; beyond the bucket they get `rate_limited`, and a "
            "socket that keeps flooding is closed with 1008."),
    Setting("LOBBY_JOINS_PER_MINUTE", "joins_per_minute", _whole(minimum=1), "30",
            "`join`s per user per minute (each one costs OpenVidu calls); more get "
            "`rate_limited`."),
    Setting("LOBBY_ROOM_SIZE", "room_size", _optional(_whole()), None,
            "Most participants in one room (away ones count: they keep their seat for the grace "
            "period); a `join` beyond it gets `room_full`. `0`: no limit. With `p2p` every pair "
            "of browsers has its own connection, so each browser sends its camera once per other "
            "participant.", shown="`4` with `p2p`, no limit with OpenVidu or LiveKit"),
    Setting("LOBBY_KICK_BAN", "kick_ban", _number(), "300",
            "Seconds a user a moderator kicked out of a room may not join it again (`join` gets "
            "`banned`). `0`: no ban, only the removal."),
    Setting("LOBBY_ICE_SERVERS", "ice_servers", _ice_servers, "[]",
            "STUN/TURN servers for `p2p` calls, JSON in the browser's `RTCIceServer` shape, e.g. "
            '`[{"urls": "stun:stun.example.com:3478"}, {"urls": '
            '["turn:turn.example.com:3478?transport=udp"], "username": "u", "credential": "p"}]`. '
            "Empty: direct connections only (same machine or network). See "
            "[Calls across NATs](docs/deployment.md#calls-across-nats-coturn)."),
    Setting("LOBBY_TURN_SECRET", "turn_secret", _text_or_none, None,
            "coturn's `static-auth-secret` (`use-auth-secret`, the TURN REST scheme): each page "
            "gets its own TURN credentials, valid for `LOBBY_SESSION_TTL`, for the "
            "`turn:`/`turns:` servers of `LOBBY_ICE_SERVERS` listed without `username` and "
            "`credential`, so no long-lived TURN password reaches a browser."),
    Setting("LOBBY_HEADER_TIMEOUT", "header_timeout", _number(minimum=0.1), "5",
            "Seconds a client has to send a whole HTTP request (a WebSocket upgrade's head; any "
            "other request's head and body); slower connections are dropped (slowloris)."),
    Setting("LOBBY_REDIS_URL", "redis_url", _redis_url, None,
            "Redis that several lobby instances share presence through "
            "(`redis://[:password@]host[:port][/db]`, `rediss://` with TLS, or "
            "`unix:///path/to/redis.sock`). Unset: one process holds presence in memory. "
            "Set: presence is a log in Redis that every instance applies "
            "([`docs/cluster.md`](docs/cluster.md)), the SQLite roster is off, `/readyz` "
            "checks Redis, and `lobby serve --workers N` may run N processes on one port.",
            shown="— (presence in this process's memory)"),
    Setting("LOBBY_REDIS_PREFIX", "redis_prefix", _text, "lobby:",
            "The start of every Redis key of this lobby: lobbies sharing one Redis keep apart "
            "by giving each its own."),
)
# fmt: on
_BY_NAME = {s.name: s for s in SETTINGS}


def _default(name: str) -> Any:
    """The value of `name`'s default: what `Settings` fields start from."""
    setting = _BY_NAME[name]
    return setting.parse(name, setting.default or "")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, parsed. Defaults: the table's; for those `_settle` decides, demo mode's
    with OpenVidu (what code and tests that build a `Settings` want)."""

    media: str = "openvidu"
    openvidu_url: str = DEV_OPENVIDU_URL
    openvidu_secret: str = field(default=DEMO_OPENVIDU_SECRET, repr=False)
    openvidu_verify_tls: bool = _default("OPENVIDU_VERIFY_TLS")
    openvidu_ca_file: str | None = _default("OPENVIDU_CA_FILE")
    openvidu_timeout: float = _default("OPENVIDU_TIMEOUT")
    openvidu_webhook_secret: str | None = field(
        default=_default("LOBBY_OPENVIDU_WEBHOOK_SECRET"), repr=False
    )
    livekit_url: str = DEV_LIVEKIT_URL
    livekit_api_url: str = "http://localhost:7880"
    livekit_api_key: str = DEMO_LIVEKIT_API_KEY
    livekit_api_secret: str = field(default=DEMO_LIVEKIT_API_SECRET, repr=False)
    livekit_token_ttl: float = _default("LIVEKIT_TOKEN_TTL")
    livekit_timeout: float = _default("LIVEKIT_TIMEOUT")
    call_reconcile_interval: float = _default("LOBBY_CALL_RECONCILE_INTERVAL")
    database: str = field(default=_default("LOBBY_DATABASE"), repr=False)  # may hold a password
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    demo: bool = _default("LOBBY_DEMO")
    host: str = _default("LOBBY_HOST")
    port: int = _default("LOBBY_PORT")
    workers: int = _default("LOBBY_WORKERS")
    public_origins: tuple[str, ...] = ()  # (): derived from where the server listens
    reconnect_grace: float = _default("LOBBY_RECONNECT_GRACE")
    allowed_origins: tuple[str, ...] = _default("LOBBY_ALLOWED_ORIGINS")
    ping_interval: float = _default("LOBBY_PING_INTERVAL")
    ping_timeout: float = _default("LOBBY_PING_TIMEOUT")
    session_ttl: float = _default("LOBBY_SESSION_TTL")
    forwarded_allow_ips: str = _default("LOBBY_FORWARDED_ALLOW_IPS")
    metrics_allow: tuple[str, ...] = _default("LOBBY_METRICS_ALLOW")
    metrics_port: int | None = None
    drain_seconds: float = _default("LOBBY_DRAIN_SECONDS")
    log_level: str = _default("LOBBY_LOG_LEVEL")
    log_format: str = _default("LOBBY_LOG_FORMAT")
    max_sockets: int = _default("LOBBY_MAX_SOCKETS")
    max_sockets_per_user: int = _default("LOBBY_MAX_SOCKETS_PER_USER")
    message_rate: float = _default("LOBBY_MESSAGE_RATE")
    message_burst: int = _default("LOBBY_MESSAGE_BURST")
    joins_per_minute: int = _default("LOBBY_JOINS_PER_MINUTE")
    header_timeout: float = _default("LOBBY_HEADER_TIMEOUT")
    room_size: int = 0  # 0: no limit
    kick_ban: float = _default("LOBBY_KICK_BAN")
    ice_servers: tuple[IceServer, ...] = _default("LOBBY_ICE_SERVERS")
    turn_secret: str | None = field(default=_default("LOBBY_TURN_SECRET"), repr=False)
    redis_url: str | None = field(default=_default("LOBBY_REDIS_URL"), repr=False)
    redis_prefix: str = _default("LOBBY_REDIS_PREFIX")

    @property
    def calls_from_media(self) -> bool:
        """Does the media server tell us who is in each call (webhooks), not the pages?"""
        return self.media == "livekit" or (
            self.media == "openvidu" and self.openvidu_webhook_secret is not None
        )

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame a client may send (a protocol limit, not from the environment)."""
        return P2P_MAX_FRAME_BYTES if self.media == "p2p" else MAX_FRAME_BYTES

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, demo: bool | None = None
    ) -> Settings:
        """Read every setting in `SETTINGS`; `demo` (from `--demo`) overrides `LOBBY_DEMO`."""
        source = dict(os.environ if env is None else env)
        if demo is not None:
            source["LOBBY_DEMO"] = "true" if demo else "false"
        alone = {
            s.attribute: s.parse(s.name, source.get(s.name, s.default or "")) for s in SETTINGS
        }
        return cls(**_settle(alone))


def _settle(alone: dict[str, Any]) -> dict[str, Any]:
    """The settings whose default or validity depends on another, from each parsed alone."""
    demo: bool = alone["demo"]
    url: str | None = alone["openvidu_url"]
    media: str = alone["media"] or ("openvidu" if url else "p2p")  # the URL alone picks OpenVidu
    # A full mesh sends each camera to every other page, so p2p rooms stay small.
    default_room_size = P2P_ROOM_SIZE if media == "p2p" else 0
    settled = alone | {
        "media": media,
        "openvidu_url": url or DEV_OPENVIDU_URL,
        "openvidu_secret": _openvidu_secret(alone["openvidu_secret"], media=media, demo=demo),
        **_livekit(alone, needed=media == "livekit" and not demo),
        "secret_key": _secret_key_or_demo(alone["secret_key"], demo=demo),
        "room_size": alone["room_size"] if alone["room_size"] is not None else default_room_size,
    }
    _check_turn_credentials(alone["ice_servers"], alone["turn_secret"])
    if alone["workers"] > 1 and not alone["redis_url"]:
        raise ConfigError(
            "several workers (LOBBY_WORKERS, --workers) need LOBBY_REDIS_URL: "
            "they share presence through Redis"
        )
    if not alone["public_origins"] and not own_hosts(alone["host"]):
        raise ConfigError(
            f"LOBBY_PUBLIC_URL is required when LOBBY_HOST is {alone['host']!r} (every "
            "interface): it names the origin browsers use, e.g. https://lobby.example.com"
        )
    return settled


def _openvidu_secret(given: str | None, *, media: str, demo: bool) -> str:
    secret = given or (DEMO_OPENVIDU_SECRET if demo else "")
    if not secret and media == "openvidu":
        raise ConfigError("OPENVIDU_SECRET is required with OpenVidu outside demo mode")
    return secret


def _livekit(alone: dict[str, Any], *, needed: bool) -> dict[str, str]:
    """The LiveKit server and credentials: the dev server's unless `needed` (then required)."""
    given = {
        "LIVEKIT_URL": alone["livekit_url"],
        "LIVEKIT_API_KEY": alone["livekit_api_key"],
        "LIVEKIT_API_SECRET": alone["livekit_api_secret"],
    }
    missing = [name for name, value in given.items() if not value]
    if needed and missing:
        raise ConfigError(f"{missing[0]} is required with LiveKit outside demo mode")
    url = given["LIVEKIT_URL"] or DEV_LIVEKIT_URL
    return {
        "livekit_url": url,
        # ws://host → http://host, wss://host → https://host: the same server, its HTTP side.
        "livekit_api_url": alone["livekit_api_url"] or "http" + url[len("ws") :],
        "livekit_api_key": given["LIVEKIT_API_KEY"] or DEMO_LIVEKIT_API_KEY,
        "livekit_api_secret": given["LIVEKIT_API_SECRET"] or DEMO_LIVEKIT_API_SECRET,
    }


def _secret_key_or_demo(given: str | None, *, demo: bool) -> str:
    if given:
        return given
    if demo:
        return secrets.token_urlsafe(32)  # sessions end at each restart: fine for a demo
    raise ConfigError(
        "LOBBY_SECRET_KEY is required outside demo mode "
        "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
    )


def _check_turn_credentials(servers: tuple[IceServer, ...], turn_secret: str | None) -> None:
    """A TURN server without its own credentials needs `LOBBY_TURN_SECRET` to make some."""
    if not turn_secret and any(s.turn and None in (s.username, s.credential) for s in servers):
        raise ConfigError(
            "LOBBY_ICE_SERVERS: TURN servers need 'username' and 'credential', or LOBBY_TURN_SECRET"
        )


def markdown_table() -> str:
    """The README's settings table. Regenerate it with `python -m lobby.config`."""
    rows = [f"| `{s.name}` | {s.readme_default} | {s.help} |" for s in SETTINGS]
    return "\n".join(["| Setting | Default | What it does |", "| --- | --- | --- |", *rows])


def help_epilog() -> str:
    """Every setting and its default, for the end of `lobby serve --help`."""
    width = max(len(s.name) for s in SETTINGS) + 2
    rows = [f"  {s.name:<{width}}{_plain(s.readme_default)}" for s in SETTINGS]
    return "\n".join(["settings and their defaults (README.md, Configuration, says more):", *rows])


def _plain(markdown: str) -> str:
    return "not set" if markdown == "—" else markdown.replace("`", "")


if __name__ == "__main__":
    print(markdown_table())
