"""Docs that must stay true: the README's settings table and the protocol contract."""

from __future__ import annotations

import re
from itertools import zip_longest
from pathlib import Path

import pytest

from lobby import openfiles
from lobby.config import Settings, markdown_table
from lobby.rules import protocol, signalling
from lobby.web import webhooks

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
    assert PROTOCOL.count(f"over **{webhooks.MAX_BODY} bytes**") == 2


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


def test_the_readme_module_table_lists_every_module_and_nothing_else() -> None:
    table = section(README, "## Architecture")
    listed: set[str] = set()
    for cell in re.findall(r"^\| ([^|]+) \|", table, re.MULTILINE):
        listed.update(re.findall(r"`(lobby/[\w/]+(?:\.py|/))`", cell))
    modules = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "lobby").rglob("*.py")
        if p.name != "__init__.py"
    }
    packages = {
        p.parent.relative_to(ROOT).as_posix() + "/"
        for p in (ROOT / "lobby").rglob("__init__.py")
        if p.parent != ROOT / "lobby"
    }
    assert listed == modules | packages


def test_every_deployment_file_is_linked_and_the_open_files_headroom_is_the_codes() -> None:
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    for path in sorted((ROOT / "docs" / "deploy").iterdir()):
        assert f"](deploy/{path.name})" in deployment, f"docs/deployment.md: link {path.name}"
    assert f"`LOBBY_MAX_SOCKETS` plus {openfiles.HEADROOM}" in deployment
    assert f"if this plus {openfiles.HEADROOM} still" in section(README, "## Configuration")
