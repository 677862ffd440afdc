"""Docs that must stay true: the README's settings table and the protocol contract."""

from __future__ import annotations

import re
from itertools import zip_longest
from pathlib import Path

import pytest

from lobby.config import ConfigError, Settings, markdown_table
from lobby.rules import protocol, signalling

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end == -1 else text[start:end]


def table_rows(markdown: str) -> list[tuple[str, ...]]:
    """The cells of each `| … |` line of a markdown table (no cell holds ` | `)."""
    return [tuple(line[2:-2].split(" | ")) for line in markdown.splitlines() if line[:2] == "| "]


def test_the_readme_settings_table_is_the_generated_one() -> None:
    """Names in order, then each row's default and description: a drift names what moved."""
    readme = table_rows(section(README, "## Configuration"))
    generated = table_rows(markdown_table())
    assert [row[0] for row in readme] == [row[0] for row in generated]
    drifts = [
        f"{ours[0]} {column}:\n  README.md: {in_readme}\n  generated: {in_table}"
        for ours, theirs in zip(readme, generated, strict=True)
        for column, in_readme, in_table in zip_longest(
            ("default", "description"), ours[1:], theirs[1:]
        )
        if in_readme != in_table
    ]
    assert not drifts, "regenerate with `python -m lobby.config`:\n" + "\n".join(drifts)


def test_readme_starts_with_the_two_commands() -> None:
    quick = section(README, "## Quick start")
    assert "make run" in quick
    assert "make test" in quick
    assert README.index("## Quick start") < README.index("## Configuration")


@pytest.mark.parametrize(
    ("heading", "types"),
    [("## Client → server", protocol.CLIENT_TYPES), ("## Server → client", protocol.SERVER_TYPES)],
)
def test_every_message_type_is_documented_and_no_other(
    heading: str, types: tuple[str, ...]
) -> None:
    documented = re.findall(r"^### `(\w+)`", section(PROTOCOL, heading), re.MULTILINE)
    assert sorted(documented) == sorted(types)


def test_every_error_code_is_documented_and_no_other() -> None:
    table = section(PROTOCOL, "### `error`")
    documented = re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)
    assert sorted(documented) == sorted(protocol.ERROR_CODES)


def test_every_close_code_is_documented_and_no_other() -> None:
    table = section(PROTOCOL, "## Close codes")
    documented = [int(c) for c in re.findall(r"^\| (\d{4}) \|", table, re.MULTILINE)]
    assert sorted(documented) == sorted(protocol.CloseCode)


def test_documented_limits_match_the_code() -> None:
    assert f"**{Settings().max_frame_bytes} bytes**" in PROTOCOL
    assert f"**{Settings(media='p2p').max_frame_bytes} bytes**" in PROTOCOL
    assert f"more than {signalling.MAX_SDP} characters" in PROTOCOL
    assert f"more than {signalling.MAX_CANDIDATES} candidates" in PROTOCOL
    assert f"up to {protocol.MAX_REF_LENGTH} characters" in PROTOCOL
    assert f"1\u2013{protocol.MAX_NICKNAME} printable characters" in PROTOCOL  # an en dash


# Settings from the environment


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
        ({"LOBBY_DEMO": "1", "LOBBY_MEDIA": "sfu"}, "LOBBY_MEDIA must be openvidu or p2p"),
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
    ],
)
def test_bad_or_missing_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


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
    assert (settings.reconnect_grace, settings.ping_interval, settings.ping_timeout) == (2.5, 7, 3)
    assert "s3cret" not in repr(settings)
    assert "k" * 32 not in repr(settings)


def test_security_doc_names_only_tests_that_exist() -> None:
    """`file.py::test_name`, `::test_name` (same file as the last one), `test_name…` (a prefix)."""
    doc = (ROOT / "docs" / "security.md").read_text()
    refs = re.findall(r"`(test_\w+\.py)?(?:::(test_\w+)(…)?)?`", doc)
    module, checked = "", 0
    for file, test, ellipsis in refs:
        module = file or module
        if not module or not test:
            continue
        defined = re.findall(
            r"^(?:async )?def (test_\w+)\(", (ROOT / "tests" / module).read_text(), re.MULTILINE
        )
        found = (
            [d for d in defined if d.startswith(test)] if ellipsis else [test] * (test in defined)
        )
        assert found, f"{module}::{test}{ellipsis} names no test"
        checked += 1
    assert checked > 40
