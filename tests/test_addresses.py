"""Rooms' addresses on the server side: `/room/NAME`, the login's `next`, and no open redirect."""

from __future__ import annotations

import httpx
import pytest

from lobby.web.addresses import local_target
from tests.conftest import PASSWORD, Lobby, csrf_from


async def sign_in(http: httpx.AsyncClient, login_page: str, **fields: str) -> httpx.Response:
    page = await http.get(login_page)
    data = {"user": "alice", "pass": PASSWORD, "csrf_token": csrf_from(page.text), **fields}
    return await http.post("/login", data=data)


async def test_a_room_address_goes_through_the_login_and_back(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        first = await http.get("/room/Standup")
        assert first.status_code == 303
        assert first.headers["location"] == "/?next=%2Froom%2FStandup"
        form = await http.get(first.headers["location"])
        assert 'name="next" value="/room/Standup"' in form.text
        reply = await sign_in(http, first.headers["location"], next="/room/Standup")
        assert reply.status_code == 303
        assert reply.headers["location"] == "/room/Standup"
        page = await http.get("/room/Standup")
        assert page.status_code == 200
        assert 'id="join-form"' in page.text
        assert page.headers["cache-control"] == "no-store"
        # Logged in already, the login page follows `next` at once.
        again = await http.get("/?next=%2Froom%2FStandup")
        assert again.headers["location"] == "/room/Standup"


async def test_a_bad_room_name_still_gets_the_lobby_page_which_explains(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        first = await http.get("/room/not%20a%20room")
        assert first.headers["location"] == "/"  # nothing worth coming back to
        await sign_in(http, "/")
        page = await http.get("/room/not%20a%20room")
    assert page.status_code == 200
    assert 'id="join-form"' in page.text


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/room/x",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/room/x/../../evil",
        "/room/x?y=1",
        "/room/" + "x" * 65,
        "/metrics",
        "",
        "javascript:alert(1)",
        "/lobby\r\nSet-Cookie: a=b",
    ],
)
async def test_next_never_leads_off_our_pages(lobby: Lobby, target: str) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        reply = await sign_in(http, "/", next=target)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/lobby"
    assert local_target(target) == "/lobby"


def test_local_targets_are_the_lobby_and_room_addresses() -> None:
    assert local_target("/room/Daily_standup-2") == "/room/Daily_standup-2"
    assert local_target("/lobby") == "/lobby"
    assert local_target(None) == "/lobby"


async def test_a_missing_field_is_named_under_that_field(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        reply = await sign_in(http, "/", user="alice", **{"pass": ""})
    assert reply.status_code == 401
    assert '<p id="login-pass-error" class="field-error">Enter your password.</p>' in reply.text
    assert 'aria-describedby="login-pass-error"' in reply.text
    assert "login-user-error" not in reply.text


async def test_logging_out_says_so(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        await sign_in(http, "/")
        page = await http.get("/lobby")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        reply = await http.post("/logout", data={"csrf_token": token})
        assert reply.headers["location"] == "/?logged_out=1"
        form = await http.get(reply.headers["location"])
    assert "You are logged out." in form.text
