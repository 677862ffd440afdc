// The call view's media side: one openvidu-browser session at a time.
//
// `start` may be called again (new token after a reload, a retry, a room
// switch); every async step checks its generation so a stale connect or
// publish never touches the current call.

import { el } from "./view.js";

const DISCONNECT_MESSAGES = {
  networkDisconnect: "Your connection to the media server dropped.",
  forceDisconnectByServer: "The server ended your connection to the call.",
  forceDisconnectByUser: "A moderator removed you from the call.",
  sessionClosedByServer: "The call was closed by the server.",
  nodeCrashed: "The media server failed.",
  mediaServerDisconnect: "The media server failed.",
};

/** Nickname from openvidu-browser's `connection.data`: `{"clientData":"Bob"}%/%{…server…}`. */
export function nicknameFromConnectionData(data) {
  try {
    const client = JSON.parse(String(data ?? "").split("%/%")[0]);
    if (client && typeof client.clientData === "string" && client.clientData.trim()) {
      return client.clientData;
    }
  } catch {
    // not JSON: fall back below
  }
  return "Guest";
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

function describe(err) {
  return (err && (err.message || err.name)) || String(err);
}

function stopTracks(publisher) {
  try {
    publisher?.stream?.getMediaStream?.()?.getTracks().forEach((track) => track.stop());
  } catch {
    // already gone
  }
}

export class Call {
  #videos;
  #on;
  #generation = 0;
  #state = "idle";
  #ov = null;
  #session = null;
  #joined = false; // session.connect() succeeded
  #publisher = null;
  #media = null; // {video, audio} while publishing
  /** @type {Map<string, HTMLElement>} stream id (or "local") -> tile */
  #tiles = new Map();

  /**
   * @param {HTMLElement} videos the grid the tiles go into
   * @param {object} on callbacks: state(state, message), media({video, audio}|null),
   *   notice(message), playbackBlocked(bool)
   */
  constructor(videos, on) {
    this.#videos = videos;
    this.#on = on;
  }

  get state() {
    return this.#state;
  }

  /** A media session exists and is connected or connecting (a token is in use). */
  get live() {
    return this.#session !== null && (this.#state === "connecting" || this.#state === "connected");
  }

  async start({ token, nickname, publish }) {
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
    session.on("streamCreated", (event) => current() && this.#addRemote(session, event.stream));
    session.on("streamDestroyed", (event) => current() && this.#removeTile(event.stream.streamId));
    session.on("streamPropertyChanged", (event) => current() && this.#propertyChanged(event));
    session.on("exception", (event) => {
      console.warn("openvidu exception", event.name, event.message);
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
    if (publish) await this.#publish(OV, session, nickname, current);
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
    this.#publisher.publishVideo(this.#media.video);
    this.#tiles.get("local")?.setAttribute("data-video", this.#media.video ? "on" : "off");
    this.#on.media({ ...this.#media });
  }

  toggleAudio() {
    if (!this.#publisher) return;
    this.#media.audio = !this.#media.audio;
    this.#publisher.publishAudio(this.#media.audio);
    this.#on.media({ ...this.#media });
  }

  /** Called from a click: browsers allow playback with sound after a user gesture. */
  resumePlayback() {
    for (const video of this.#videos.querySelectorAll("video")) video.play().catch(() => {});
    this.#on.playbackBlocked(false);
  }

  async #publish(OV, session, nickname, current) {
    const tile = this.#addTile("local", "local", `You (${nickname})`);
    let publisher;
    try {
      publisher = await OV.initPublisherAsync(tile.media, {
        audioSource: undefined,
        videoSource: undefined,
        publishAudio: true,
        publishVideo: true,
        mirror: true,
      });
      if (!current()) {
        stopTracks(publisher);
        return;
      }
      publisher.on("videoElementCreated", (event) => {
        event.element.muted = true; // never hear yourself
      });
      await session.publish(publisher);
    } catch (err) {
      stopTracks(publisher);
      if (!current()) return;
      this.#removeTile("local");
      this.#on.notice(`Your camera or microphone could not start (${describe(err)}). You can still watch and listen.`);
      return;
    }
    if (!current()) return;
    this.#publisher = publisher;
    this.#media = { video: true, audio: true };
    this.#on.media({ ...this.#media });
  }

  #addRemote(session, stream) {
    const label = nicknameFromConnectionData(stream.connection?.data);
    const tile = this.#addTile("remote", stream.streamId, label);
    tile.root.dataset.video = stream.hasVideo === false || stream.videoActive === false ? "off" : "on";
    try {
      const subscriber = session.subscribe(stream, tile.media);
      subscriber.on("videoElementCreated", (event) => this.#play(event.element));
    } catch (err) {
      this.#on.notice(`Could not show ${label}'s video (${describe(err)}).`);
    }
  }

  #play(video) {
    video.play?.()?.catch((err) => {
      if (err?.name === "NotAllowedError") this.#on.playbackBlocked(true);
    });
  }

  #propertyChanged(event) {
    if (event.changedProperty !== "videoActive") return;
    const tile = this.#tiles.get(event.stream?.streamId);
    if (tile) tile.dataset.video = event.newValue ? "on" : "off";
  }

  #addTile(kind, key, label) {
    this.#removeTile(key);
    const root = el("figure", "tile");
    root.dataset.tile = kind;
    root.dataset.stream = key;
    root.dataset.video = "on";
    const media = el("div", "tile-media");
    root.append(media, el("figcaption", "tile-label", label));
    if (kind === "local") this.#videos.prepend(root);
    else this.#videos.append(root);
    this.#tiles.set(key, root);
    return { root, media };
  }

  #removeTile(key) {
    this.#tiles.get(key)?.remove();
    this.#tiles.delete(key);
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
    for (const tile of this.#tiles.values()) tile.remove();
    this.#tiles.clear();
    this.#videos.replaceChildren();
    this.#on.playbackBlocked(false);
  }

  #setState(state, message = "") {
    this.#state = state;
    this.#on.state(state, message);
  }
}
