"""Page handlers: login, logout and the lobby page (the health checks: `lobby.web.health`)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from lobby.cluster.limits import LOGINS_UNAVAILABLE, LimitsUnavailable
from lobby.rules.protocol import CloseCode
from lobby.store.db import UNAVAILABLE, Unavailable
from lobby.web import addresses, assets
from lobby.web.auth import Busy
from lobby.web.state import AppState, state_of

templates = Jinja2Templates(directory=assets.TEMPLATES)
log = logging.getLogger("lobby.web.pages")


# Where a logout lands: the login form, saying so.
LOGGED_OUT = "/?logged_out=1"


async def login_page(request: Request) -> Response:
    state = state_of(request)
    target = _next(request.query_params.get("next"))
    if state.auth.current(request) is not None:
        return RedirectResponse(target, status_code=303)
    notice = "You are logged out." if "logged_out" in request.query_params else None
    return _login_form(request, error=None, username="", status=200, notice=notice)


def _next(value: object) -> str:
    return addresses.local_target(value)


def _login_form(
    request: Request,
    *,
    error: str | None,
    username: str,
    status: int,
    fields: dict[str, str] | None = None,
    notice: str | None = None,
    target: str | None = None,
) -> Response:
    """The form; `fields` holds errors that concern one field (by its name), shown under it."""
    state = state_of(request)
    token = state.auth.login_csrf(request)
    context = {
        "csrf_token": token,
        "error": error,
        "fields": fields or {},
        "notice": notice,
        "next": target or _next(request.query_params.get("next")),
        "username": username,
        "demo": state.settings.demo,
    }
    response = templates.TemplateResponse(request, "login.html", context, status_code=status)
    state.auth.set_login_csrf_cookie(response, request, token)
    return response


async def _form(request: Request) -> FormData | None:
    """The posted form, or None if the client hung up before sending all of it."""
    try:
        return await request.form()
    except ClientDisconnect:  # nobody to answer; not worth a traceback in the log
        return None


async def login(request: Request) -> Response:
    state = state_of(request)
    form = await _form(request)
    if form is None:
        return Response(status_code=400)
    name, password = form.get("user"), form.get("pass")
    username = name.strip()[:64] if isinstance(name, str) else ""
    target = _next(form.get("next"))
    if not state.auth.check_login_csrf(request, form.get("csrf_token")):
        return _login_form(
            request,
            error="Your login form expired; please try again.",
            username=username,
            status=403,
            target=target,
        )
    missing = {}
    if not username:
        missing["user"] = "Enter your user name."
    if not isinstance(password, str) or not password:
        missing["pass"] = "Enter your password."
    if missing or not isinstance(password, str):
        return _login_form(
            request, error=None, username=username, status=401, fields=missing, target=target
        )
    address = request.client.host if request.client else ""
    throttle = state.login_throttle
    # Before the password is checked: a locked key is no password oracle. The
    # answer names no account state, so it is the same for unknown names.
    try:
        verdict = await throttle.attempt(username, address)
    except LimitsUnavailable as exc:  # shared with other instances, and unreachable
        log.warning("login throttle unreachable: %s", exc)
        state.metrics.login("unavailable")
        return _unavailable(request, username=username, error=LOGINS_UNAVAILABLE, target=target)
    if verdict.refused:
        state.metrics.login("throttled")
        return _too_many_failures(request, username=username, wait=verdict.wait, target=target)
    if verdict.slowdown > 0:
        # Failures for this name from other addresses: slow the attempt down (the
        # owner's too, a few seconds at most) instead of refusing the owner.
        await asyncio.sleep(verdict.slowdown)
    try:
        # Unknown names cost one argon2 verify too (`UserStore.verify`): same answer, same time.
        opened = await state.auth.login(username, password)
    except Busy:
        await _forget(throttle.withdrawn(username, address))  # no password was checked
        state.metrics.login("busy")
        return _busy(request, username=username, target=target)
    except Unavailable:
        await _forget(throttle.withdrawn(username, address))  # nor here
        state.metrics.login("unavailable")
        return _unavailable(request, username=username, target=target)
    if opened is None:
        # Not the name: people type their password into the name field by mistake.
        log.info("login failed from %s", address)
        state.metrics.login("wrong_password")
        return _login_form(
            request,
            error="Wrong user name or password.",
            username=username,
            status=401,
            target=target,
        )
    await _forget(throttle.succeeded(username, address))
    state.metrics.login("ok")
    # A login retires the session the browser presented, whoever's it was: it cannot
    # outlive the login that replaced it (a planted or shared session, a former user).
    previous = state.auth.current(request)
    if previous is not None:
        _end_session(request, previous[0], "logged in again")
    session_id, user = opened
    log.info("login from %s", address, extra={"user": user.name})
    response = RedirectResponse(target, status_code=303)
    state.auth.set_session_cookie(response, request, session_id)
    return response


async def _forget(change: Awaitable[None]) -> None:
    """Take back or forgive counts; if the shared throttle is unreachable, the login goes on
    and the counts leak away with time instead."""
    try:
        await change
    except LimitsUnavailable as exc:
        log.warning("login throttle unreachable: %s", exc)


def _end_session(request: Request, session_id: str, reason: str) -> None:
    state = state_of(request)
    state.auth.logout(session_id)
    state.handler.end_session(session_id, CloseCode.SESSION_ENDED, reason)


def _too_many_failures(
    request: Request, *, username: str, wait: float, target: str | None = None
) -> Response:
    seconds = math.ceil(wait)
    unit = "second" if seconds == 1 else "seconds"
    response = _login_form(
        request,
        error=f"Too many failed logins; try again in {seconds} {unit}.",
        username=username,
        status=429,
        target=target,
    )
    response.headers["Retry-After"] = str(seconds)
    return response


def _busy(request: Request, *, username: str, target: str) -> Response:
    response = _login_form(
        request,
        error="The server is busy; please try again in a moment.",
        username=username,
        status=503,
        target=target,
    )
    response.headers["Retry-After"] = "1"
    return response


def _unavailable(
    request: Request, *, username: str, error: str = UNAVAILABLE, target: str | None = None
) -> Response:
    response = _login_form(request, error=error, username=username, status=503, target=target)
    response.headers["Retry-After"] = "5"
    return response


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """Any page that needed the database while it was down: the login form, 503, a sentence.

    Sockets already open stay open: nothing on them needs the database.
    """
    return _unavailable(request, username="")


async def logout(request: Request) -> Response:
    state = state_of(request)
    current = state.auth.current(request)
    response = RedirectResponse(LOGGED_OUT, status_code=303)
    if current is None:
        state.auth.clear_session_cookie(response, request)
        return response
    session_id, _ = current
    form = await _form(request)
    if form is None:
        return Response(status_code=400)
    if not state.auth.check_session_csrf(session_id, form.get("csrf_token")):
        return Response("Your form expired; reload the page and try again.", status_code=403)
    _end_session(request, session_id, "logged out")
    state.auth.clear_session_cookie(response, request)
    return response


async def lobby_page(request: Request) -> Response:
    state = state_of(request)
    current = state.auth.current(request)
    if current is None:
        return RedirectResponse("/", status_code=303)
    session_id, user = current
    media = _call_view(state)
    library = assets.FOR_MEDIA.get(media)
    context = {
        "user": user,
        "csrf_token": state.auth.session_csrf(session_id),
        "media": media,
        "library_url": library.url if library else None,
    }
    response = templates.TemplateResponse(request, "lobby.html", context)
    # The page holds the user's name and CSRF token: no shared cache nor the browser's
    # history may keep a copy for the next person at this computer.
    response.headers["Cache-Control"] = "no-store"
    return response


async def room_page(request: Request) -> Response:
    """`/room/NAME`: the lobby page, which enters room NAME (lobby.js); logged out, the
    login form first, which comes back here (`lobby.web.addresses`)."""
    state = state_of(request)
    if state.auth.current(request) is None:
        target = addresses.room_address(request.path_params["name"])
        # Only an address a login would send the browser back to is worth carrying.
        query = f"?next={quote(target, safe='')}" if _next(target) == target else ""
        return RedirectResponse("/" + query, status_code=303)
    return await lobby_page(request)


def _call_view(state: AppState) -> str:
    """Which call view the page runs, and so which library it loads: p2p, openvidu or livekit."""
    if state.media.peer_to_peer:
        return "p2p"
    return "livekit" if state.settings.media == "livekit" else "openvidu"
