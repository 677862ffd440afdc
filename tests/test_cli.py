"""The `lobby` command, run in-process (and as a real subprocess), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import getpass
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import lobby
from lobby.cli import database_path, main, since
from lobby.config import Settings, help_epilog
from lobby.store.audit import AuditLog
from lobby.store.db import connect
from lobby.store.sessions import SessionStore
from lobby.store.users import User, UserStore
from lobby.web import IncompatibleUvicorn
from tests.conftest import Client, Lobby, LobbyFactory
from tests.live import free_port
from tests.postgres import PostgresServer

SECRETS = (
    "LOBBY_SECRET_KEY",
    "OPENVIDU_SECRET",
    "OPENVIDU_URL",
    "LOBBY_MEDIA",
    "LOBBY_DEMO",
    "LOBBY_HOST",
    "LOBBY_PORT",
)


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh LOBBY_DATABASE, and no secrets: `users` commands must not need them."""
    path = str(tmp_path / "lobby.sqlite3")
    monkeypatch.setenv("LOBBY_DATABASE", path)
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    return path


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def prompts(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Answer getpass prompts in order; returns the prompts seen."""
    seen: list[str] = []
    replies: Iterator[str] = iter(answers)

    def fake_getpass(prompt: str = "Password: ", stream: object = None) -> str:
        seen.append(prompt)
        return next(replies)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    return seen


def no_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(prompt: str = "", stream: object = None) -> str:
        raise AssertionError("should not prompt")

    monkeypatch.setattr(getpass, "getpass", fail)


def verify(path: str, name: str, password: str) -> User | None:
    db = connect(path)
    try:
        return UserStore(db).verify(name, password)
    finally:
        db.close()


# --- users add ----------------------------------------------------------------------------


def test_add_with_password_stdin(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "s3cret\n")
    assert main(["users", "add", "alice", "--role", "publisher", "--password-stdin"]) == 0
    assert "added alice (PUBLISHER)" in capsys.readouterr().out
    assert verify(database, "alice", "s3cret") == User("alice", "PUBLISHER")


def test_add_prompts_twice(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = prompts(monkeypatch, "s3cret", "s3cret")
    assert main(["users", "add", "mod", "--role", "MODERATOR"]) == 0
    assert len(seen) == 2
    assert verify(database, "mod", "s3cret") == User("mod", "MODERATOR")


def test_add_refuses_mismatched_passwords(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts(monkeypatch, "one", "two")
    assert main(["users", "add", "alice", "--role", "PUBLISHER"]) == 1
    assert "passwords do not match" in capsys.readouterr().err
    assert main(["users", "list"]) == 0
    assert "alice" not in capsys.readouterr().out


def test_add_refuses_duplicate_before_prompting(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "first\n")
    main(["users", "add", "alice", "--role", "PUBLISHER", "--password-stdin"])
    no_prompts(monkeypatch)
    assert main(["users", "add", "alice", "--role", "MODERATOR"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert verify(database, "alice", "first") == User("alice", "PUBLISHER")


def test_add_refuses_bad_name_before_prompting(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_prompts(monkeypatch)
    assert main(["users", "add", "no spaces", "--role", "PUBLISHER"]) == 1
    assert "must be 1 to 32" in capsys.readouterr().err


def test_add_refuses_bad_role(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["users", "add", "alice", "--role", "ADMIN", "--password-stdin"])
    assert exited.value.code == 2
    assert "invalid choice: 'ADMIN'" in capsys.readouterr().err


def test_add_refuses_empty_password(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "\n")
    assert main(["users", "add", "alice", "--role", "PUBLISHER", "--password-stdin"]) == 1
    assert "must not be empty" in capsys.readouterr().err


def test_end_of_input_at_the_prompt(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def eof(prompt: str = "", stream: object = None) -> str:
        raise EOFError

    monkeypatch.setattr(getpass, "getpass", eof)
    assert main(["users", "add", "alice", "--role", "PUBLISHER"]) == 1
    assert "no password given" in capsys.readouterr().err


def test_interrupt_at_the_prompt_exits_130(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(prompt: str = "", stream: object = None) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(getpass, "getpass", interrupt)
    assert main(["users", "add", "alice", "--role", "PUBLISHER"]) == 130


# --- users list / remove / passwd ---------------------------------------------------------


def test_list_shows_name_role_and_demo_flag(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["users", "list"]) == 0
    assert "no users yet" in capsys.readouterr().err
    db = connect(database)
    users = UserStore(db)
    users.ensure_demo_users()
    db.close()

    assert main(["users", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "DEMO"]
    assert [line.split() for line in lines[1:]] == [
        ["publisher1", "PUBLISHER", "yes"],
        ["publisher2", "PUBLISHER", "yes"],
        ["subscriber", "SUBSCRIBER", "yes"],
    ]


def test_list_json_is_one_array_for_scripts(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["users", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    db = connect(database)
    UserStore(db).add("alice", "MODERATOR", "a long password")
    db.close()

    assert main(["users", "list", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [{"name": "alice", "role": "MODERATOR", "demo": False}]
    assert "using the database" in captured.err  # stdout holds the JSON alone


def test_remove(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "pw\n")
    main(["users", "add", "alice", "--role", "PUBLISHER", "--password-stdin"])
    assert main(["users", "remove", "alice"]) == 0
    assert "removed alice" in capsys.readouterr().out
    assert main(["users", "remove", "alice"]) == 1
    assert "no user named 'alice'" in capsys.readouterr().err


def test_passwd_changes_password_and_ends_sessions(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "old\n")
    main(["users", "add", "alice", "--role", "PUBLISHER", "--password-stdin"])
    db = connect(database)
    session = SessionStore(db, ttl=60).create("alice")

    stdin(monkeypatch, "new\r\n")
    assert main(["users", "passwd", "alice", "--password-stdin"]) == 0
    assert "changed the password of alice" in capsys.readouterr().out
    assert SessionStore(db, ttl=60).get(session) is None
    db.close()
    assert verify(database, "alice", "old") is None
    assert verify(database, "alice", "new") == User("alice", "PUBLISHER")


def test_passwd_unknown_user_does_not_prompt(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_prompts(monkeypatch)
    assert main(["users", "passwd", "nobody"]) == 1
    assert "no user named 'nobody'" in capsys.readouterr().err


def test_users_commands_name_the_database_in_full_and_say_when_it_is_new(
    database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("LOBBY_DATABASE", "lobby.sqlite3")  # relative: to where it runs
    full = (elsewhere / "lobby.sqlite3").resolve()

    assert main(["users", "list"]) == 0
    assert capsys.readouterr().err.splitlines()[0] == f"lobby: created a new database {full}"
    stdin(monkeypatch, "pw\n")
    assert main(["users", "add", "alice", "--role", "PUBLISHER", "--password-stdin"]) == 0
    out, err = capsys.readouterr()
    assert err == f"lobby: using the database {full}\n"
    assert out == "added alice (PUBLISHER)\n"  # stdout stays the command's own
    assert not Path(database).exists()


def test_unusable_database_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing" / "lobby.sqlite3"
    monkeypatch.setenv("LOBBY_DATABASE", str(path))
    assert main(["users", "list"]) == 1
    assert f"cannot use the database {path.resolve()}: " in capsys.readouterr().err


def test_database_path_defaults_to_the_documented_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOBBY_DATABASE", raising=False)
    assert database_path() == "lobby.sqlite3"


# --- serve --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "LOBBY_SECRET_KEY is required"),
        ({"OPENVIDU_URL": "https://ov.example"}, "OPENVIDU_SECRET is required"),
        ({"LOBBY_MEDIA": "openvidu"}, "OPENVIDU_SECRET is required"),
    ],
)
def test_serve_without_secrets_is_a_config_error(
    database: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    missing: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started: list[Settings] = []
    assert main(["serve"], serve=started.append) == 2
    assert missing in capsys.readouterr().err
    assert started == []


def test_serve_demo_with_host_and_port(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOBBY_PUBLIC_URL", "http://192.0.2.7:8000")
    started: list[Settings] = []
    assert main(["serve", "--demo", "--host", "0.0.0.0", "--port", "0"], serve=started.append) == 0
    [settings] = started
    assert (settings.demo, settings.host, settings.port) == (True, "0.0.0.0", 0)
    assert settings.public_origins == ("http://192.0.2.7:8000",)
    assert settings.database == database


def test_serve_on_every_interface_needs_the_public_url(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--host counts as LOBBY_HOST: 0.0.0.0 names no host that browsers could be checked by."""
    started: list[Settings] = []
    assert main(["serve", "--demo", "--host", "0.0.0.0"], serve=started.append) == 2
    assert "LOBBY_PUBLIC_URL is required" in capsys.readouterr().err
    assert started == []


def test_serve_takes_the_environment_without_flags(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENVIDU_SECRET", "openvidu-secret")
    monkeypatch.setenv("LOBBY_SECRET_KEY", "k" * 32)
    monkeypatch.setenv("LOBBY_PORT", "8080")
    started: list[Settings] = []
    assert main(["serve"], serve=started.append) == 0
    [settings] = started
    assert (settings.demo, settings.host, settings.port) == (False, "127.0.0.1", 8080)


def test_serve_refuses_a_bad_port(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "70000"], serve=lambda settings: None)
    assert exited.value.code == 2
    assert "not a port number" in capsys.readouterr().err


def test_serve_help_ends_with_every_setting_and_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.endswith("\n\n" + help_epilog() + "\n")  # as written: columns kept
    assert "  LOBBY_PORT" + " " * 21 + "5000\n" in out  # the longest name and 2 spaces wide


def test_serve_with_an_unfit_uvicorn_says_so_and_exits_2(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def serve(settings: Settings) -> None:
        raise IncompatibleUvicorn("lobby needs uvicorn 0.54.x, but uvicorn 0.99.0 is installed")

    assert main(["serve", "--demo"], serve=serve) == 2
    assert capsys.readouterr().err == (
        "lobby: lobby needs uvicorn 0.54.x, but uvicorn 0.99.0 is installed\n"
    )


# --- the installed command ----------------------------------------------------------------


def test_entry_point_in_a_real_process(database: str) -> None:
    script = Path(sys.executable).with_name("lobby")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "lobby"]
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    # The checkout itself on the path: the script must work even where the
    # editable install's .pth is missing (then only the wiring is under test).
    root = str(Path(lobby.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], input=stdin, env=env, capture_output=True, text=True, timeout=60
        )

    added = run("users", "add", "carol", "--role", "subscriber", "--password-stdin", stdin="pw\n")
    assert added.returncode == 0, added.stderr
    listed = run("users", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split() == ["carol", "SUBSCRIBER", "no"]
    assert verify(database, "carol", "pw") == User("carol", "SUBSCRIBER")


# --- on PostgreSQL ------------------------------------------------------------------------


@pytest.fixture
def pg_database(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """LOBBY_DATABASE naming a fresh PostgreSQL database, and no secrets."""
    url = postgres.fresh_database()
    monkeypatch.setenv("LOBBY_DATABASE", url)
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    return url


def test_users_commands_work_on_postgresql(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "old\n")
    assert main(["users", "add", "alice", "--role", "publisher", "--password-stdin"]) == 0
    assert capsys.readouterr() == (
        "added alice (PUBLISHER)\n",
        f"lobby: using the database {pg_database}\n",
    )
    assert main(["users", "list"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()[1:]] == [
        ["alice", "PUBLISHER", "no"]
    ]
    db = connect(pg_database)
    try:
        session = SessionStore(db, ttl=60).create("alice")
        stdin(monkeypatch, "new\n")
        assert main(["users", "passwd", "alice", "--password-stdin"]) == 0
        assert SessionStore(db, ttl=60).get(session) is None  # logged out everywhere
        assert verify(pg_database, "alice", "new") == User("alice", "PUBLISHER")
        assert main(["users", "remove", "alice"]) == 0
        assert main(["users", "remove", "alice"]) == 1
        assert UserStore(db).list() == []
    finally:
        db.close()


def test_a_password_in_the_postgresql_url_is_never_shown(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The test server trusts loopback, so any password is accepted: only its echo is tested.
    monkeypatch.setenv("LOBBY_DATABASE", pg_database.replace("lobby@", "lobby:hunter2@"))
    assert main(["users", "list"]) == 0
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert f"lobby: using the database {pg_database.replace('lobby@', 'lobby:***@')}\n" in err


def test_an_unreachable_postgresql_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://lobby@127.0.0.1:{free_port()}/lobby"  # nobody listens there
    monkeypatch.setenv("LOBBY_DATABASE", url)
    assert main(["users", "list"]) == 1
    assert f"lobby: cannot use the database {url}: PostgreSQL is unreachable: " in (
        capsys.readouterr().err
    )


def test_entry_point_on_postgresql_in_a_real_process(pg_database: str) -> None:
    script = Path(sys.executable).with_name("lobby")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "lobby"]
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env["PYTHONPATH"] = str(Path(lobby.__file__).parent.parent)
    added = subprocess.run(
        [*command, "users", "add", "dan", "--role", "moderator", "--password-stdin"],
        input="pw\n",
        env=env | {"LOBBY_DATABASE": pg_database},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    assert verify(pg_database, "dan", "pw") == User("dan", "MODERATOR")


def test_serve_with_an_unreachable_database_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before uvicorn starts: no lifespan traceback, one sentence and exit code 1."""
    url = f"postgresql://lobby:hunter2@127.0.0.1:{free_port()}/lobby"  # nobody listens there
    monkeypatch.setenv("LOBBY_DATABASE", url)
    assert main(["serve", "--demo"]) == 1
    err = capsys.readouterr().err
    shown = url.replace("hunter2", "***")
    assert f"lobby: cannot use the database {shown}: PostgreSQL is unreachable: " in err
    assert "hunter2" not in err
    assert "Traceback" not in err


# lobby status: against a real server, in a thread (the server runs on this loop).


async def test_status_prints_what_a_running_instance_holds(
    lobby_server: Lobby, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice: Client = await lobby_server.client("alice")
    await alice.join("R1")
    monkeypatch.setenv("LOBBY_PORT", str(lobby_server.live.port))
    monkeypatch.delenv("LOBBY_HOST", raising=False)
    assert await asyncio.to_thread(main, ["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "status        ready",
        "sockets       1",
        "participants  1",
        "rooms         1",
        "media         openvidu, reachable",
        "demo          no",
    ]
    assert await asyncio.to_thread(main, ["status", "--url", lobby_server.http, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "ready"
    assert (answer["sockets"], answer["participants"], answer["rooms"]) == (1, 1, 1)


async def test_status_of_a_draining_instance_names_the_failing_check_and_exits_1(
    make_lobby: LobbyFactory, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lobby answers only to its public name: status sends it as the Host.
    server: Lobby = await make_lobby(public_origins=("https://lobby.example.com",))
    monkeypatch.setenv("LOBBY_PUBLIC_URL", "https://lobby.example.com")
    server.state.readiness.draining = True
    assert await asyncio.to_thread(main, ["status", "--url", server.http]) == 1
    out = capsys.readouterr().out
    assert "status        unavailable" in out
    assert "  draining    This instance is shutting down" in out


def test_status_without_an_instance_says_so_in_one_sentence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["status", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lobby: no lobby answers at {url} (")
    assert err.endswith("is `lobby serve` running?\n")
    assert err.count("\n") == 1


@pytest.fixture
async def lobby_server(make_lobby: LobbyFactory) -> Lobby:
    server: Lobby = await make_lobby()
    return server


def test_several_workers_without_redis_are_refused_in_one_sentence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOBBY_REDIS_URL", raising=False)
    assert main(["serve", "--demo", "--workers", "2"], serve=lambda settings: None) == 2
    assert capsys.readouterr().err == (
        "lobby: several workers (LOBBY_WORKERS, --workers) need LOBBY_REDIS_URL: "
        "they share presence through Redis\n"
    )


# --- audit --------------------------------------------------------------------------------


def test_audit_lists_moderator_actions_since_a_time_or_a_duration(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit"]) == 0
    assert "no moderator actions" in capsys.readouterr().err
    now = time.time()
    clock = iter([now - 3 * 86400, now - 600, now - 5])
    db = connect(database)
    audit = AuditLog(db, clock=lambda: next(clock))
    audit.write("mod", "lock_room", "R1")
    audit.write("mod", "kick", "R1", "alice", "Off topic")
    audit.write("mod2", "close_room", "R2")
    db.close()

    assert main(["audit"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["WHEN", "(UTC)", "WHO", "WHAT", "ROOM", "WHOM", "REASON"]
    assert [line.split()[2:] for line in lines[1:]] == [
        ["mod", "lock_room", "R1", "-", "-"],
        ["mod", "kick", "R1", "alice", "Off", "topic"],
        ["mod2", "close_room", "R2", "-", "-"],
    ]
    assert main(["audit", "--since", "1h"]) == 0
    assert [line.split()[3] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "kick",
        "close_room",
    ]
    two_days_ago = datetime.fromtimestamp(now - 2 * 86400, UTC).isoformat()
    assert main(["audit", "--since", two_days_ago, "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [(r["actor"], r["action"], r["target"], r["reason"]) for r in rows] == [
        ("mod", "kick", "alice", "Off topic"),
        ("mod2", "close_room", "", ""),
    ]
    assert "using the database" in captured.err  # stdout holds the JSON alone
    assert main(["audit", "--since", "2000-01-01T00:00+02:00", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


@pytest.mark.parametrize("text", ["yesterday", "5x", "", "1h-2m"])
def test_audit_refuses_a_since_it_cannot_read(
    database: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--since", text]) == 2
    assert "--since" in capsys.readouterr().err


def test_audit_since_reads_durations_and_iso_times() -> None:
    assert since("90s", 1000.0) == 910.0
    assert since("1h30m", 10_000.0) == 10_000.0 - 5400
    assert since("7d", 1_000_000.0) == 1_000_000.0 - 7 * 86400
    assert since("1970-01-01T01:00", 0) == 3600.0  # UTC unless it says otherwise
    assert since("1970-01-01T01:00+01:00", 0) == 0.0
