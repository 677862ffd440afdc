// The media side of a call through OpenVidu: one openvidu-browser session at a
// time. What every call shares (state, generation, feeds, stop/wait/fail) is
// callview.js's `CallView`; this module adds the session, your publisher and
// the others' subscribers, and `present` (who is connected to the media
// session).
//
// A shared screen replaces your camera's picture in your one OpenVidu stream
// (`publisher.replaceTrack`; an OpenVidu 2 connection publishes one stream),
// and the camera comes back when sharing stops. The others learn it is a
// screen from the lobby (your `media` report), and their tiles say so.

import { CallView, describe, deviceAdvice, stopTracks } from "./callview.js";
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

/** A sentence for a failed `session.publish`; openvidu-browser rejects with a string for server errors. */
function publishFailure(err) {
  if (err?.name === "OPENVIDU_PERMISSION_DENIED") {
    return "Others cannot see or hear you: the media server does not let you publish in this room.";
  }
  const match = /^Error on publishVideo: (.*)$/s.exec(typeof err === "string" ? err : "");
  const reason = (match && parseObject(match[1])?.message) || describe(err);
  return `Others cannot see or hear you: the media server did not accept your camera (${reason}). You can still watch and listen.`;
}

function stopPublisher(publisher) {
  try {
    stopTracks(publisher?.stream?.getMediaStream?.());
  } catch {
    // already gone
  }
}

/** A call through the media server; `new Call(on)` with CallView's callbacks. */
export class Call extends CallView {
  #ov = null;
  #session = null;
  #joined = false; // session.connect() succeeded
  #publisher = null;
  #refused = false; // the media server refused your publish
  #camera = null; // your camera's video track while a screen replaces it
  #retry = null; // () => publishes again (the device panel's "Try again")
  /** @type {Map<string, object>} stream id -> feed of someone else */
  #remote = new Map();
  /** @type {Map<string, string|null>} connection id -> participant id, others in the media session */
  #present = new Map();

  /** Participant ids of the others connected to the media session. */
  get present() {
    return new Set([...this.#present.values()].filter(Boolean));
  }

  async start({ token, nickname, publish, participantId, devices }) {
    const current = this.begin(participantId, devices);
    this.setState("connecting");

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
      if (current()) this.on.notice(`Media problem: ${event.message || event.name}`);
    });
    session.on("reconnecting", () => {
      if (dropIfStale()) return;
      // Before the join completed this means the media server cannot be reached:
      // openvidu-browser would retry silently for a long time, so give up now.
      if (!this.#joined) this.fail(UNREACHABLE);
      else this.setState("connecting", "Connection to the media server lost, reconnecting…");
    });
    session.on("reconnected", () => {
      if (dropIfStale()) return;
      this.setState("connected");
      this.on.report("connected");
    });
    session.on("sessionDisconnected", (event) => {
      if (dropIfStale() || event.reason === "disconnect") return;
      // The network took the media connection away (not OpenVidu nor the lobby ending it).
      if (event.reason === "networkDisconnect") this.on.report("dropped");
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
    this.setState("connected");
    this.on.report("connected");
    this.#retry = publish ? () => this.#publish(OV, session, { nickname, participantId }, current) : null;
    if (publish) await this.#publish(OV, session, { nickname, participantId }, current);
  }

  retryMedia() {
    if (this.#joined && !this.#publisher) this.#retry?.();
  }

  // --- for CallView -----------------------------------------------------------

  get running() {
    return this.#session !== null;
  }

  get remoteFeeds() {
    return [...this.#remote.values()];
  }

  switchMedia(kind, on) {
    if (kind === "audio") {
      this.#publisher.publishAudio(on);
      return;
    }
    this.#publisher.publishVideo(on)?.catch?.((err) => {
      this.on.notice(`Your camera could not turn back on (${describe(err)}).`);
    });
  }

  async startScreen(stream) {
    const publisher = this.#publisher;
    if (!publisher || this.#refused) throw new Error("your camera does not reach the call");
    const [screen] = stream.getVideoTracks();
    this.#camera = publisher.stream?.getMediaStream?.()?.getVideoTracks()[0] ?? null;
    await publisher.replaceTrack(screen);
    // The track is replaced in the stream your own tile plays too: it shows the screen, not mirrored.
    this.local?.element.classList.remove("feed-mirror");
  }

  stopScreen() {
    const camera = this.#camera;
    this.#camera = null;
    this.local?.element.classList.add("feed-mirror");
    if (!camera || camera.readyState !== "live" || !this.#publisher) return;
    this.#publisher.replaceTrack(camera).catch((err) => {
      this.on.notice(`Your camera could not come back (${describe(err)}).`);
    });
  }

  teardownMedia() {
    const session = this.#session;
    this.#camera = null;
    this.#session = null;
    stopPublisher(this.#publisher);
    this.#publisher = null;
    try {
      // disconnect() only closes the media socket of a session that joined.
      if (this.#joined) session?.disconnect();
      else if (this.#ov) closeSocket(this.#ov);
    } catch (err) {
      console.warn("openvidu disconnect failed", err);
    }
    this.#ov = null;
    this.#joined = false;
    this.#retry = null;
    this.#refused = false;
    this.#remote.clear();
    this.#present.clear();
  }

  // --- your camera ------------------------------------------------------------

  async #publish(OV, session, { nickname, participantId }, current) {
    // Both switched off in the pre-join check: nothing to publish, no camera asked for.
    if (!this.devices.video && !this.devices.audio) return;
    const feed = newFeed("local", { participantId, local: true, label: nickname });
    this.local = feed;
    this.on.feeds();
    let publisher;
    try {
      // The pre-join check's devices; switched off there, the track is sent disabled.
      const { video, audio, camera, microphone } = this.devices;
      publisher = await OV.initPublisherAsync(feed.element, {
        audioSource: microphone || undefined,
        videoSource: camera || undefined,
        publishAudio: audio,
        publishVideo: video,
        mirror: true,
      });
    } catch (err) {
      if (!current()) return;
      this.local = null;
      this.on.feeds();
      this.on.devices(deviceAdvice(err)); // with "Try again", in place
      return;
    }
    if (!current()) {
      stopPublisher(publisher);
      return;
    }
    // openvidu-browser mutes your own video already; never risk hearing yourself.
    for (const video of feed.element.querySelectorAll("video")) video.muted = true;
    publisher.on("videoElementCreated", (event) => {
      event.element.muted = true;
    });
    this.#publisher = publisher;
    const { video, audio } = this.devices;
    feed.video = video ? "on" : "off";
    feed.audio = audio ? "on" : "off";
    this.setMedia({ video, audio });
    try {
      await session.publish(publisher);
    } catch (err) {
      if (!current()) return;
      this.#refused = true;
      // Keep the preview (with its toggles), stop offering media nobody takes.
      publisher.stream?.disposeWebRtcPeer?.();
      this.on.publishProblem(publishFailure(err));
      this.on.feeds();
      return;
    }
    if (!current()) return;
    feed.sending = true;
    this.on.publishProblem(null);
    this.on.feeds();
  }

  // --- the others -------------------------------------------------------------

  #arrived(session, connection) {
    if (connection.connectionId === session.connection?.connectionId) return;
    this.#present.set(connection.connectionId, participantIdFromConnectionData(connection.data));
    this.on.feeds();
  }

  #departed(connection) {
    if (this.#present.delete(connection.connectionId)) this.on.feeds();
  }

  #addRemote(session, stream) {
    const data = stream.connection?.data;
    const feed = newFeed(stream.streamId, {
      participantId: participantIdFromConnectionData(data),
      local: false,
      label: nicknameFromConnectionData(data),
    });
    feed.video = stream.hasVideo === false || stream.videoActive === false ? "off" : "on";
    if (typeof stream.audioActive === "boolean") feed.audio = stream.hasAudio === false || !stream.audioActive ? "off" : "on";
    feed.sending = true;
    this.#remote.set(stream.streamId, feed);
    this.on.feeds();
    try {
      const subscriber = session.subscribe(stream, feed.element);
      subscriber.on("videoElementCreated", (event) => this.play(event.element));
    } catch (err) {
      this.on.notice(`Could not show ${feed.label}'s video (${describe(err)}).`);
    }
  }

  #removeRemote(streamId) {
    if (this.#remote.delete(streamId)) this.on.feeds();
  }

  #propertyChanged(event) {
    const kind = { videoActive: "video", audioActive: "audio" }[event.changedProperty];
    const feed = this.#remote.get(event.stream?.streamId);
    if (!kind || !feed) return;
    feed[kind] = event.newValue ? "on" : "off";
    this.on.feeds();
  }
}
