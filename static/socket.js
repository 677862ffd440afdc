// The lobby socket: one WebSocket to /ws that comes back by itself.
//
// Reconnects with full-jitter exponential backoff (500 ms base, x2, 10 s cap).
// Close 4001 means the login session ended: go to the login page. Close 1000 is
// a deliberate close by the server (protocol: "nothing"), so it is not retried.
// Close 1012 means the server is draining (a restart or a deploy): wait a random
// moment within a few seconds first, so thousands of pages do not come back in the
// same second, then back off as usual; the page resumes its participant.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const SESSION_ENDED = 4001;
const NORMAL_CLOSURE = 1000;
const RESTARTING = 1012;
const RESTART_SPREAD_MS = 5_000;
// After this many handshakes in a row that never opened, ask the server whether
// the login session still exists: a refused handshake (403) has no close code.
const PROBE_AFTER_FAILURES = 3;

function socketUrl() {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
}

/**
 * Open the lobby socket.
 * @param {object} handlers
 * @param {(msg: object) => void} handlers.onMessage every decoded frame, in order
 * @param {(status: "connected"|"reconnecting"|"offline") => void} handlers.onStatus
 * @param {(event: CloseEvent) => void} handlers.onClose the socket is gone (replies in flight are lost)
 * @param {() => void} handlers.onStopped the server closed for good (no reconnect)
 */
export function connectSocket({ onMessage, onStatus, onClose, onStopped }) {
  let ws = null;
  let attempt = 0;
  let failedOpens = 0;
  let timer = 0;
  let stopped = false;
  let leaving = false; // this page is logging out: its own form goes to the login page
  let status = null;

  function setStatus(next) {
    if (next !== status) {
      status = next;
      onStatus(next);
    }
  }

  function waitingStatus() {
    return navigator.onLine === false ? "offline" : "reconnecting";
  }

  function open() {
    clearTimeout(timer);
    timer = 0;
    if (stopped || ws) return;
    setStatus(waitingStatus());
    const sock = new WebSocket(socketUrl());
    let opened = false;
    ws = sock;
    sock.addEventListener("open", () => {
      opened = true;
      failedOpens = 0;
      setStatus("connected");
    });
    sock.addEventListener("message", (event) => {
      attempt = 0; // the server talks to us: the next drop starts from a short delay
      const msg = decode(event.data);
      if (msg) onMessage(msg);
    });
    sock.addEventListener("close", (event) => {
      if (ws !== sock) return;
      ws = null;
      onClose(event);
      if (event.code === SESSION_ENDED) {
        stopped = true;
        // Our own logout ends the session too: its answer (the login form saying so)
        // is on its way, and a navigation here would race it.
        if (!leaving) location.assign("/");
        return;
      }
      if (event.code === NORMAL_CLOSURE) {
        stopped = true;
        setStatus("offline");
        onStopped();
        return;
      }
      if (!opened) failedOpens += 1;
      schedule(event.code === RESTARTING ? RESTART_SPREAD_MS : 0);
    });
  }

  function schedule(floor = 0) {
    const backoff = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(attempt, 16));
    const ceiling = Math.max(floor, backoff);
    attempt += 1;
    setStatus(waitingStatus());
    timer = setTimeout(open, Math.random() * ceiling);
    if (failedOpens >= PROBE_AFTER_FAILURES) probeLogin();
  }

  function reconnectNow() {
    if (stopped) return;
    if (ws) {
      // The socket may have survived the outage; if not, its close event follows.
      if (ws.readyState === WebSocket.OPEN) setStatus("connected");
      return;
    }
    attempt = 0;
    open();
  }

  window.addEventListener("online", reconnectNow);
  window.addEventListener("offline", () => {
    if (!stopped) setStatus("offline");
  });

  open();

  return {
    /** Send a request; false when the socket is not open (nothing was sent). */
    send(msg) {
      if (!ws || ws.readyState !== WebSocket.OPEN) return false;
      ws.send(JSON.stringify(msg));
      return true;
    },
    get status() {
      return status;
    },
    /** This page logs out (its form is being submitted): the session's end is expected. */
    loggingOut() {
      leaving = true;
    },
  };
}

function decode(data) {
  if (typeof data !== "string") return null;
  try {
    const msg = JSON.parse(data);
    if (msg && typeof msg === "object" && typeof msg.type === "string") return msg;
  } catch {
    // fall through
  }
  console.warn("lobby: ignoring a malformed frame");
  return null;
}

// A handshake refused for a missing session looks like any network failure.
// GET /lobby answers with a redirect to the login page when the session is gone.
async function probeLogin() {
  if (navigator.onLine === false) return;
  try {
    const res = await fetch("/lobby", { method: "HEAD", redirect: "manual", cache: "no-store" });
    if (res.type === "opaqueredirect") location.assign("/");
  } catch {
    // server unreachable: keep retrying the socket
  }
}
