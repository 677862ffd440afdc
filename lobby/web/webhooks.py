"""The media servers' webhooks: who joined or left a call, told by the server itself.

`POST /webhooks/livekit` (also `/livekit/webhook`, where OpenVidu 3's local
deployment sends them) takes LiveKit's, verified the official way
(`livekit.api.WebhookReceiver`): the JWT in `Authorization` must be signed with
the API secret, issued by the API key, unexpired, and its `sha256` claim must be
the body's digest. `POST /webhooks/openvidu` takes OpenVidu 2's, which carry
only the headers the operator configured: `Authorization: Bearer
<LOBBY_OPENVIDU_WEBHOOK_SECRET>`, compared in constant time.

Neither is cookie-authenticated, and neither does anything but update call
states (`lobby.flows.callstates`). A body is read up to `MAX_BODY` bytes (413 past
it); unsigned or mis-signed: 401; unreadable: 400; each of these changes
nothing and is logged at WARNING, without the token or the secret. News about
rooms or participants the lobby does not know is answered 200 and ignored (the
media server would only retry otherwise). An endpoint whose back end is not in
use answers 404.
"""

from __future__ import annotations

import hmac
import json
import logging

import jwt
from google.protobuf import json_format
from livekit.api import TokenVerifier, WebhookReceiver
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from lobby.web.state import state_of

log = logging.getLogger("lobby.web.webhooks")

MAX_BODY = 64 * 1024  # LiveKit's events are a few KB; OpenVidu's smaller
LIVEKIT_JOINED = frozenset({"participant_joined"})
LIVEKIT_LEFT = frozenset({"participant_left", "participant_connection_aborted"})


async def livekit_webhook(request: Request) -> Response:
    state = state_of(request)
    settings = state.settings
    if settings.media != "livekit":
        return _refused(request, 404, "LiveKit webhooks are off: this lobby does not use LiveKit")
    body = await _body(request)
    if isinstance(body, Response):
        return body
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return _refused(request, 400, "the body is not UTF-8")
    receiver = WebhookReceiver(TokenVerifier(settings.livekit_api_key, settings.livekit_api_secret))
    try:
        event = receiver.receive(text, request.headers.get("authorization", ""))
    except jwt.PyJWTError as exc:
        return _refused(request, 401, f"its token is not valid ({type(exc).__name__})")
    except json_format.ParseError:
        return _refused(request, 400, "the body is not a LiveKit WebhookEvent")
    except Exception:  # the SDK raises a bare Exception for a missing or wrong sha256
        return _refused(request, 401, "its token does not sign this body")
    participant, room = event.participant, event.room.name
    # The SDK's parser is lenient (`[]` or a string for an object reads as empty): an event
    # with no name, or about a participant with no identity, is no event LiveKit sends.
    about_someone = event.event in LIVEKIT_JOINED | LIVEKIT_LEFT
    if not event.event or (about_someone and not participant.identity):
        return _refused(request, 400, "the body is not a LiveKit WebhookEvent")
    if event.event in LIVEKIT_JOINED:
        state.call_states.joined(room, participant.identity, participant.sid)
    elif event.event in LIVEKIT_LEFT:
        state.call_states.left(room, participant.identity, participant.sid)
    return Response(status_code=200)


async def openvidu_webhook(request: Request) -> Response:
    state = state_of(request)
    secret = state.settings.openvidu_webhook_secret
    if state.settings.media != "openvidu" or secret is None:
        return _refused(request, 404, "OpenVidu webhooks are off (LOBBY_OPENVIDU_WEBHOOK_SECRET)")
    body = await _body(request)
    if isinstance(body, Response):
        return body
    sent = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(sent, f"Bearer {secret}".encode()):
        return _refused(request, 401, "its Authorization is not the configured secret")
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        return _refused(request, 400, "the body is not JSON")
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return _refused(request, 400, "the body is not an OpenVidu event")
    kind = event["event"]
    if kind not in ("participantJoined", "participantLeft"):
        return Response(status_code=200)  # other events tell us nothing about call states
    room, connection = event.get("sessionId"), event.get("connectionId")
    if not isinstance(room, str) or not isinstance(connection, str):
        return _refused(request, 400, f"{kind} without a sessionId and a connectionId")
    if kind == "participantJoined":
        state.call_states.joined(room, connection)
    else:
        state.call_states.left(room, connection)
    # OpenVidu wants exactly 200 (it logs anything else as a failure).
    return Response(status_code=200)


async def _body(request: Request) -> bytes | Response:
    """The body, read as it comes and never past `MAX_BODY`; or the refusal."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return _refused(request, 413, f"its body is {declared} bytes, over {MAX_BODY}")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _refused(request, 413, f"its body is over {MAX_BODY} bytes")
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is listening for the answer
    return bytes(body)


def _refused(request: Request, status: int, why: str) -> Response:
    client = request.client.host if request.client else "?"
    log.warning("refused a webhook at %s from %s: %s", request.url.path, client, why)
    return PlainTextResponse(f"Refused: {why}.", status_code=status)
