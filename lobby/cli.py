"""The `lobby` command: `lobby serve` runs the server, `lobby users …` manages accounts,
`lobby status` says what a running instance holds, `lobby audit` what moderators did.

The `users` commands need only the database, so they read `LOBBY_DATABASE` and
nothing else: an administrator can add the first user before any secret is set.
They work the same on a SQLite file and on a PostgreSQL database.

`lobby status` asks the instance itself: `/readyz` on its loopback address, where
it adds its counts (sockets, participants, rooms) and its media mode to the checks.

Exit codes: 0 done, 1 refused (unknown or duplicate user, passwords that do not
match, an unusable database), 2 bad usage or configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import ProxyHandler, Request, build_opener

from lobby.config import SETTINGS, ConfigError, Settings, help_epilog
from lobby.rules.grants import ROLES
from lobby.store.audit import AuditLog, Record
from lobby.store.db import SchemaError, Unavailable, connect, is_postgres
from lobby.store.users import UserError, UserStore, check_name
from lobby.web import IncompatibleUvicorn, MissingLibrary

Serve = Callable[[Settings], object]


class CommandError(Exception):
    """A `users` command cannot do what was asked; the message says why."""


def main(argv: list[str] | None = None, *, serve: Serve | None = None) -> int:
    """Run the command in `argv` (default: the process arguments); returns the exit code.

    `serve` replaces `lobby.server.serve` (tests use it to see the settings).
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args, serve)
        if args.command == "status":
            return _status(args)
        if args.command == "audit":
            return _audit(args)
        return _users(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _serve(args: argparse.Namespace, serve: Serve | None) -> int:
    # --host and --port stand for their variables, so the settings that depend on them (the
    # public URL a wildcard address needs) are settled with them.
    env = dict(os.environ)
    if args.host is not None:
        env["LOBBY_HOST"] = args.host
    if args.port is not None:
        env["LOBBY_PORT"] = str(args.port)
    if args.workers is not None:
        env["LOBBY_WORKERS"] = str(args.workers)
    try:
        settings = Settings.from_env(env, demo=True if args.demo else None)
    except ConfigError as exc:
        print(f"lobby: {exc}", file=sys.stderr)
        return 2
    # Imported here so the `users` commands work without the server's dependencies loaded.
    from lobby.server import RedisUnreachable
    from lobby.server import serve as serve_forever

    serve = serve or serve_forever
    try:
        serve(settings)
    except (IncompatibleUvicorn, MissingLibrary) as exc:
        print(f"lobby: {exc}", file=sys.stderr)
        return 2
    except (sqlite3.Error, SchemaError, Unavailable) as exc:
        print(f"lobby: cannot use the database {_shown(settings.database)}: {exc}", file=sys.stderr)
        return 1
    except RedisUnreachable as exc:
        url = _without_password(settings.redis_url or "")
        print(f"lobby: cannot reach Redis at {url} (LOBBY_REDIS_URL): {exc}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    """Print what the instance at `--url` holds; 0 when it is ready, 1 otherwise."""
    url = (args.url or _local_url()).rstrip("/")
    body = _readyz(url, args.timeout, _public_host())
    if isinstance(body, str):
        print(
            f"lobby: no lobby answers at {url} ({body}); is `lobby serve` running?", file=sys.stderr
        )
        return 1
    if "sockets" not in body:
        print(
            f"lobby: {url} keeps its counts to itself: run `lobby status` on its own machine",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(body))
    else:
        _print_status(body)
    return 0 if body.get("status") == "ready" else 1


def _readyz(url: str, timeout: float, host: str | None) -> dict[str, Any] | str:
    """`/readyz`'s JSON answer (a 503's too: answered, not ready), or why there is none.

    `host`: the `Host` to send (the lobby answers only to its public names)."""
    opener = build_opener(ProxyHandler({}))  # this machine: never through an http_proxy
    request = Request(f"{url}/readyz", headers={"Host": host} if host else {})
    try:
        try:
            with opener.open(request, timeout=timeout) as reply:
                body = json.load(reply)
        except HTTPError as error:
            body = json.load(error)
    except (URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    except ValueError:
        return "its /readyz is not a lobby's"
    return body if isinstance(body, dict) else "its /readyz is not a lobby's"


def _print_status(body: dict[str, Any]) -> None:
    failing: dict[str, str] = body.get("failing", {})
    media = "down: joins fail" if "media" in failing else "reachable"
    rows = [
        ("status", str(body["status"])),
        *((f"  {check}", sentence) for check, sentence in failing.items()),
        ("sockets", str(body["sockets"])),
        ("participants", str(body["participants"])),
        ("rooms", str(body.get("rooms", "?"))),
        ("media", f"{body['media']}, {media}"),
        ("demo", "yes" if body.get("demo") else "no"),
    ]
    width = max(len(name) for name, _ in rows) + 2
    for name, value in rows:
        print(f"{name:<{width}}{value}")


def _public_host() -> str | None:
    """The host of `LOBBY_PUBLIC_URL`'s first origin, when set: the `Host` the lobby wants."""
    first = (os.environ.get("LOBBY_PUBLIC_URL") or "").split(",")[0].strip()
    return urlsplit(first).netloc or None


def _local_url() -> str:
    """The instance on this machine, at `LOBBY_PORT` (its loopback side: only that gets counts)."""
    port = os.environ.get("LOBBY_PORT") or "5000"
    host = os.environ.get("LOBBY_HOST") or "127.0.0.1"
    if host not in ("localhost", "::1") and not host.startswith("127."):
        host = "127.0.0.1"  # a wildcard or public address: loopback reaches it all the same
    return f"http://{'[::1]' if host == '::1' else host}:{port}"


def _users(args: argparse.Namespace) -> int:
    path = database_path()
    shown, existed = _shown(path), is_postgres(path) or path == ":memory:" or Path(path).exists()
    try:
        with closing(connect(path)) as db:
            verb = "using the" if existed else "created a new"
            print(f"lobby: {verb} database {shown}", file=sys.stderr)
            run: Callable[[UserStore, argparse.Namespace], None] = args.run
            run(UserStore(db), args)
    except (UserError, CommandError) as exc:
        print(f"lobby: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, SchemaError, Unavailable) as exc:
        print(f"lobby: cannot use the database {shown}: {exc}", file=sys.stderr)
        return 1
    return 0


def _audit(args: argparse.Namespace) -> int:
    """Print the moderators' actions since `--since` (default: all), oldest first."""
    try:
        start = 0.0 if args.since is None else since(args.since, time.time())
    except ValueError as exc:
        print(f"lobby: {exc}", file=sys.stderr)
        return 2
    path = database_path()
    try:
        with closing(connect(path)) as db:
            print(f"lobby: using the database {_shown(path)}", file=sys.stderr)
            records = AuditLog(db).since(start)
    except (sqlite3.Error, SchemaError, Unavailable) as exc:
        print(f"lobby: cannot use the database {_shown(path)}: {exc}", file=sys.stderr)
        return 1
    if args.json:  # for scripts: one JSON array on stdout, `[]` when nothing happened
        print(json.dumps([r.json() for r in records]))
    elif not records:
        print("no moderator actions in that time", file=sys.stderr)
    else:
        _print_audit(records)
    return 0


DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def since(text: str, now: float) -> float:
    """`--since`: an ISO 8601 time (UTC unless it says otherwise), or how long ago, like
    `90s`, `15m`, `2h`, `7d` or `1h30m`; seconds since the epoch."""
    match = DURATION.fullmatch(text.strip())
    if match and any(match.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return now - (((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither an ISO time (2026-01-31T09:00) nor a duration (2h, 7d)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _print_audit(records: list[Record]) -> None:
    rows = [("WHEN (UTC)", "WHO", "WHAT", "ROOM", "WHOM", "REASON")]
    for r in records:
        when = datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((when, r.actor, r.action, r.room, r.target or "-", r.reason or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)]
        print("  ".join([*cells, row[5]]).rstrip())


def _shown(location: str) -> str:
    """The database as stderr names it: a SQLite file in full (a relative LOBBY_DATABASE run
    from another folder would otherwise make a second, empty database without a word), a
    PostgreSQL URL without its password."""
    if is_postgres(location):
        return _without_password(location)
    return location if location == ":memory:" else str(Path(location).resolve())


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + parts.netloc.rpartition("@")[2]))


def database_path() -> str:
    """`LOBBY_DATABASE`, or its documented default."""
    default = next(s.default for s in SETTINGS if s.name == "LOBBY_DATABASE")
    return os.environ.get("LOBBY_DATABASE") or default or ""


def _add(store: UserStore, args: argparse.Namespace) -> None:
    # Refuse a bad or taken name before asking for a password twice.
    if store.get(check_name(args.name)) is not None:
        raise CommandError(f"a user named {args.name!r} already exists")
    user = store.add(args.name, args.role, _password(args.password_stdin))
    print(f"added {user.name} ({user.role})")


def _list(store: UserStore, args: argparse.Namespace) -> None:
    accounts = store.accounts()
    if args.json:
        # For scripts: one JSON array on stdout, `[]` when there is nobody.
        print(json.dumps([{"name": a.name, "role": a.role, "demo": a.demo} for a in accounts]))
        return
    if not accounts:
        print("no users yet; add one with `lobby users add NAME --role ROLE`", file=sys.stderr)
        return
    rows = [("NAME", "ROLE", "DEMO")]
    rows += [(a.name, a.role, "yes" if a.demo else "no") for a in accounts]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _remove(store: UserStore, args: argparse.Namespace) -> None:
    if not store.remove(args.name):
        raise CommandError(f"no user named {args.name!r}")
    print(f"removed {args.name}; their sessions have ended")


def _passwd(store: UserStore, args: argparse.Namespace) -> None:
    if store.get(args.name) is None:
        raise CommandError(f"no user named {args.name!r}")
    if not store.set_password(args.name, _password(args.password_stdin)):
        raise CommandError(f"no user named {args.name!r}")  # removed while we prompted
    print(f"changed the password of {args.name}; their sessions have ended")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        password = getpass.getpass("Password: ")
        again = getpass.getpass("Repeat password: ")
    except EOFError:
        raise CommandError("no password given") from None
    if password != again:
        raise CommandError("the passwords do not match")
    return password


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535)")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lobby", description="A realtime lobby server for OpenVidu video calls."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server (settings from the environment)",
        epilog=help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the epilog's columns
    )
    serve.add_argument("--host", help="address to listen on (default: LOBBY_HOST)")
    serve.add_argument("--port", type=_port, help="port to listen on (default: LOBBY_PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        help="processes on the port, each a lobby instance (default: LOBBY_WORKERS; >1 needs "
        "LOBBY_REDIS_URL)",
    )
    serve.add_argument("--demo", action="store_true", help="demo mode, same as LOBBY_DEMO=true")

    status = commands.add_parser(
        "status", help="what a running instance holds: sockets, participants, rooms, media"
    )
    status.add_argument(
        "--url", help="the instance (default: http://127.0.0.1:LOBBY_PORT, this machine's)"
    )
    status.add_argument("--json", action="store_true", help="its /readyz answer, for scripts")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")

    audit = commands.add_parser(
        "audit", help="what moderators did (kicks, room closes, locks), from LOBBY_DATABASE"
    )
    audit.add_argument(
        "--since", help="an ISO time (UTC unless it says) or how long ago: 90s, 15m, 2h, 7d"
    )
    audit.add_argument(
        "--json",
        action="store_true",
        help='a JSON array of {"at", "actor", "action", "room", "target", "reason"}',
    )

    users = commands.add_parser("users", help="manage the accounts in LOBBY_DATABASE")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    stdin_help = "read the password from one line of standard input instead of prompting"

    add = actions.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--role", required=True, type=str.upper, choices=ROLES, help="any case")
    add.add_argument("--password-stdin", action="store_true", help=stdin_help)
    add.set_defaults(run=_add)

    listing = actions.add_parser("list", help="show every user")
    listing.add_argument(
        "--json", action="store_true", help='a JSON array of {"name", "role", "demo"}, for scripts'
    )
    listing.set_defaults(run=_list)

    remove = actions.add_parser("remove", help="delete a user and end their sessions")
    remove.add_argument("name")
    remove.set_defaults(run=_remove)

    passwd = actions.add_parser("passwd", help="change a password and end the user's sessions")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help=stdin_help)
    passwd.set_defaults(run=_passwd)
    return parser
