"""The package layout is the architecture: who may import what, and where uvicorn is reached.

Each part of `lobby/` names the lobby modules and the third-party packages it may
import. Dependencies point inward: the web edge, media and storage use the hub and
the request handler, which use the pure rules; the rules import only the standard
library (and not asyncio, sockets or anything else with I/O).
"""

from __future__ import annotations

import ast
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

import lobby

PACKAGE = Path(lobby.__file__).resolve().parent
ROOT = PACKAGE.parent

# The stdlib modules the pure rules may use: nothing with I/O, no asyncio.
RULES_STDLIB = {
    "__future__",
    "collections",
    "dataclasses",
    "enum",
    "ipaddress",
    "json",
    "math",
    "re",
    "struct",
    "time",
    "typing",
    "unicodedata",
}
# part -> (lobby modules it may import, third-party packages it may import).
# Patterns: `lobby.rules.*` is every module of that subpackage.
PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "lobby.rules.*": (("lobby.rules.*",), ()),
    "lobby.hub": (("lobby.rules.frames", "lobby.rules.protocol"), ()),
    # livekit: the official LiveKit SDK; it speaks aiohttp and protobuf (`google`), whose
    # errors lobby.media.livekit translates, and signs with PyJWT (`jwt`), whose short-key
    # warning it says once.
    "lobby.media.*": (
        ("lobby", "lobby.media.seam", "lobby.rules.grants"),
        ("httpx", "livekit", "aiohttp", "google", "jwt"),
    ),
    # db.py is the seam; it opens the back end LOBBY_DATABASE names (sqlite, postgres).
    "lobby.store.*": (
        (
            "lobby.store.db",
            "lobby.store.sqlite",
            "lobby.store.postgres",
            "lobby.store.users",
            "lobby.rules.grants",
            "lobby.rules.presence",
        ),
        ("argon2", "psycopg"),
    ),
    # Shared presence: the Redis implementation alone reaches redis-py; the commands, the
    # replica and the in-memory store stay pure enough to share with single-process mode.
    "lobby.cluster.*": (("lobby.cluster.*", "lobby.rules.*"), ("redis",)),
    "lobby.cluster.commands": (("lobby.rules.presence", "lobby.rules.mediastate"), ()),
    "lobby.cluster.replica": (
        ("lobby.cluster.commands", "lobby.cluster.reservations", "lobby.rules.*"),
        (),
    ),
    "lobby.cluster.reservations": ((), ()),
    "lobby.cluster.seam": (("lobby.cluster.commands", "lobby.cluster.replica"), ()),
    "lobby.cluster.local": (("lobby.cluster.*",), ()),
    "lobby.flows": ((), ()),
    # Room chat: its request flow, on the same store seam and hub as the handler.
    "lobby.flows.chat": (
        ("lobby.cluster.commands", "lobby.cluster.seam", "lobby.hub", "lobby.rules.*"),
        (),
    ),
    # The limits seam and its in-process side: no redis-py (the Redis side is elsewhere).
    "lobby.cluster.limits": (("lobby.cluster.seam", "lobby.rules.*"), ()),
    # The handler talks to presence through the store seam; it builds the in-process
    # store itself, never the Redis one (the app passes that in).
    "lobby.handler": (
        (
            "lobby.flows.chat",
            "lobby.cluster.commands",
            "lobby.cluster.gate",
            "lobby.cluster.limits",
            "lobby.cluster.local",
            "lobby.cluster.replica",
            "lobby.cluster.seam",
            "lobby.hub",
            "lobby.flows.joining",
            "lobby.rules.*",
            "lobby.media.seam",
            "lobby.media.calls",
            "lobby.flows.moderation",
            "lobby.store.audit",
            "lobby.store.roster",
        ),
        (),
    ),
    # Joins and resumes: grants from the media server, commands through the handler.
    "lobby.flows.joining": (
        (
            "lobby.cluster.commands",
            "lobby.cluster.limits",
            "lobby.cluster.seam",
            "lobby.handler",
            "lobby.hub",
            "lobby.media.seam",
            "lobby.flows.moderation",
            "lobby.rules.*",
        ),
        (),
    ),
    # The moderators' requests: commands through the handler's store, the audit store.
    "lobby.flows.moderation": (
        (
            "lobby.cluster.commands",
            "lobby.cluster.replica",
            "lobby.cluster.seam",
            "lobby.handler",
            "lobby.hub",
            "lobby.rules.*",
            "lobby.store.audit",
        ),
        (),
    ),
    "lobby.flows.callstates": (
        ("lobby.cluster.commands", "lobby.handler", "lobby.media.seam", "lobby.rules.grants"),
        (),
    ),
    "lobby.watch": (
        (
            "lobby.hub",
            "lobby.handler",
            "lobby.rules.protocol",
            "lobby.store.db",
            "lobby.store.sessions",
        ),
        (),
    ),
    "lobby.web.uvicorn_adapter": (
        ("lobby.hub", "lobby.rules.frames", "lobby.rules.limits", "lobby.rules.protocol"),
        ("httptools", "uvicorn", "websockets"),
    ),
    "lobby.web.*": (
        (
            "lobby.web",
            "lobby.web.addresses",
            "lobby.web.auth",
            "lobby.web.assets",
            "lobby.web.health",
            "lobby.web.metrics",
            "lobby.web.state",
            "lobby.logs",
            "lobby.web.origins",
            "lobby.flows.callstates",
            "lobby.cluster.limits",
            "lobby.config",
            "lobby.hub",
            "lobby.handler",
            "lobby.media.seam",
            "lobby.rules.*",
            "lobby.store.*",
        ),
        ("starlette",),
    ),
    # `/metrics` in Prometheus' format, written by its official client.
    "lobby.web.metrics": (
        ("lobby.config", "lobby.web.state"),
        ("starlette", "prometheus_client"),
    ),
    # The drain on SIGTERM is uvicorn's server with that signal intercepted.
    "lobby.web.drain": (
        ("lobby.hub", "lobby.rules.protocol", "lobby.web.state"),
        ("starlette", "uvicorn"),
    ),
    # The webhook endpoints verify LiveKit's signature with its SDK (PyJWT underneath) and
    # read its protobuf JSON; they tell these libraries' errors apart.
    "lobby.web.webhooks": (
        ("lobby.web.state",),
        ("starlette", "livekit", "jwt", "google"),
    ),
    "lobby.config": (("lobby.media.p2p", "lobby.rules.origins"), ()),
    # Log formats and ids; an ASGI middleware, typed with Starlette's ASGI types.
    "lobby.logs": ((), ("starlette",)),
    "lobby.openfiles": ((), ()),
    # Process start-up knows everything; the CLI keeps `users` free of the server.
    "lobby.app": (("lobby.*",), ("starlette",)),
    "lobby.server": (
        (
            "lobby.logs",
            "lobby.openfiles",
            "lobby.app",
            "lobby.config",
            "lobby.store.db",
            "lobby.web",
            "lobby.web.assets",
            "lobby.web.auth",
            "lobby.web.drain",
            "lobby.web.uvicorn_adapter",
        ),
        # redis: one PING before starting, so an unreachable Redis is one sentence.
        ("starlette", "uvicorn", "redis"),
    ),
    "lobby.cli": (
        ("lobby.config", "lobby.server", "lobby.web", "lobby.rules.grants", "lobby.store.*"),
        (),
    ),
    "lobby.__main__": (("lobby.cli",), ()),
    "lobby": ((), ()),
}
# The request flows beside the handler live in lobby.flows; the top level keeps what
# the file list should explain at a glance.
MAX_TOP_LEVEL_MODULES = 10


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module `name` imports, resolved: `from lobby.rules import protocol` is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return found


def part_of(name: str) -> str:
    matches = [p for p in PARTS if fnmatch(name, p) or p in (name, name + ".*")]
    assert matches, f"{name} belongs to no part: add it to PARTS"
    return max(matches, key=len)  # the most specific


def allowed(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or fnmatch(name, p) for p in patterns)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_imports_only_what_its_part_may(name: str) -> None:
    lobby_ok, third_party_ok = PARTS[part_of(name)]
    for imported in sorted(imports_of(name)):
        root = imported.split(".")[0]
        if root == "lobby":
            assert allowed(imported, lobby_ok), f"{name} may not import {imported}"
        elif root not in sys.stdlib_module_names:
            assert root in third_party_ok, f"{name} may not import {imported}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("lobby.rules")))
def test_the_rules_use_only_stdlib_without_io(name: str) -> None:
    for imported in imports_of(name):
        root = imported.split(".")[0]
        assert root == "lobby" or root in RULES_STDLIB, f"{name} imports {imported}"


@pytest.mark.parametrize(
    "name", ["lobby.cluster.commands", "lobby.cluster.replica", "lobby.cluster.reservations"]
)
def test_the_replicated_commands_are_pure_too(name: str) -> None:
    """Every instance applies them alike: no clock, no randomness, no I/O."""
    for imported in imports_of(name):
        root = imported.split(".")[0]
        assert root == "lobby" or root in RULES_STDLIB, f"{name} imports {imported}"


def test_only_the_server_reaches_the_uvicorn_adapter() -> None:
    users = {n for n in MODULES if "lobby.web.uvicorn_adapter" in imports_of(n)}
    assert users == {"lobby.server"}
    private = {n for n in MODULES if any(i.startswith("uvicorn.") for i in imports_of(n))}
    assert private == {"lobby.web.uvicorn_adapter"}


def test_the_top_level_stays_small() -> None:
    top = [p for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES + 2, sorted(p.name for p in top)  # +__init__, __main__
