// Rooms have addresses: `/room/NAME` is the lobby page entering room NAME.
//
// The address follows the view: entering a call pushes the room's address (so the
// browser's Back button leaves the call for the lobby), being in the lobby shows
// `/lobby`. The server serves the same page at both (lobby/web/pages.py).

const LOBBY_PATH = "/lobby";

/** The room the page's address names, as typed (checking it is the join form's job), or null. */
export function roomInAddress() {
  const match = /^\/room\/([^/]+)$/.exec(location.pathname);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return match[1]; // a stray "%": let the join form say the name is no room name
  }
}

export function roomAddress(room) {
  return `/room/${encodeURIComponent(room)}`;
}

/** The room's address as a link to send to someone. */
export function roomLink(room) {
  return new URL(roomAddress(room), location.origin).href;
}

/** Bring the address in line with the view: `room` while in its call, else the lobby. */
export function followRoom(room) {
  if (room) {
    if (location.pathname !== roomAddress(room)) history.pushState({ room }, "", roomAddress(room));
  } else if (location.pathname !== LOBBY_PATH) {
    // Replace, not push: Back from the lobby never walks into a call again.
    history.replaceState(null, "", LOBBY_PATH);
  }
}

/**
 * Back (or Forward) through the calls' addresses: the view follows the address. `room()`
 * is the room whose call the page shows (null in the lobby).
 */
export function followAddress({ room, leave, join }) {
  window.addEventListener("popstate", () => {
    const wanted = roomInAddress();
    const inCall = room();
    if (inCall !== null && wanted !== inCall) leave();
    else if (inCall === null && wanted !== null) join(wanted);
  });
}

/**
 * Copy `room`'s link; says how it went in `status`. Without a clipboard (an insecure
 * origin, a refusal) the link shows selected in `fallback`, ready for Ctrl+C.
 */
export async function copyLink(room, { status, fallback }) {
  const link = roomLink(room);
  const say = (text) => {
    status.textContent = text;
  };
  try {
    await navigator.clipboard.writeText(link);
    fallback.hidden = true;
    say("Link copied");
  } catch {
    fallback.value = link;
    fallback.hidden = false;
    fallback.focus();
    fallback.select();
    say("Copy the selected link (Ctrl+C or ⌘C)");
  }
}
