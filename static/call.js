// The call view's media side: one openvidu-browser session at a time.
//
// `start` may be called again (new token after a reload, a retry, a room
// switch); every async step checks its generation so a stale connect or
// publish never touches the current call.
//
// The call does not draw the grid. It offers `feeds` (your camera, the others'
// streams: an element holding the <video>, and whose it is) and `present` (who
// is connected to the media session); tiles.js puts them in one tile per
// participant of the lobby's room.

import { newFeed } from "./tiles.js";

const DISCONNECT_MESSAGES = {
  networkDisconnect: "Your connection to the media server dropped.",
  forceDisconnectByServer: "The server ended your connection to the call.",
  forceDisconnectByUser: "A moderator removed you from the call.",
  sessionClosedByServer: "The call was closed by the server.",
  nodeCrashed: "The media server failed.",
  mediaServerDisconnect: "The media server failed.",
};

const SEPARATOR = "%/%"; // OpenVidu joins client and server data with it

function splitConnectionData(data) {
  const text = String(data ?? "");
  const at = text.lastIndexOf(SEPARATOR);
  return at === -1 ? [text, ""] : [text.slice(0, at), text.slice(at + SEPARATOR.length)];
}

function parseObject(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

/** Nickname from openvidu-browser's `connection.data`: `{"clientData":"Bob"}%/%{…server…}`. */
export function nicknameFromConnectionData(data) {
  const client = parseObject(splitConnectionData(data)[0]);
  const nickname = client?.clientData;
  return typeof nickname === "string" && nickname.trim() ? nickname : "Guest";
}

/** The lobby participant id the server put in the connection's server data, if any. */
export function participantIdFromConnectionData(data) {
  const server = parseObject(splitConnectionData(data)[1]);
  return typeof server?.participantId === "string" ? server.participantId : null;
}

const CONNECT_TIMEOUT_MS = 20_000;
const UNREACHABLE = "The media server cannot be reached right now. The lobby still works; try again in a moment.";

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("timed out")), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function closeSocket(OV) {
  try {
    OV.closeWs?.();
  } catch {
    // never opened
  }
}

export function describe(err) {
  return (err && (err.message || err.name)) || String(err);
}

/** A sentence for a failed `session.publish`; openvidu-browser rejects with a string for server errors. */
function publishFailure(err) {
  if (err?.name === "OPENVIDU_PERMISSION_DENIED") {
    return "Others cannot see or hear you: the media server does not let you publish in this room.";
  }
  const match = /^Error on publishVideo: (.*)$/s.exec(typeof err === "string" ? err : "");
  const reason = (match && parseObject(match[1])?.message) || describe(err);
  return `Others cannot see or hear you: the media server did not accept your camera (${reason}). You can still watch and listen.`;
}

function stopTracks(publisher) {
  try {
    publisher?.stream?.getMediaStream?.()?.getTracks().forEach((track) => track.stop());
  } catch {
    // already gone
  }
}

export class Call {
  #on;
  #generation = 0;
  #state = "idle";
  #ov = null;
  #session = null;
  #joined = false; // session.connect() succeeded
  #publisher = null;
  #media = null; // {video, audio} while the camera is on
  #local = null; // your feed
  #refused = false; // the media server refused your publish
  /** @type {Map<string, object>} stream id -> feed of someone else */
  #remote = new Map();
  /** @type {Map<string, string|null>} connection id -> participant id, others in the media session */
  #present = new Map();

  /**
   * @param {object} on callbacks: state(state, message), media({video, audio}|null),
   *   feeds() (feeds or presence changed), publishProblem(message|null), notice(message),
   *   playbackBlocked(bool)
   */
  constructor(on) {
    this.#on = on;
  }

  get state() {
    return this.#state;
  }

  /** A media session exists and is connected or connecting (a token is in use). */
  get live() {
    return this.#session !== null && (this.#state === "connecting" || this.#state === "connected");
  }

  /**
   * Videos to show: {key, participantId, local, label, element, video: "on"|"off", sending}.
   * `element` holds openvidu-browser's <video>; put it in the page once and leave it there.
   */
  get feeds() {
    return [...(this.#local ? [this.#local] : []), ...this.#remote.values()];
  }

  /** Participant ids of the others connected to the media session. */
  get present() {
    return new Set([...this.#present.values()].filter(Boolean));
  }

  async start({ token, nickname, publish, participantId }) {
    this.#teardown();
    const generation = ++this.#generation;
    const current = () => generation === this.#generation;
    this.#setState("connecting");

    let OV;
    let session;
    try {
      OV = new window.OpenVidu();
      OV.enableProdMode?.();
      session = OV.initSession();
    } catch (err) {
      this.fail(`The video library did not load (${describe(err)}). Reload the page to try again.`);
      return;
    }
    this.#ov = OV;
    this.#session = session;
    this.#joined = false;
    // openvidu-browser keeps retrying a socket it once opened, even after we
    // moved on; a stale session that comes back is closed for good here.
    const dropIfStale = () => {
      if (!current()) closeSocket(OV);
      return !current();
    };
    session.on("connectionCreated", (event) => current() && this.#arrived(session, event.connection));
    session.on("connectionDestroyed", (event) => current() && this.#departed(event.connection));
    session.on("streamCreated", (event) => current() && this.#addRemote(session, event.stream));
    session.on("streamDestroyed", (event) => current() && this.#removeRemote(event.stream.streamId));
    session.on("streamPropertyChanged", (event) => current() && this.#propertyChanged(event));
    session.on("exception", (event) => {
      console.warn("openvidu exception", event.name, event.message);
      // Candidates of a publish the media server refused fail too; that is already explained.
      if (event.name === "ICE_CANDIDATE_ERROR" && this.#refused) return;
      if (current()) this.#on.notice(`Media problem: ${event.message || event.name}`);
    });
    session.on("reconnecting", () => {
      if (dropIfStale()) return;
      // Before the join completed this means the media server cannot be reached:
      // openvidu-browser would retry silently for a long time, so give up now.
      if (!this.#joined) this.fail(UNREACHABLE);
      else this.#setState("connecting", "Connection to the media server lost, reconnecting…");
    });
    session.on("reconnected", () => !dropIfStale() && this.#setState("connected"));
    session.on("sessionDisconnected", (event) => {
      if (dropIfStale() || event.reason === "disconnect") return;
      const why = DISCONNECT_MESSAGES[event.reason] ?? "You were disconnected from the call.";
      this.fail(`${why} Retry to rejoin.`);
    });

    try {
      await withTimeout(session.connect(token, { clientData: nickname }), CONNECT_TIMEOUT_MS);
    } catch (err) {
      if (current()) {
        this.fail(`Could not connect to the video call (${describe(err)}). The lobby still works; try again.`);
      } else {
        closeSocket(OV);
      }
      return;
    }
    if (!current()) {
      session.disconnect();
      return;
    }
    this.#joined = true;
    this.#setState("connected");
    if (publish) await this.#publish(OV, session, { nickname, participantId }, current);
  }

  /** End the call locally (the lobby tells the server separately). */
  stop() {
    this.#generation += 1;
    this.#teardown();
    this.#setState("idle");
  }

  /** No media yet: show "connecting" while the lobby asks the server for a token. */
  wait(message) {
    this.#generation += 1;
    this.#teardown();
    this.#setState("connecting", message);
  }

  /** End the media side and show `message` with a Retry button. */
  fail(message) {
    this.#generation += 1;
    this.#teardown();
    this.#setState("error", message);
  }

  toggleVideo() {
    if (!this.#publisher) return;
    this.#media.video = !this.#media.video;
    this.#publisher.publishVideo(this.#media.video)?.catch?.((err) => {
      this.#on.notice(`Your camera could not turn back on (${describe(err)}).`);
    });
    this.#local.video = this.#media.video ? "on" : "off";
    this.#on.media({ ...this.#media });
    this.#on.feeds();
  }

  toggleAudio() {
    if (!this.#publisher) return;
    this.#media.audio = !this.#media.audio;
    this.#publisher.publishAudio(this.#media.audio);
    this.#on.media({ ...this.#media });
  }

  /** Called from a click: browsers allow playback with sound after a user gesture. */
  resumePlayback() {
    for (const feed of this.feeds) {
      for (const video of feed.element.querySelectorAll("video")) video.play().catch(() => {});
    }
    this.#on.playbackBlocked(false);
  }

  async #publish(OV, session, { nickname, participantId }, current) {
    const feed = newFeed("local", { participantId, local: true, label: nickname });
    this.#local = feed;
    this.#on.feeds();
    let publisher;
    try {
      publisher = await OV.initPublisherAsync(feed.element, {
        audioSource: undefined,
        videoSource: undefined,
        publishAudio: true,
        publishVideo: true,
        mirror: true,
      });
    } catch (err) {
      if (!current()) return;
      this.#local = null;
      this.#on.feeds();
      this.#on.publishProblem(`Your camera or microphone could not start (${describe(err)}). You can still watch and listen.`);
      return;
    }
    if (!current()) {
      stopTracks(publisher);
      return;
    }
    // openvidu-browser mutes your own video already; never risk hearing yourself.
    for (const video of feed.element.querySelectorAll("video")) video.muted = true;
    publisher.on("videoElementCreated", (event) => {
      event.element.muted = true;
    });
    this.#publisher = publisher;
    this.#media = { video: true, audio: true };
    this.#on.media({ ...this.#media });
    try {
      await session.publish(publisher);
    } catch (err) {
      if (!current()) return;
      this.#refused = true;
      // Keep the preview (with its toggles), stop offering media nobody takes.
      publisher.stream?.disposeWebRtcPeer?.();
      this.#on.publishProblem(publishFailure(err));
      this.#on.feeds();
      return;
    }
    if (!current()) return;
    feed.sending = true;
    this.#on.publishProblem(null);
    this.#on.feeds();
  }

  #arrived(session, connection) {
    if (connection.connectionId === session.connection?.connectionId) return;
    this.#present.set(connection.connectionId, participantIdFromConnectionData(connection.data));
    this.#on.feeds();
  }

  #departed(connection) {
    if (this.#present.delete(connection.connectionId)) this.#on.feeds();
  }

  #addRemote(session, stream) {
    const data = stream.connection?.data;
    const feed = newFeed(stream.streamId, {
      participantId: participantIdFromConnectionData(data),
      local: false,
      label: nicknameFromConnectionData(data),
    });
    feed.video = stream.hasVideo === false || stream.videoActive === false ? "off" : "on";
    feed.sending = true;
    this.#remote.set(stream.streamId, feed);
    this.#on.feeds();
    try {
      const subscriber = session.subscribe(stream, feed.element);
      subscriber.on("videoElementCreated", (event) => this.#play(event.element));
    } catch (err) {
      this.#on.notice(`Could not show ${feed.label}'s video (${describe(err)}).`);
    }
  }

  #removeRemote(streamId) {
    if (this.#remote.delete(streamId)) this.#on.feeds();
  }

  #play(video) {
    video.play?.()?.catch((err) => {
      if (err?.name === "NotAllowedError") this.#on.playbackBlocked(true);
    });
  }

  #propertyChanged(event) {
    if (event.changedProperty !== "videoActive") return;
    const feed = this.#remote.get(event.stream?.streamId);
    if (!feed) return;
    feed.video = event.newValue ? "on" : "off";
    this.#on.feeds();
  }

  #teardown() {
    const session = this.#session;
    this.#session = null;
    stopTracks(this.#publisher);
    this.#publisher = null;
    if (this.#media) {
      this.#media = null;
      this.#on.media(null);
    }
    try {
      // disconnect() only closes the media socket of a session that joined.
      if (this.#joined) session?.disconnect();
      else if (this.#ov) closeSocket(this.#ov);
    } catch (err) {
      console.warn("openvidu disconnect failed", err);
    }
    this.#ov = null;
    this.#joined = false;
    this.#local = null;
    this.#refused = false;
    this.#remote.clear();
    this.#present.clear();
    this.#on.publishProblem(null);
    this.#on.feeds();
    this.#on.playbackBlocked(false);
  }

  #setState(state, message = "") {
    this.#state = state;
    this.#on.state(state, message);
  }
}
