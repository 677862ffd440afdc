"""Settings from the environment, and the table in `lobby.config` that declares them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import lobby
from lobby.config import (
    DEMO_OPENVIDU_SECRET,
    SETTINGS,
    ConfigError,
    Setting,
    Settings,
    help_epilog,
    markdown_table,
)


def test_defaults_in_demo_mode_need_no_environment() -> None:
    settings = Settings.from_env({}, demo=True)
    assert settings.demo
    assert settings.media == "p2p"  # no OpenVidu configured: calls work without one
    assert (settings.room_size, settings.ice_servers) == (4, ())
    assert settings.max_frame_bytes == 32768
    assert settings.reconnect_grace == 10
    assert settings.port == 5000
    assert len(settings.secret_key) >= 16


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "LOBBY_SECRET_KEY is required"),
        ({"OPENVIDU_URL": "http://ov:4443"}, "OPENVIDU_SECRET is required"),
        ({"LOBBY_MEDIA": "openvidu"}, "OPENVIDU_SECRET is required"),
        ({"OPENVIDU_SECRET": "s"}, "LOBBY_SECRET_KEY is required"),
        ({"LOBBY_DEMO": "1", "LOBBY_MEDIA": "sfu"}, "LOBBY_MEDIA must be openvidu, livekit or p2p"),
        ({"LOBBY_DEMO": "1", "LOBBY_ROOM_SIZE": "many"}, "LOBBY_ROOM_SIZE must be a number"),
        ({"LOBBY_DEMO": "1", "LOBBY_ICE_SERVERS": "stun:x"}, "LOBBY_ICE_SERVERS must be a JSON"),
        ({"LOBBY_DEMO": "1", "LOBBY_ICE_SERVERS": '{"urls": "stun:x"}'}, "JSON list"),
        ({"LOBBY_DEMO": "1", "LOBBY_ICE_SERVERS": '[{"url": "stun:x"}]'}, "an object with"),
        ({"LOBBY_DEMO": "1", "LOBBY_ICE_SERVERS": '[{"urls": []}]'}, "non-empty list"),
        ({"LOBBY_DEMO": "1", "LOBBY_ICE_SERVERS": '[{"urls": "http://x"}]'}, "not a stun:"),
        (
            {"LOBBY_DEMO": "1", "LOBBY_ICE_SERVERS": '[{"urls": "stun:x", "username": 1}]'},
            "'username' must be a string",
        ),
        (
            {"LOBBY_DEMO": "1", "LOBBY_ICE_SERVERS": '[{"urls": "turn:x:3478"}]'},
            "TURN servers need 'username' and 'credential', or LOBBY_TURN_SECRET",
        ),
        ({"OPENVIDU_SECRET": "s", "LOBBY_SECRET_KEY": "short"}, "at least 16"),
        ({"LOBBY_DEMO": "maybe"}, "LOBBY_DEMO must be true or false"),
        ({"LOBBY_DEMO": "1", "LOBBY_RECONNECT_GRACE": "soon"}, "must be a number"),
        ({"LOBBY_DEMO": "1", "LOBBY_RECONNECT_GRACE": "-1"}, "at least 0"),
        ({"LOBBY_DEMO": "1", "OPENVIDU_URL": "localhost:4443"}, "must start with http"),
        ({"LOBBY_DEMO": "1", "LOBBY_LOG_LEVEL": "loud"}, "LOBBY_LOG_LEVEL"),
        ({"LOBBY_DEMO": "1", "LOBBY_HOST": "0.0.0.0"}, "LOBBY_PUBLIC_URL is required"),
        ({"LOBBY_DEMO": "1", "LOBBY_HOST": "::"}, "LOBBY_PUBLIC_URL is required"),
        ({"LOBBY_DEMO": "1", "LOBBY_PUBLIC_URL": "lobby.example.com"}, "LOBBY_PUBLIC_URL: .* no"),
        ({"LOBBY_DEMO": "1", "LOBBY_PUBLIC_URL": "https://x.example/app"}, "no origin"),
        ({"LOBBY_DEMO": "1", "LOBBY_PUBLIC_URL": "http://["}, "no origin"),
        ({"LOBBY_DEMO": "1", "LOBBY_ALLOWED_ORIGINS": "https://a.example?x"}, "no origin"),
        (
            {"LOBBY_MEDIA": "livekit", "LOBBY_SECRET_KEY": "k" * 32},
            "^LIVEKIT_URL is required with LiveKit outside demo mode$",
        ),
        (
            {"LOBBY_MEDIA": "livekit", "LOBBY_SECRET_KEY": "k" * 32, "LIVEKIT_URL": "wss://lk"},
            "^LIVEKIT_API_KEY is required with LiveKit outside demo mode$",
        ),
        (
            {
                "LOBBY_MEDIA": "livekit",
                "LOBBY_SECRET_KEY": "k" * 32,
                "LIVEKIT_URL": "wss://lk",
                "LIVEKIT_API_KEY": "key",
            },
            "^LIVEKIT_API_SECRET is required with LiveKit outside demo mode$",
        ),
        (
            {"LOBBY_DEMO": "1", "LIVEKIT_URL": "https://lk.example"},
            "^LIVEKIT_URL must start with ws:// or wss:// and name a host, not 'https://lk.example'$",
        ),
        ({"LOBBY_DEMO": "1", "LIVEKIT_URL": "ws://"}, "^LIVEKIT_URL must start with ws://"),
        (
            {"LOBBY_DEMO": "1", "LIVEKIT_URL": "wss://key:pw@lk.example"},
            "^LIVEKIT_URL must not carry a user name or password$",
        ),
        (
            {"LOBBY_DEMO": "1", "LIVEKIT_API_URL": "ws://lk.example"},
            "^LIVEKIT_API_URL must start with http:// or https://",
        ),
        ({"LOBBY_DEMO": "1", "LIVEKIT_TOKEN_TTL": "soon"}, "^LIVEKIT_TOKEN_TTL must be a number"),
        ({"LOBBY_DEMO": "1", "LIVEKIT_TOKEN_TTL": "0"}, "^LIVEKIT_TOKEN_TTL must be at least 1"),
        ({"LOBBY_DEMO": "1", "LIVEKIT_TIMEOUT": "0"}, "^LIVEKIT_TIMEOUT must be at least 0.1"),
        (
            {"LOBBY_DEMO": "1", "LOBBY_DATABASE": "mysql://db.example/lobby"},
            "^LOBBY_DATABASE must be a SQLite file or a postgresql:// URL, not a mysql:// URL$",
        ),
        ({"LOBBY_DEMO": "1", "LOBBY_REDIS_URL": "localhost:6379"}, "^LOBBY_REDIS_URL must be "),
        ({"LOBBY_DEMO": "1", "LOBBY_REDIS_URL": "http://r:6379"}, "^LOBBY_REDIS_URL must be "),
        ({"LOBBY_DEMO": "1", "LOBBY_REDIS_URL": "redis://"}, "^LOBBY_REDIS_URL must be "),
        ({"LOBBY_DEMO": "1", "LOBBY_REDIS_URL": "unix://"}, "^LOBBY_REDIS_URL must be "),
        ({"LOBBY_DEMO": "1", "LOBBY_REDIS_URL": "redis://r:port"}, "malformed port"),
    ],
)
def test_bad_or_missing_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "location",
    ["lobby.sqlite3", "/var/lib/lobby/db", "postgresql://u:pw@db/lobby", "postgres://db"],
)
def test_database_is_a_sqlite_file_or_a_postgresql_url_kept_out_of_repr(location: str) -> None:
    settings = Settings.from_env({"LOBBY_DEMO": "1", "LOBBY_DATABASE": f" {location} "})
    assert settings.database == location
    assert "pw" not in repr(settings)


def test_openvidu_is_chosen_by_its_url_or_by_name() -> None:
    by_url = Settings.from_env({"OPENVIDU_URL": "http://ov:4443"}, demo=True)
    assert (by_url.media, by_url.openvidu_url, by_url.room_size) == (
        "openvidu",
        "http://ov:4443",
        0,
    )
    assert by_url.max_frame_bytes == 4096
    by_name = Settings.from_env({"LOBBY_MEDIA": "OpenVidu"}, demo=True)
    assert (by_name.media, by_name.openvidu_url) == ("openvidu", "http://localhost:4443")
    p2p = Settings.from_env({"LOBBY_MEDIA": "p2p", "OPENVIDU_URL": "http://ov:4443"}, demo=True)
    assert p2p.media == "p2p"
    # A p2p server in production needs no OpenVidu secret.
    assert Settings.from_env({"LOBBY_SECRET_KEY": "k" * 32}).media == "p2p"


def test_livekit_in_demo_mode_is_the_dev_server() -> None:
    settings = Settings.from_env({"LOBBY_MEDIA": "LiveKit"}, demo=True)
    assert (settings.media, settings.room_size, settings.max_frame_bytes) == ("livekit", 0, 4096)
    assert (settings.livekit_url, settings.livekit_api_url) == (
        "ws://localhost:7880",
        "http://localhost:7880",
    )
    assert (settings.livekit_api_key, settings.livekit_api_secret) == ("devkey", "secret")
    assert (settings.livekit_token_ttl, settings.livekit_timeout) == (60, 5)


def test_only_lobby_media_selects_livekit() -> None:
    # LiveKit's own SDKs read LIVEKIT_URL from the environment: its presence picks nothing.
    settings = Settings.from_env({"LIVEKIT_URL": "wss://lk.example"}, demo=True)
    assert settings.media == "p2p"


def test_livekit_in_production() -> None:
    env = {
        "LOBBY_MEDIA": "livekit",
        "LOBBY_SECRET_KEY": "k" * 32,
        "LIVEKIT_URL": "wss://lk.example:7443/",
        "LIVEKIT_API_KEY": "APIkey",
        "LIVEKIT_API_SECRET": "s3cret-livekit",
        "LIVEKIT_TOKEN_TTL": "30",
        "LIVEKIT_TIMEOUT": "2.5",
    }
    settings = Settings.from_env(env)
    assert (settings.livekit_url, settings.livekit_api_url) == (
        "wss://lk.example:7443",
        "https://lk.example:7443",  # derived: the same server's HTTP side
    )
    assert (settings.livekit_api_key, settings.livekit_api_secret) == ("APIkey", "s3cret-livekit")
    assert (settings.livekit_token_ttl, settings.livekit_timeout) == (30, 2.5)
    assert "s3cret-livekit" not in repr(settings)
    inside = Settings.from_env(env | {"LIVEKIT_API_URL": "http://livekit.internal:7880/"})
    assert inside.livekit_api_url == "http://livekit.internal:7880"
    plain = Settings.from_env(env | {"LIVEKIT_URL": "ws://10.0.0.5:7880"})
    assert plain.livekit_api_url == "http://10.0.0.5:7880"


def test_other_media_need_no_livekit_settings() -> None:
    assert Settings.from_env({"LOBBY_SECRET_KEY": "k" * 32}).media == "p2p"
    env = {"LOBBY_MEDIA": "openvidu", "OPENVIDU_SECRET": "s", "LOBBY_SECRET_KEY": "k" * 32}
    assert Settings.from_env(env).media == "openvidu"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://:s3cret@redis.internal",
        "rediss://user:pw@redis.example.com:6380/2",
        "unix:///run/redis/redis.sock",
    ],
)
def test_redis_urls_of_every_scheme_are_taken_and_kept_out_of_repr(url: str) -> None:
    settings = Settings.from_env({"LOBBY_REDIS_URL": f" {url} "}, demo=True)
    assert settings.redis_url == url
    assert url not in repr(settings)


def test_without_redis_presence_stays_in_memory() -> None:
    assert Settings.from_env({}, demo=True).redis_url is None


def test_room_size_and_ice_servers_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "LOBBY_ROOM_SIZE": "6",
            "LOBBY_ICE_SERVERS": '[{"urls": "stun:stun.example:3478"},'
            ' {"urls": ["turn:t.example:3478", "turns:t.example:5349"]},'
            ' {"urls": "turn:u.example", "username": "u", "credential": "secret-pw"}]',
            "LOBBY_TURN_SECRET": "coturn-shared-secret",
        },
        demo=True,
    )
    assert settings.room_size == 6
    assert [s.urls for s in settings.ice_servers] == [
        ("stun:stun.example:3478",),
        ("turn:t.example:3478", "turns:t.example:5349"),
        ("turn:u.example",),
    ]
    assert settings.ice_servers[2].credential == "secret-pw"
    assert "secret-pw" not in repr(settings)
    assert "coturn-shared-secret" not in repr(settings)
    assert Settings.from_env({"LOBBY_ROOM_SIZE": "0"}, demo=True).room_size == 0


def test_production_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "OPENVIDU_URL": "https://ov.example.com/",
            "OPENVIDU_SECRET": "s3cret",
            "OPENVIDU_VERIFY_TLS": "false",
            "OPENVIDU_CA_FILE": "/etc/ca.pem",
            "LOBBY_SECRET_KEY": "k" * 32,
            "LOBBY_ALLOWED_ORIGINS": "https://a.example, https://b.example/",
            "LOBBY_RECONNECT_GRACE": "2.5",
            "LOBBY_PING_INTERVAL": "7",
            "LOBBY_PING_TIMEOUT": "3",
        }
    )
    assert not settings.demo
    assert settings.openvidu_url == "https://ov.example.com"
    assert settings.openvidu_verify_tls is False
    assert settings.openvidu_ca_file == "/etc/ca.pem"
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.public_origins == ()  # unset: the loopback names, on the port bound
    assert (settings.reconnect_grace, settings.ping_interval, settings.ping_timeout) == (2.5, 7, 3)
    assert "s3cret" not in repr(settings)
    assert "k" * 32 not in repr(settings)


def test_public_urls_are_normalized_origins() -> None:
    settings = Settings.from_env(
        {
            "LOBBY_PUBLIC_URL": "HTTPS://Lobby.Example.com:443/, http://[::1]:5000",
            "LOBBY_HOST": "0.0.0.0",
        },
        demo=True,
    )
    assert settings.public_origins == ("https://lobby.example.com", "http://[::1]:5000")


# The table


def test_the_table_fills_every_field_of_settings_once() -> None:
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(s.attribute for s in SETTINGS) == sorted(fields)
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_default_parses(setting: Setting) -> None:
    setting.parse(setting.name, setting.default or "")


def test_the_dataclass_defaults_are_the_tables() -> None:
    """Only what `_settle` decides is given here; every other field is the table's default."""
    key = "k" * 32
    env = {
        "LOBBY_MEDIA": "openvidu",
        "OPENVIDU_SECRET": DEMO_OPENVIDU_SECRET,
        "LOBBY_SECRET_KEY": key,
    }
    assert Settings.from_env(env) == Settings(secret_key=key)


def test_the_demo_flag_overrides_lobby_demo() -> None:
    env = {"LOBBY_DEMO": "not a boolean", "LOBBY_SECRET_KEY": "k" * 32}
    assert Settings.from_env(env, demo=True).demo
    assert not Settings.from_env(env, demo=False).demo


def test_the_help_epilog_lists_every_setting_with_its_default() -> None:
    rows = help_epilog().splitlines()[1:]
    assert [row.split()[0] for row in rows] == [s.name for s in SETTINGS]
    shown = dict(row.strip().split(maxsplit=1) for row in rows)
    assert shown["LOBBY_SESSION_TTL"] == "43200"
    assert shown["LOBBY_MEDIA"] == "p2p, or openvidu when OPENVIDU_URL is set"
    assert shown["LOBBY_SECRET_KEY"] == "not set"


def test_python_m_lobby_config_prints_the_readme_table() -> None:
    root = Path(lobby.__file__).resolve().parent.parent  # `-m` imports from the working directory
    printed = subprocess.run(
        [sys.executable, "-m", "lobby.config"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert printed.stdout == markdown_table() + "\n", printed.stderr
