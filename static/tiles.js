// The call's video grid: one tile per participant of the room, yours first and
// marked, each with its video when the call has one.
//
// Tiles follow the lobby's participant list, not the media session: a page
// that reloads comes back as the same participant, so its tile never leaves
// the others' grids. A shared screen is a second tile right after its
// sharer's. Nicknames only ever go through textContent.
//
// Marks: a muted microphone (from the media library's own events where the
// feed has them, else from the participant's `media` report to the lobby, so
// everyone sees the same) and "speaking" (speaking.js), each with a word for
// screen readers besides its icon.
//
// Link states (the call never claims more than is true): each other
// participant's tile says "Connecting…" until its media arrives, "Can't reach
// NAME" when it never will (peer to peer without a relay), and "NAME is
// reconnecting…" (dimmed) when its media went: the lobby's `dropped`, the
// media side's link state, or gone from the media session after being in it.
// `renderTiles` sums them up for the call's status line. Every back end goes
// through here: p2p.js gives per-peer link states (CallView `links`), the
// media servers' sides give `present` and the feeds.

import { el } from "./view.js";

const HUES = 8; // avatar colours, style.css [data-hue]

/**
 * A video to show, as call.js and p2p.js offer them: `element` holds the <video>
 * (put it in the page once and leave it there); `video` is "on" or "off";
 * `audio` is "on", "off" or undefined (the library does not say); `screen`
 * marks a shared screen.
 */
export function newFeed(key, { participantId, local, label }) {
  return {
    key,
    participantId,
    local,
    label,
    element: el("div", "feed"),
    video: "on",
    audio: undefined,
    screen: false,
    sending: false,
  };
}

/** @type {Map<string, HTMLElement>} tile key -> tile */
const tiles = new Map();

/**
 * Bring the grid in line with the room.
 * @param {HTMLElement} grid
 * @param {object} view
 * @param {object[]} view.participants the room's participants, in join order
 * @param {string|undefined} view.selfId your participant id
 * @param {object[]} view.feeds the call's feeds (CallView.feeds)
 * @param {Set<string>} view.present participant ids of the others in the media session
 * @param {boolean} view.connected you are connected to the media session
 * @param {Map<string, string>} view.links participant id -> link state, where the media side knows it
 * @returns {{state: string, text: string}} the call as a whole: "connecting",
 *   "connected", "reconnecting" or "unreachable", and a sentence for the status line
 */
export function renderTiles(grid, { participants, selfId, feeds, present, connected, links = new Map(), speaking = new Set() }) {
  if (!connected) seen.clear();
  for (const id of present) seen.add(id);
  const entries = tileEntries(participants, selfId, feeds);
  const ctx = { present, connected, links };
  const keys = new Set(entries.map((entry) => entry.key));
  for (const [key, tile] of tiles) {
    if (!keys.has(key)) {
      tile.remove();
      tiles.delete(key);
    }
  }
  entries.forEach((entry, index) => {
    let tile = tiles.get(entry.key);
    if (!tile) {
      tile = newTile();
      tiles.set(entry.key, tile);
    }
    entry.link = linkOf(entry, ctx);
    fillTile(tile, entry, status(entry, ctx));
    markTile(tile, entry, speaking);
    const there = grid.children[index];
    if (there !== tile) grid.insertBefore(tile, there ?? null);
  });
  return summary(entries);
}

/** Participants that were in our media session during this call (gone again: reconnecting). */
const seen = new Set();

/** Whether the participant sends something we should receive (the lobby's `media` report). */
function sends(participant) {
  if (!participant || participant.role === "SUBSCRIBER") return false;
  const media = participant.media;
  return !media || media.camera || media.microphone || media.screen;
}

/**
 * How our media link to another participant's tile stands: "connecting",
 * "connected", "reconnecting", "unreachable", or "" (not a remote person's tile,
 * or nothing to say while our own call is not up).
 */
function linkOf({ participant, self, screen, feed }, { present, connected, links }) {
  if (self || screen || !participant) return "";
  const id = participant.id;
  const link = links.get(id);
  if (participant.call === "dropped" || link === "reconnecting") return "reconnecting";
  if (link === "unreachable") return "unreachable";
  if (!connected) return "";
  if (link) return link;
  // A media server: in its session with media (or nothing to send) is connected.
  if (present.has(id)) return feed || !sends(participant) ? "connected" : "connecting";
  if (seen.has(id)) return "reconnecting";
  if (participant.role === "SUBSCRIBER") return "connected"; // a viewer may never appear there
  return "connecting";
}

/** The call's status line from the tiles: the worst link says what is going on. */
function summary(entries) {
  const remote = entries.filter((entry) => entry.link);
  const named = (state) => remote.filter((entry) => entry.link === state).map((entry) => entry.participant.nickname);
  const unreachable = named("unreachable");
  if (unreachable.length) {
    return {
      state: "unreachable",
      text:
        `Can't reach ${list(unreachable)}: your networks don't let a direct connection through. ` +
        "Try from the same network, or ask whoever runs this site to add a relay (STUN/TURN) server " +
        "(the LOBBY_ICE_SERVERS setting).",
    };
  }
  if (named("connecting").length) return { state: "connecting", text: "Connecting to the call…" };
  const reconnecting = named("reconnecting");
  if (reconnecting.length) {
    const verb = reconnecting.length === 1 ? "is" : "are";
    return { state: "reconnecting", text: `Connected to the call; ${list(reconnecting)} ${verb} reconnecting…` };
  }
  return { state: "connected", text: "Connected to the call" };
}

function list(names) {
  return names.length <= 2 ? names.join(" and ") : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

/** Tiles to show: the room's participants (you first), then videos of nobody we know. */
function tileEntries(participants, selfId, feeds) {
  const known = new Set(participants.map((p) => p.id));
  const feedOf = new Map();
  const screenOf = new Map();
  const strays = [];
  for (const feed of feeds) {
    const mine = feed.screen ? screenOf : feedOf;
    if (known.has(feed.participantId) && !mine.has(feed.participantId)) mine.set(feed.participantId, feed);
    else strays.push(feed);
  }
  const ordered = [...participants.filter((p) => p.id === selfId), ...participants.filter((p) => p.id !== selfId)];
  return [
    ...ordered.flatMap((p) => {
      const person = {
        key: `p:${p.id}`,
        participant: p,
        self: p.id === selfId,
        label: labelOf(p),
        feed: feedOf.get(p.id) ?? null,
      };
      const screen = screenOf.get(p.id);
      // OpenVidu 2 sends a screen in place of the camera: the lobby's report says it is one.
      person.sharingInPlace = !screen && Boolean(p.media?.screen) && p.role !== "SUBSCRIBER";
      if (!screen) return [person];
      return [person, { ...person, key: `s:${p.id}`, label: `${person.label}: screen`, feed: screen, screen: true }];
    }),
    ...strays.map((feed) => ({ key: `f:${feed.key}`, participant: null, self: feed.local, label: feed.label, feed })),
  ];
}

/**
 * Anyone may pick anyone's name as a nickname, so unless the nickname is exactly
 * the participant's user name, the user name goes next to it ("Alice (bob)"),
 * as on the lobby's chips. Exactly: user names differing only in case are
 * different users.
 */
function labelOf(participant) {
  const { nickname, user } = participant;
  return nickname === user ? nickname : `${nickname} (${user})`;
}

function status({ participant, self, feed, screen, sharingInPlace, link }, { present, connected }) {
  if (screen) return self ? "You are sharing your screen" : "Shared screen";
  if (link === "reconnecting") return `${participant.nickname} is reconnecting…`;
  if (link === "unreachable") return `Can't reach ${participant.nickname} (no direct connection between your networks)`;
  if (link === "connecting" && participant.role !== "SUBSCRIBER") return "Connecting…";
  if (feed) {
    const notes = sharingInPlace ? ["Sharing screen"] : [];
    if (feed.video === "off") notes.push("Camera off");
    if (feed.local && !feed.sending) notes.push("Only you see this");
    return notes.join(" · ");
  }
  if (participant?.role === "SUBSCRIBER") return "Viewer";
  if (!connected) return self ? "Connecting…" : "";
  if (self) return "No camera";
  if (present.has(participant?.id) || link === "connected") return "No video";
  return "Not in the call";
}

function newTile() {
  const tile = el("figure", "tile");
  const media = el("div", "tile-media");
  const avatar = el("div", "tile-avatar");
  avatar.setAttribute("aria-hidden", "true");
  media.append(avatar);
  const caption = el("figcaption", "tile-caption");
  // The marks' words are for screen readers; their icons come from style.css.
  const muted = el("span", "tile-mark tile-muted");
  muted.append(el("span", "visually-hidden", "Microphone off"));
  const speaking = el("span", "tile-mark tile-speaking");
  speaking.append(el("span", "visually-hidden", "Speaking"));
  caption.append(el("span", "tile-label"), el("span", "tile-you", "You"), muted, speaking, el("span", "tile-status"));
  tile.append(media, caption);
  return tile;
}

/** Whether the participant's microphone is off: the media library's word first, then the lobby's. */
function micOff({ participant, feed }) {
  if (feed?.audio) return feed.audio === "off";
  const media = participant?.media;
  return Boolean(media) && participant.role !== "SUBSCRIBER" && !media.microphone;
}

function markTile(tile, entry, speaking) {
  const screen = Boolean(entry.screen);
  const muted = !screen && micOff(entry);
  const talking = !screen && !muted && speaking.has(entry.participant?.id);
  tile.toggleAttribute("data-muted", muted);
  tile.toggleAttribute("data-speaking", talking);
  tile.querySelector(".tile-muted").hidden = !muted;
  tile.querySelector(".tile-speaking").hidden = !talking;
}

/** Only the speaking marks, between renders (speaking.js calls it every change). */
export function markSpeaking(grid, speaking) {
  for (const tile of grid.querySelectorAll("figure.tile[data-participant]:not([data-tile='screen'])")) {
    const muted = tile.hasAttribute("data-muted");
    const talking = !muted && speaking.has(tile.dataset.participant);
    tile.toggleAttribute("data-speaking", talking);
    tile.querySelector(".tile-speaking").hidden = !talking;
  }
}

function fillTile(tile, { participant, self, label, feed, key, screen, sharingInPlace, link }, statusText) {
  tile.toggleAttribute("data-sharing", Boolean(sharingInPlace));
  tile.dataset.tile = screen ? "screen" : self ? "local" : "remote";
  // A screen's tile names its sharer apart, so `[data-participant]` finds one tile per person.
  if (participant && !screen) tile.dataset.participant = participant.id;
  else delete tile.dataset.participant;
  if (participant && screen) tile.dataset.screenOf = participant.id;
  else delete tile.dataset.screenOf;
  tile.dataset.hue = String(hash(participant?.id ?? key) % HUES);
  tile.dataset.video = feed ? feed.video : "none";
  if (participant?.call) tile.dataset.call = participant.call;
  else delete tile.dataset.call;
  if (link) tile.dataset.link = link; // style.css dims "reconnecting" and "unreachable"
  else delete tile.dataset.link;
  const media = tile.querySelector(".tile-media");
  setText(media.querySelector(".tile-avatar"), initial(label));
  const shown = media.querySelector(".feed");
  if (shown !== (feed?.element ?? null)) {
    shown?.remove();
    if (feed) media.append(feed.element);
  }
  setText(tile.querySelector(".tile-label"), label);
  tile.querySelector(".tile-you").hidden = !self;
  const statusNode = tile.querySelector(".tile-status");
  setText(statusNode, statusText);
  statusNode.hidden = !statusText;
}

// Unchanged text is not rewritten: no needless DOM mutations.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function initial(label) {
  const first = Array.from(String(label).trim())[0];
  return first ? first.toUpperCase() : "?";
}

function hash(text) {
  let h = 0;
  for (const char of String(text)) h = (h * 31 + char.codePointAt(0)) >>> 0;
  return h;
}
