"""What the running app holds, typed, instead of globals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from starlette.requests import HTTPConnection

from lobby.cluster.limits import Logins, Sockets
from lobby.config import Settings
from lobby.flows.callstates import CallStates
from lobby.handler import RequestHandler
from lobby.hub import Hub
from lobby.media.seam import MediaBackend
from lobby.store.db import Database
from lobby.web.auth import Auth
from lobby.web.origins import Origins

if TYPE_CHECKING:
    from lobby.web.health import Readiness
    from lobby.web.metrics import Metrics


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    db: Database
    auth: Auth
    media: MediaBackend
    hub: Hub
    handler: RequestHandler
    # The login throttle: this process's (`LocalLogins`) or the cluster's, in Redis.
    login_throttle: Logins
    origins: Origins
    call_states: CallStates
    # `/readyz`'s checks, and the draining flag (`readiness.draining`) a drain sets.
    readiness: Readiness
    # What `/metrics` reports; the socket, login and media calls count into it.
    metrics: Metrics
    # Open sockets per user (`LOBBY_MAX_SOCKETS_PER_USER`): this process's or the cluster's.
    sockets: Sockets


def state_of(conn: HTTPConnection) -> AppState:
    return cast(AppState, conn.app.state.lobby)
