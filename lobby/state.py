"""What the running app holds, typed, instead of globals."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import cast

from starlette.requests import HTTPConnection

from lobby.auth import Auth
from lobby.breaker import Breaker
from lobby.config import Settings
from lobby.hub import Hub
from lobby.rooms import Rooms
from lobby.throttle import LoginThrottle


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    db: sqlite3.Connection
    auth: Auth
    media: Breaker
    hub: Hub
    rooms: Rooms
    login_throttle: LoginThrottle


def state_of(conn: HTTPConnection) -> AppState:
    return cast(AppState, conn.app.state.lobby)
