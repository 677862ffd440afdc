// DOM rendering. User text (room names, nicknames, user names) only ever goes
// through textContent or setAttribute, never through HTML parsing.

import { kickControl, moderating, roomTools, updateTools } from "./moderation.js";

const $ = (id) => document.getElementById(id);

const ui = {
  badge: $("connection-state"),
  error: $("error"),
  errorDismiss: $("error-dismiss"),
  lobby: $("lobby-view"),
  lobbyTitle: $("lobby-title"),
  joinForm: $("join-form"),
  roomInput: $("room-input"),
  nicknameInput: $("nickname-input"),
  joinSubmit: $("join-submit"),
  rooms: $("rooms"),
  roomsEmpty: $("rooms-empty"),
  roomCount: $("room-count"),
  call: $("call"),
  callTitle: $("call-title"),
  callRoom: $("call-room"),
  callStatus: $("call-status"),
  subscriberNote: $("subscriber-note"),
  publishNote: $("publish-note"),
  callProblem: $("call-problem"),
  callProblemText: $("call-problem-text"),
  callRetry: $("call-retry"),
  deviceProblem: $("device-problem"),
  deviceProblemText: $("device-problem-text"),
  deviceRetry: $("device-retry"),
  banner: $("connection-banner"),
  bannerText: $("connection-banner-text"),
  roomsStale: $("rooms-stale"),
  callPlay: $("call-play"),
  videos: $("videos"),
  callParticipants: $("call-participants"),
  callCount: $("call-count"),
  toggleCamera: $("toggle-camera"),
  toggleMic: $("toggle-mic"),
  toggleScreen: $("toggle-screen"),
  leave: $("leave"),
  togglePeople: $("toggle-people"),
  callSide: $("call-side"),
  notice: $("notice"),
  copyLink: $("copy-link"),
  copyStatus: $("copy-status"),
  linkBox: $("link-box"),
  logoutForm: $("logout-form"),
};
export { ui };

/** Create an element; `text` is set as textContent. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function people(n) {
  return n === 1 ? "1 person" : `${n} people`;
}

// --- connection badge -------------------------------------------------------

const BADGE_TEXT = { connected: "Connected", reconnecting: "Reconnecting…", offline: "Offline" };

export function setConnection(status) {
  ui.badge.dataset.state = status;
  ui.badge.textContent = BADGE_TEXT[status] ?? status;
  ui.badge.title = ui.badge.textContent; // phones show only the dot
  connection = status;
  showBanner();
}

// --- the lobby socket down: banner, Join paused, room list stale -------------
//
// From the socket's close until the next `welcome` the page cannot join and its
// room list may miss changes: the banner says so, every Join is disabled (no
// "not connected" errors for clicks the page should not have allowed) and the
// list is marked stale. The next `welcome` clears it all, and any error that
// only came from the outage.

let connection = "reconnecting";
let lobbyLive = false; // a `welcome` came on the current socket
let wasLive = false; // the page had the lobby once: from then on an outage is news
let outageError = null; // the error text shown only because the socket was down

const BANNER_TEXT = {
  reconnecting: "Lost the connection to the lobby. Reconnecting… Joining is paused and the room list may be out of date.",
  offline: "You are offline. The lobby reconnects when the network is back; joining is paused and the room list may be out of date.",
};

/** `live`: a `welcome` arrived (true) or the socket closed (false). */
export function setLobbyLive(live) {
  lobbyLive = live;
  if (live) wasLive = true;
  const stale = wasLive && !live;
  ui.rooms.setAttribute("aria-busy", String(stale));
  ui.rooms.toggleAttribute("data-stale", stale);
  ui.roomsStale.hidden = !stale;
  setJoinBusy(joinBusy); // every Join follows
  if (live && outageError !== null && ui.error.textContent === outageError) clearError();
  if (live) outageError = null;
  showBanner();
}

function showBanner() {
  const down = wasLive && !lobbyLive;
  ui.banner.hidden = !down;
  const text = down ? BANNER_TEXT[connection] ?? BANNER_TEXT.reconnecting : "";
  if (ui.bannerText.textContent !== text) ui.bannerText.textContent = text;
  document.body.toggleAttribute("data-lobby-down", down);
}

/** An error that only the outage caused: it goes when the lobby is back. */
export function showOutageError(message) {
  showError(message);
  outageError = ui.error.textContent;
}

// --- error area -------------------------------------------------------------

export function showError(message) {
  ui.error.textContent = message || "Something went wrong.";
  ui.errorDismiss.hidden = false;
}

export function clearError() {
  ui.error.textContent = "";
  ui.errorDismiss.hidden = true;
}

ui.errorDismiss.addEventListener("click", clearError);

/** What the user just did, said back ("You left the call."); null clears it. */
export function showNotice(message) {
  ui.notice.textContent = message ?? "";
}

// --- lobby: join form and room cards -----------------------------------------

let joinBusy = false;

export function setJoinBusy(busy) {
  joinBusy = busy;
  ui.lobby.setAttribute("aria-busy", String(busy));
  ui.joinSubmit.disabled = busy || !lobbyLive;
  ui.joinSubmit.textContent = busy ? "Joining…" : "Join or create room";
  for (const card of cards.values()) setJoinable(card);
}

export function readNickname() {
  return ui.nicknameInput.value.trim();
}

export function readRoomName() {
  return ui.roomInput.value.trim();
}

export function focusNickname() {
  ui.nicknameInput.focus();
}

/** @type {Map<string, HTMLElement>} room name -> card */
const cards = new Map();

/**
 * Bring the room list in line with `rooms`, touching only what changed so that
 * focus stays on a Join button and the live region announces only news.
 */
export function renderRooms(rooms, onJoin, selfId, roomSize = null) {
  const names = new Set(rooms.map((room) => room.name));
  for (const [name, card] of cards) {
    if (!names.has(name)) {
      card.remove();
      cards.delete(name);
    }
  }
  rooms.forEach((room, index) => {
    let card = cards.get(room.name);
    if (!card) {
      card = roomCard(room.name, onJoin);
      cards.set(room.name, card);
    }
    placeAt(ui.rooms, card, index);
    card.querySelector(".room-count").textContent = people(room.participants.length);
    renderChips(card.querySelector(".chips"), room.participants, selfId, room.name);
    const full = Boolean(roomSize) && room.participants.length >= roomSize;
    const locked = room.locked === true;
    if (card.hasAttribute("data-full") !== full || card.hasAttribute("data-locked") !== locked) {
      card.toggleAttribute("data-full", full);
      card.toggleAttribute("data-locked", locked);
      card.querySelector(".room-lock").hidden = !locked;
      setJoinable(card);
    }
    const tools = card.querySelector(".mod-tools");
    if (tools) updateTools(tools, room.name, locked);
  });
  ui.roomsEmpty.hidden = rooms.length > 0;
  ui.roomCount.textContent = rooms.length ? `(${rooms.length})` : "";
}

function roomCard(name, onJoin) {
  const card = el("li", "card room-card");
  card.dataset.room = name;
  const head = el("div", "room-head");
  // Long names are cut with "…" (style.css `.cut`): whole on hover and, being the
  // element's text, whole to screen readers.
  const title = el("h3", "room-name cut", name);
  title.title = name;
  // Everyone sees that a room is locked (only moderators may join it).
  const lock = el("span", "room-lock", "Locked");
  lock.title = "Locked by a moderator: only moderators may join";
  lock.hidden = true;
  head.append(title, lock, el("span", "room-count"));
  const chips = el("ul", "chips");
  chips.setAttribute("aria-label", `People in ${name}`);
  const join = el("button", "btn btn-primary room-join", "Join");
  join.type = "button";
  join.setAttribute("aria-label", `Join ${name}`);
  join.disabled = joinBusy || !lobbyLive;
  join.addEventListener("click", () => onJoin(name));
  join.dataset.room = name;
  card.append(head, chips, join);
  if (moderating()) card.append(roomTools(name));
  return card;
}

// A full room's button says so and cannot be pressed (the server would answer room_full);
// so does a locked one's, but for moderators (the server would answer room_locked).
function setJoinable(card) {
  const join = card.querySelector(".room-join");
  const full = card.hasAttribute("data-full");
  const locked = card.hasAttribute("data-locked") && !moderating();
  join.disabled = joinBusy || !lobbyLive || full || locked;
  join.textContent = full ? "Full" : locked ? "Locked" : "Join";
  const room = join.dataset.room;
  join.setAttribute("aria-label", full ? `${room} is full` : locked ? `${room} is locked` : `Join ${room}`);
}

// Move `node` to position `index` of `parent` only if it is not there already:
// moving an element blurs whatever inside it had focus.
function placeAt(parent, node, index) {
  const current = parent.children[index];
  if (current !== node) parent.insertBefore(node, current ?? null);
}

function renderChips(list, participants, selfId, room) {
  const wanted = new Set(participants.map((p) => p.id));
  for (const chip of [...list.children]) {
    if (!wanted.has(chip.dataset.participant)) chip.remove();
  }
  participants.forEach((p, index) => {
    let chip = [...list.children].find((c) => c.dataset.participant === p.id);
    if (!chip) {
      chip = el("li", "chip");
      chip.dataset.participant = p.id;
    }
    fillChip(chip, p, p.id === selfId);
    kickControl(chip, room, p);
    placeAt(list, chip, index);
  });
}

/** What each call state (docs/protocol.md, Call states) reads as. */
export const CALL_TEXT = {
  connecting: "connecting…",
  connected: "in the call",
  dropped: "dropped out of the call",
};

// The chip's text is the nickname, with "(user)" only when the user name differs
// ("Ann (publisher1)", but "bob" alone); "you", the viewer mark and the
// call state's dot are CSS-generated from data attributes (still read out by
// screen readers); the call state is also the chip's title and class.
function fillChip(chip, participant, isSelf) {
  const { nickname, user } = participant;
  const text = nickname === user ? nickname : `${nickname} (${user})`;
  if (chip.textContent !== text) chip.textContent = text; // unchanged: keep the live region quiet
  chip.dataset.role = participant.role;
  chip.toggleAttribute("data-self", isSelf);
  const call = CALL_TEXT[participant.call] ? participant.call : "connecting";
  chip.dataset.call = call;
  chip.title = CALL_TEXT[call];
  for (const state of Object.keys(CALL_TEXT)) chip.classList.toggle(`call-${state}`, state === call);
  markMedia(chip, participant);
}

// Muted and sharing marks from the participant's reported media (docs/protocol.md,
// `media`), drawn by CSS and named for screen readers in the chip's label.
function markMedia(chip, participant) {
  const media = participant.role === "SUBSCRIBER" ? null : participant.media;
  const muted = Boolean(media) && !media.microphone;
  const sharing = Boolean(media?.screen);
  chip.toggleAttribute("data-muted", muted);
  chip.toggleAttribute("data-sharing", sharing);
  const notes = [muted && "microphone off", sharing && "sharing a screen"].filter(Boolean);
  const label = notes.length ? `${chip.textContent}, ${notes.join(", ")}` : null;
  if (label) chip.setAttribute("aria-label", label);
  else chip.removeAttribute("aria-label");
  if (notes.length) chip.title = `${CALL_TEXT[chip.dataset.call]}, ${notes.join(", ")}`;
}

// --- views ------------------------------------------------------------------

export function showLobby() {
  const wasInCall = !ui.call.hidden;
  ui.call.hidden = true;
  ui.lobby.hidden = false;
  document.title = "Lobby";
  if (wasInCall) ui.lobbyTitle.focus();
}

export function showCall(roomName, { subscriber }) {
  const wasInLobby = ui.call.hidden;
  ui.callRoom.textContent = roomName;
  ui.callRoom.title = roomName;
  ui.copyStatus.textContent = "";
  ui.linkBox.hidden = true;
  ui.subscriberNote.hidden = !subscriber;
  ui.lobby.hidden = true;
  ui.call.hidden = false;
  document.title = `${roomName} · Lobby`;
  if (wasInLobby) ui.callTitle.focus();
}

const CALL_STATUS = {
  idle: "",
  connecting: "Connecting to the call…",
  connected: "Connected to the call",
  error: "",
};

let callSummary = null; // tiles.js's sum of the links, for a connected call's status line

/** Call view state: idle | connecting | connected | error (with a message and Retry). */
export function setCallState(state, message = "") {
  ui.call.dataset.state = state;
  const connected = state === "connected" && !message && callSummary;
  ui.callStatus.textContent = state === "error" ? "" : connected ? callSummary.text : message || CALL_STATUS[state] || "";
  ui.callProblem.hidden = state !== "error";
  ui.callProblemText.textContent = state === "error" ? message || "The call could not connect." : "";
}

/**
 * A connected call's status line says only what is true: "Connecting to the
 * call…" until the others' media arrives, who cannot be reached, who is
 * reconnecting (tiles.js `renderTiles`). `#call[data-media]` carries its state.
 */
export function setCallSummary(summary) {
  callSummary = summary;
  const connected = ui.call.dataset.state === "connected";
  if (connected) ui.call.dataset.media = summary.state;
  else delete ui.call.dataset.media;
  if (connected && ui.callStatus.textContent !== summary.text) {
    ui.callStatus.textContent = summary.text;
  }
}

/** Your camera or microphone did not start in the call: why, and "Try again" (null hides it). */
export function setDeviceProblem(message) {
  ui.deviceProblemText.textContent = message ?? "";
  ui.deviceProblem.hidden = !message;
}

/** Camera and microphone buttons; `null` hides them (your camera is not on). */
export function setMediaControls(media, { canShare = false } = {}) {
  ui.toggleCamera.hidden = !media;
  ui.toggleMic.hidden = !media;
  ui.toggleScreen.hidden = !media || !canShare;
  if (!media) return;
  setControl(ui.toggleScreen, media.screen ? "Stop sharing" : "Share screen", Boolean(media.screen));
  setControl(ui.toggleCamera, media.video ? "Turn camera off" : "Turn camera on", media.video);
  setControl(ui.toggleMic, media.audio ? "Mute microphone" : "Unmute microphone", media.audio);
}

// The words are the button's name (shown beside its icon on wide screens, hidden on
// narrow ones) and its tooltip.
function setControl(button, text, on) {
  button.querySelector(".btn-label").textContent = text;
  button.title = text;
  button.dataset.on = String(on);
}

/** Show or hide the call's participant list (the chat stays where it is). */
export function togglePeople() {
  const shown = ui.togglePeople.getAttribute("aria-expanded") !== "true";
  ui.togglePeople.setAttribute("aria-expanded", String(shown));
  // A disclosure: one name ("People"), aria-expanded tells whether the list shows.
  ui.callSide.toggleAttribute("data-people-hidden", !shown);
}

/** Why your camera does not reach the others (the call itself still works); null: it does. */
export function setPublishProblem(message) {
  ui.publishNote.textContent = message ?? "";
  ui.publishNote.hidden = !message;
}

let callTools = null;

/** The call's participant list; a moderator also gets the room's Lock and Close there. */
export function renderCallParticipants(participants, selfId, room = null, locked = false) {
  renderChips(ui.callParticipants, participants, selfId, room);
  ui.callCount.textContent = `(${participants.length})`;
  if (!moderating() || !room) {
    if (callTools) callTools.hidden = true;
    return;
  }
  if (!callTools) {
    callTools = roomTools(room);
    callTools.id = "call-mod-tools";
    ui.callParticipants.after(callTools);
  }
  callTools.hidden = false;
  updateTools(callTools, room, locked);
}
