"""Running the app under uvicorn with the socket settings the protocol promises."""

from __future__ import annotations

import logging

import uvicorn
from starlette.types import ASGIApp

from lobby.app import create_app
from lobby.config import Settings
from lobby.wire import DirectProtocol, head_timeout_protocol

log = logging.getLogger("lobby")

# Seconds an idle kept-alive HTTP connection stays open between requests: enough
# for a page and then its scripts and styles; a WebSocket is exempt, it lives by pings.
KEEP_ALIVE_TIMEOUT = 5

DEMO_BANNER = """
************************************************************************
*  DEMO MODE: demo users publisher1, publisher2 and subscriber exist,  *
*  all with the password "pass", and the secret key is throw-away.     *
*  Never expose a demo server to anyone else.                          *
************************************************************************"""


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # httptools with a deadline on each request head (slowloris).
        http=head_timeout_protocol(settings.header_timeout),
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        # uvicorn's sans-I/O websockets protocol (server pings, max_size enforced with
        # 1009) plus direct frame writes for the hub.
        ws=DirectProtocol,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        # Compression costs tens of KiB per socket for small JSON frames.
        ws_per_message_deflate=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


def serve(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.demo:
        log.warning(DEMO_BANNER)
    calls = (
        f"OpenVidu at {settings.openvidu_url}"
        if settings.media == "openvidu"
        else f"peer to peer, rooms of up to {settings.room_size or 'any number of'} people"
    )
    log.info("Lobby on http://%s:%d, calls %s", settings.host, settings.port, calls)
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()
