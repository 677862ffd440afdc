// Lobby page entry: wires the socket, the lobby state, the views and the call.
//
// Protocol: docs/protocol.md. Every server frame goes through one dispatch
// (`handle`); requests carry a numeric `ref` and wait in `pending` for their reply.

import { connectSocket } from "./socket.js";
import { copyLink, followAddress, followRoom, roomInAddress } from "./address.js";
import { layoutGrid } from "./grid.js";
import { checkJoin, clearFieldErrors, warnAboutCase } from "./joinform.js";
import { ChatPanel } from "./chat.js";
import { Presence } from "./presence.js";
import { Call } from "./call.js";
import { canPublish } from "./callview.js";
import { LiveKitCall } from "./livekit.js";
import { PeerCall } from "./p2p.js";
import { enableModeration } from "./moderation.js";
import { loadChoices, openPrejoin } from "./prejoin.js";
import { SpeakingWatch } from "./speaking.js";
import { markSpeaking, renderTiles } from "./tiles.js";
import * as view from "./view.js";

const { ui } = view;
const RESUME_KEY = "lobby.resume";
// Read before the first render puts `/lobby` in the address bar (address.js).
let roomToEnter = roomInAddress();

const page = document.getElementById("main").dataset;
const me = { name: page.user, role: page.role };
/** From `welcome`: who carries the calls (`{kind, ice_servers}`) and the room size limit. */
let media = { kind: page.media };
let roomSize = null;
// Replies to signals and call reports carry these refs: they are errors only, and never
// wait in `pending`.
const SIGNAL_REF = "signal";
const REPORT_REF = "call_state";
const MEDIA_REF = "media";
const CHAT_REF = "chat";
const presence = new Presence();
/** The participant this page holds: {room, participant|null}, or null in the lobby. */
let current = null;
/** @type {Map<number, {type: string, abandoned?: boolean, token?: boolean}>} */
const pending = new Map();
let nextRef = 1;
/** The call state this page last told the server about its own call (docs/protocol.md). */
let reported = null;
/** What this page sends ({camera, microphone, screen}) and whether the server has heard it. */
let mediaReport = { sent: null, wanted: null };

// --- resume key (sessionStorage: per tab, survives reloads) -------------------

function loadResume() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(RESUME_KEY));
    return saved && typeof saved.resume_key === "string" ? saved : null;
  } catch {
    return null;
  }
}

function saveResume(resumeKey, room) {
  try {
    sessionStorage.setItem(RESUME_KEY, JSON.stringify({ resume_key: resumeKey, room }));
  } catch {
    // storage full or disabled: a reload will simply not resume
  }
}

function clearResume() {
  try {
    sessionStorage.removeItem(RESUME_KEY);
  } catch {
    // ignore
  }
}

// --- requests ---------------------------------------------------------------

function request(type, fields = {}, { quiet = false } = {}) {
  const ref = nextRef++;
  if (!socket.send({ type, ...fields, ref })) {
    // Clears by itself once the lobby is back (view.setLobbyLive).
    if (!quiet) view.showOutageError("Not connected to the lobby right now. Wait for “Connected” and try again.");
    return null;
  }
  pending.set(ref, { type, token: fields.token });
  return ref;
}

function sendSignal(to, data) {
  return socket.send({ type: "signal", to, data, ref: SIGNAL_REF });
}

/** Tell the server where this page's call stands: "connected" or "dropped", once each change. */
function reportCall(call) {
  if (!current?.participant || call === reported) return;
  if (socket.send({ type: "call_state", call, ref: REPORT_REF })) reported = call;
}

/** Tell the server what this call sends (docs/protocol.md, `media`), once each change. */
function reportMedia(media) {
  if (media) {
    mediaReport.wanted = { camera: media.video, microphone: media.audio, screen: Boolean(media.screen) };
  }
  const { sent, wanted } = mediaReport;
  if (!current?.participant || !wanted) return;
  if (sent && Object.keys(wanted).every((key) => sent[key] === wanted[key])) return;
  if (socket.send({ type: "media", ...wanted, ref: MEDIA_REF })) mediaReport.sent = wanted;
}

function takePending(msg) {
  if (typeof msg.ref !== "number") return undefined;
  const request = pending.get(msg.ref);
  pending.delete(msg.ref);
  return request;
}

// --- server frames ------------------------------------------------------------

function handle(msg) {
  switch (msg.type) {
    case "welcome":
      onWelcome(msg);
      break;
    case "joined":
      presence.add(msg.room, msg.participant);
      render();
      break;
    case "left":
      presence.remove(msg.room, msg.participant.id);
      if (msg.participant.id === current?.participant?.id) {
        endCall(LEFT_BECAUSE[msg.reason]?.(msg.room) ?? "You are no longer in this call.");
      }
      render();
      break;
    case "room_closed":
      presence.close(msg.room);
      render();
      break;
    case "room_locked":
      presence.setLocked(msg.room, msg.locked);
      render();
      break;
    case "kicked":
      // Before our `left`: say who and why; the resume key is dead, so forget it.
      if (current?.room === msg.room) endCall(kickedText(msg));
      break;
    case "call_state":
      presence.setCall(msg.room, msg.participant, msg.call);
      render();
      break;
    case "media":
      presence.setMedia(msg.room, msg.participant, msg.media);
      render();
      break;
    case "taken_over":
      endCall("This call continued in another tab or window.");
      break;
    case "signal":
      call.signal?.(msg.from, msg.data);
      break;
    case "chat":
      chat.add(msg);
      break;
    case "chat_history":
      chat.history(msg);
      break;
    case "token":
      onToken(takePending(msg), msg);
      break;
    case "resumed":
      onResumed(takePending(msg), msg);
      break;
    case "ok":
    case "pong":
      takePending(msg);
      break;
    case "error":
      if (msg.ref === CHAT_REF) chat.refused(msg);
      else if (msg.ref === SIGNAL_REF || msg.ref === REPORT_REF || msg.ref === MEDIA_REF) {
        console.warn(`lobby: a ${msg.ref} was refused:`, msg.code, msg.message);
      } else onError(takePending(msg), msg);
      break;
    default:
      console.warn("lobby: unknown message type", msg.type);
  }
}

/** Why our own participant left, when a moderator did it (docs/protocol.md, `left`). */
const LEFT_BECAUSE = {
  kicked: (room) => `A moderator removed you from room ${room}.`,
  closed: (room) => `A moderator closed room ${room}.`,
};

function kickedText(msg) {
  const why = msg.reason ? ` Reason: “${msg.reason}”.` : "";
  return `${msg.by} removed you from room ${msg.room}.${why} You cannot join it again for a while.`;
}

function onWelcome(msg) {
  view.setLobbyLive(true); // the room list below is current again
  if (msg.user) Object.assign(me, msg.user);
  if (msg.media) media = msg.media;
  roomSize = msg.room_size ?? null;
  presence.reset(msg.rooms);
  render();
  const saved = loadResume();
  if (!saved) {
    enterAddressedRoom();
    return;
  }
  roomToEnter = null; // a reload in a call: resuming it is what the address asked for
  // After a reload there is no call yet: ask for a token. After a socket blip
  // the call is still up: only take the participant back.
  const wantToken = !call.live;
  if (wantToken) {
    current = { room: saved.room, participant: current?.participant ?? null };
    showCall();
    call.wait("Rejoining the call…");
  }
  request("resume", { key: saved.resume_key, token: wantToken });
}

/** Opened at `/room/NAME`: join NAME as a click on Join would (the pre-join check first). */
function enterAddressedRoom() {
  const room = roomToEnter;
  roomToEnter = null;
  if (room === null || current) return;
  ui.roomInput.value = room;
  join(room);
}

function onToken(req, msg) {
  if (!req || req.abandoned) return; // the user left before the join finished
  view.setJoinBusy(false);
  view.clearError();
  saveResume(msg.resume_key, msg.room);
  current = { room: msg.room, participant: msg.participant };
  chat.enter(msg.room, msg.participant.id);
  enterCall(msg.token);
}

function onResumed(req, msg) {
  if (!req || req.abandoned) return;
  current = { room: msg.room, participant: msg.participant };
  chat.enter(msg.room, msg.participant.id);
  const saved = loadResume();
  if (saved) saveResume(saved.resume_key, msg.room);
  if (msg.token) {
    view.clearError();
    enterCall(msg.token);
  } else if (!call.live) {
    showCall();
    call.fail("The call did not get a new connection. Try again.");
  } else {
    render();
    call.reconnected?.(); // signals meant for us while we were away are lost
    reportMedia(null); // a change made while the socket was away
  }
}

function onError(req, msg) {
  if (req?.type === "join") view.setJoinBusy(false);
  if (req?.abandoned) return;
  if (msg.code === "resume_failed") {
    endCall(msg.message);
    return;
  }
  if (req?.type === "resume" && req.token && current) {
    // The participant may still be ours (media_unavailable resumes anyway): stay in
    // the call view and offer Retry.
    showCall();
    call.fail(msg.message);
    return;
  }
  if (msg.code === "cancelled") return; // we asked for it with "leave"
  view.showError(msg.message);
}

// --- actions ----------------------------------------------------------------

function myRole() {
  return current?.participant?.role ?? me.role;
}

function showCall() {
  view.showCall(current.room, { subscriber: myRole() === "SUBSCRIBER" });
  render();
}

function enterCall(token) {
  reported = null; // a new call: its states are reported afresh
  mediaReport = { sent: null, wanted: null };
  showCall();
  call.start({
    token,
    nickname: current.participant?.nickname ?? me.name,
    publish: canPublish(myRole()),
    participantId: current.participant?.id ?? null,
    role: myRole(),
    iceServers: media.ice_servers ?? [],
    participants: roomParticipants(),
    devices: loadChoices(), // the pre-join check's, remembered (a reload rejoins with it)
  });
}

/** Leave the call view locally; `message` explains why (none when the user chose to). */
function endCall(message) {
  for (const req of pending.values()) {
    if (req.type === "join" || req.type === "resume") req.abandoned = true;
  }
  view.setJoinBusy(false);
  clearResume();
  current = null;
  reported = null;
  mediaReport = { sent: null, wanted: null };
  call.stop();
  chat.leave();
  view.showLobby();
  render();
  if (message) view.showError(message);
}

async function join(room) {
  view.showNotice(null);
  if (!checkJoin(room, view.readNickname())) return;
  const nickname = view.readNickname();
  view.clearError();
  // Publishers check their camera and microphone first (prejoin.js); viewers send nothing.
  if (canPublish(me.role)) {
    const hideLobby = () => {
      ui.lobby.hidden = true;
    };
    const showLobby = () => {
      ui.lobby.hidden = false;
      ui.lobbyTitle.focus();
    };
    const choice = await openPrejoin(room, { hide: hideLobby, show: showLobby });
    if (!choice) return;
    ui.lobby.hidden = false; // "Joining…" there until the token; a refusal shows there too
  }
  if (request("join", { room, nickname }) !== null) view.setJoinBusy(true);
}

function leave() {
  // Offline, the server drops the participant after its reconnect grace period.
  const room = current?.room;
  if (current) request("leave", {}, { quiet: true });
  endCall();
  if (room) view.showNotice(`You left the call in ${room}.`);
}

function retry() {
  const saved = loadResume();
  if (!saved) {
    endCall("This call has ended.");
    return;
  }
  if (request("resume", { key: saved.resume_key, token: true }) !== null) {
    call.wait("Rejoining the call…");
  }
}

function roomParticipants() {
  return (current && presence.get(current.room)?.participants) || [];
}

function render() {
  const selfId = current?.participant?.id;
  view.renderRooms(presence.list(), join, selfId, roomSize);
  const participants = roomParticipants();
  call.roster?.(participants);
  const room = current ? presence.get(current.room) : null;
  view.renderCallParticipants(participants, selfId, current?.room ?? null, room?.locked === true);
  const summary = renderTiles(ui.videos, {
    participants,
    selfId,
    feeds: current ? call.feeds : [],
    present: call.present,
    connected: call.state === "connected",
    links: call.links,
    speaking: speakingWatch.speaking,
  });
  view.setCallSummary(summary);
  speakingWatch.watch(current ? call.feeds : []);
  layoutGrid(ui.videos, participants);
  followRoom(current?.room ?? null);
  warnAboutCase(view.readRoomName(), liveRoomNames());
}

function liveRoomNames() {
  return presence.list().map((room) => room.name);
}

// --- wiring -----------------------------------------------------------------

const callbacks = {
  state: (state, message) => {
    view.setCallState(state, message);
    render();
  },
  media: (media) => {
    view.setMediaControls(media, { canShare: call.canShareScreen });
    reportMedia(media);
  },
  feeds: () => render(),
  publishProblem: (message) => view.setPublishProblem(message),
  notice: (message) => view.showError(message),
  playbackBlocked: (blocked) => {
    ui.callPlay.hidden = !blocked;
  },
  report: reportCall,
  devices: (message) => view.setDeviceProblem(message),
};
const speakingWatch = new SpeakingWatch((speaking) => markSpeaking(ui.videos, speaking));
// Which media side runs the call: the page was served for one back end.
const call =
  page.media === "p2p"
    ? new PeerCall(callbacks, sendSignal)
    : page.media === "livekit"
      ? new LiveKitCall(callbacks, () => media.url)
      : new Call(callbacks);

const chat = new ChatPanel({
  host: document.querySelector("#call .call-side") ?? ui.call,
  controls: document.querySelector("#call .call-controls") ?? ui.call,
  before: ui.leave,
  send: (text) => socket.send({ type: "chat", text, ref: CHAT_REF }),
});

const socket = connectSocket({
  onMessage: handle,
  onStatus: view.setConnection,
  onClose: () => {
    // Replies to requests in flight will never come on a new socket.
    pending.clear();
    view.setJoinBusy(false);
    view.setLobbyLive(false);
  },
  onStopped: () => view.showError("The server closed the connection. Reload the page to reconnect."),
});

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  join(view.readRoomName());
});
ui.roomInput.addEventListener("input", () => {
  clearFieldErrors();
  warnAboutCase(view.readRoomName(), liveRoomNames());
});
followAddress({
  room: () => current?.room ?? null,
  leave,
  join: (room) => {
    ui.roomInput.value = room;
    join(room);
  },
});
ui.copyLink.addEventListener("click", () => {
  if (current) copyLink(current.room, { status: ui.copyStatus, fallback: ui.linkBox });
});
ui.togglePeople.addEventListener("click", () => {
  view.togglePeople();
  layoutGrid(ui.videos, roomParticipants());
});
ui.leave.addEventListener("click", leave);
ui.callRetry.addEventListener("click", retry);
ui.deviceRetry.addEventListener("click", () => call.retryDevices());
ui.callPlay.addEventListener("click", () => call.resumePlayback());
ui.toggleCamera.addEventListener("click", () => call.toggleVideo());
ui.toggleMic.addEventListener("click", () => call.toggleAudio());
ui.toggleScreen.addEventListener("click", () => call.toggleScreen());
ui.logoutForm.addEventListener("submit", () => {
  socket.loggingOut();
  clearResume();
  call.stop();
});

// A moderator's controls (static/moderation.js); the server checks the role itself.
if (me.role === "MODERATOR") {
  enableModeration({
    me: me.name,
    kick: (room, participant, reason) => request("kick", { room, participant, reason }),
    close: (room) => request("close_room", { room }),
    lock: (room, locked) => request("lock_room", { room, locked }),
  });
}

view.setMediaControls(null);
render();

// Read-only view of the state for browser tests and debugging.
Object.defineProperty(window, "lobbyDebug", {
  value: Object.freeze({
    get rooms() {
      return presence.snapshot();
    },
    get current() {
      return current ? structuredClone(current) : null;
    },
    get callState() {
      return call.state;
    },
    get media() {
      return structuredClone(media);
    },
    get connection() {
      return socket.status;
    },
    get pending() {
      return pending.size;
    },
    get chat() {
      return { open: chat.isOpen, unread: chat.unread, messages: chat.messages };
    },
  }),
});
