// What the page sees of a call, whatever carries its media: the state and its
// callbacks, your feed and your camera's switches, and how a call starts over,
// stops, waits or fails. call.js (openvidu-browser) and p2p.js (a mesh of
// RTCPeerConnections) extend `CallView` with their media side.
//
// `start` may be called again (new token after a reload, a retry, a room
// switch); every async step checks its generation so a stale connect or
// publish never touches the current call.
//
// The call does not draw the grid. It offers `feeds` (your camera, the others'
// streams, as tiles.js's `newFeed` makes them) and `present` (who is connected
// to the media); tiles.js puts them in one tile per participant of the
// lobby's room.
//
// Screen sharing is common too: `toggleScreen` asks the browser for a screen
// (getDisplayMedia), shows it as a second tile of yours, and hands it to the
// media side's `startScreen(stream)`; it stops on the button or on the
// browser's own "Stop sharing" (the track ends), calling `stopScreen(stream)`.
//
// For the media side (JS private fields do not reach a subclass): `on` (the
// callbacks), `local` (your feed), `devices` (the pre-join choice: {video,
// audio, camera, microphone, speaker}), `media` and `setMedia`, `setState`,
// `begin`, `play` and `setLink`. It implements `running`, `remoteFeeds`, `switchMedia`,
// `startScreen`, `stopScreen` and `teardownMedia`, plus `start`, `present` and
// `retryMedia` (ask for your camera again after the device panel's "Try again").

import { newFeed } from "./tiles.js";

/** Viewers (SUBSCRIBER) only watch and listen. */
export function canPublish(role) {
  return role === "PUBLISHER" || role === "MODERATOR";
}

/** A short reason for a failure, for a sentence a person reads. */
export function describe(err) {
  return (err && (err.message || err.name)) || String(err);
}

/**
 * Why your camera or microphone did not start inside a call, and what to do, for
 * the call view's device panel (it has a "Try again" button; the call goes on).
 */
export function deviceAdvice(err) {
  const name = String(err?.name ?? "");
  if (!navigator.mediaDevices) {
    return "This page is not served over https, so the browser offers no camera or microphone. You can still watch and listen.";
  }
  // openvidu-browser names its own: DEVICE_ACCESS_DENIED, INPUT_VIDEO_DEVICE_NOT_FOUND, …
  if (name === "NotAllowedError" || name === "SecurityError" || name === "DEVICE_ACCESS_DENIED") {
    return "Your browser blocks the camera and microphone for this site. Allow them with the camera icon in the address bar (or the site settings left of the address), then press Try again. Meanwhile you can watch and listen.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || /NOT_FOUND|NO_INPUT/.test(name)) {
    return "No camera or microphone was found. Plug one in, then press Try again. Meanwhile you can watch and listen.";
  }
  if (name === "NotReadableError" || name === "AbortError" || name === "DEVICE_ALREADY_IN_USE") {
    return "The camera or microphone is in use by another application. Close that application, then press Try again. Meanwhile you can watch and listen.";
  }
  return `Your camera or microphone could not start (${describe(err)}). Press Try again; meanwhile you can watch and listen.`;
}

export function stopTracks(stream) {
  for (const track of stream?.getTracks() ?? []) track.stop();
}

export class CallView {
  /**
   * Callbacks: state(state, message), media({video, audio, screen}|null),
   * feeds() (feeds or presence changed), publishProblem(message|null),
   * notice(message), playbackBlocked(bool), report("connected"|"dropped")
   * (where this page's own call stands, for the lobby's call states),
   * devices(message|null) (your camera or microphone did not start: the call
   * view offers "Try again", which calls `retryDevices`).
   */
  on;
  /** Your feed, from the moment your camera is asked for; null without one. */
  local = null;
  /** The pre-join choice for this call (prejoin.js `loadChoices`). */
  devices = { video: true, audio: true, camera: "", microphone: "", speaker: "" };
  #selfId = null;
  #generation = 0;
  #state = "idle";
  #media = null; // {video, audio, screen} while your media runs
  #screen = null; // {stream, feed} while you share a screen
  /** @type {Map<string, string>} participant id -> how our media link to it stands */
  #links = new Map();

  constructor(on) {
    this.on = on;
  }

  get state() {
    return this.#state;
  }

  /** The media side is up, connected or connecting (a token is in use). */
  get live() {
    return this.running && (this.#state === "connecting" || this.#state === "connected");
  }

  /**
   * Videos to show: {key, participantId, local, label, element, video: "on"|"off", sending}.
   * `element` holds the <video>; put it in the page once and leave it there.
   */
  get feeds() {
    const mine = [this.local, this.#screen?.feed].filter(Boolean);
    return [...mine, ...this.remoteFeeds];
  }

  /**
   * Participant id -> "connecting" | "connected" | "reconnecting" | "unreachable":
   * how the media link to each other participant stands, where the media side
   * knows it per participant (peer to peer). Empty for a media server: tiles.js
   * then judges from `present`, the feeds and the lobby's call states.
   */
  get links() {
    return this.#links;
  }

  /** For the media side: set (or with null forget) one participant's link state. */
  setLink(participantId, state) {
    if ((this.#links.get(participantId) ?? null) === state) return;
    if (state) this.#links.set(participantId, state);
    else this.#links.delete(participantId);
    this.on.feeds();
  }

  /** Called from the device panel's "Try again": ask for the camera and microphone again, in place. */
  retryDevices() {
    this.on.devices(null);
    this.retryMedia?.();
  }

  /** Whether this browser can share a screen at all. */
  get canShareScreen() {
    return Boolean(navigator.mediaDevices?.getDisplayMedia);
  }

  /** {video, audio, screen} while your media runs, else null. */
  get media() {
    return this.#media;
  }

  /** End the call locally (the lobby tells the server separately). */
  stop() {
    this.#end("idle");
  }

  /** No media yet: show "connecting" while the lobby asks the server for a token. */
  wait(message) {
    this.#end("connecting", message);
  }

  /** End the media side and show `message` with a Retry button. */
  fail(message) {
    this.#end("error", message);
  }

  toggleVideo() {
    this.#toggle("video");
  }

  toggleAudio() {
    this.#toggle("audio");
  }

  /** Called from a click (getDisplayMedia needs one): share a screen, or stop sharing it. */
  async toggleScreen() {
    if (this.#screen) {
      this.#stopScreen();
      return;
    }
    if (!this.#media || !this.canShareScreen) return;
    const generation = this.#generation;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (err) {
      // NotAllowedError: the person closed the browser's picker; nothing to say.
      if (err?.name !== "NotAllowedError") this.on.notice(`Your screen could not be shared (${describe(err)}).`);
      return;
    }
    if (generation !== this.#generation || !this.#media || this.#screen) {
      stopTracks(stream);
      return;
    }
    const [track] = stream.getVideoTracks();
    // The browser's own "Stop sharing" ends the track.
    track?.addEventListener("ended", () => this.#screen?.stream === stream && this.#stopScreen());
    const feed = newFeed("local-screen", { participantId: this.#selfId, local: true, label: "Your screen" });
    feed.screen = true;
    feed.sending = true;
    const video = document.createElement("video");
    Object.assign(video, { autoplay: true, playsInline: true, muted: true, srcObject: stream });
    feed.element.append(video);
    video.play().catch(() => {});
    this.#screen = { stream, feed };
    try {
      await this.startScreen(stream);
    } catch (err) {
      if (this.#screen?.stream !== stream) return;
      this.on.notice(`Your screen could not be shared (${describe(err)}).`);
      this.#stopScreen();
      return;
    }
    if (this.#screen?.stream !== stream) return;
    this.#media.screen = true;
    this.on.media({ ...this.#media });
    this.on.feeds();
  }

  /** Send remote sound to the chosen speaker, where the browser can (setSinkId). */
  route(element) {
    const speaker = this.devices?.speaker;
    if (speaker && element.setSinkId) element.setSinkId(speaker).catch(() => {});
  }

  /** Called from a click: browsers allow playback with sound after a user gesture. */
  resumePlayback() {
    for (const feed of this.remoteFeeds) {
      for (const video of feed.element.querySelectorAll("video")) {
        video.muted = false; // `play` may have muted it to show the picture meanwhile
        video.play().catch(() => {});
      }
    }
    this.on.playbackBlocked(false);
  }

  /**
   * Tear down what runs and start anew: `current()` stays true until the next
   * start, stop, wait or fail. `selfId` is your participant id, `devices` the
   * pre-join choice.
   */
  begin(selfId = null, devices = null) {
    this.#teardown();
    this.#selfId = selfId;
    if (devices) this.devices = { ...this.devices, ...devices };
    const generation = ++this.#generation;
    return () => generation === this.#generation;
  }

  setState(state, message = "") {
    this.#state = state;
    this.on.state(state, message);
  }

  /** Your camera is on ({video, audio}) or gone (null); the page shows its switches. */
  setMedia(media) {
    this.#media = media && { screen: false, ...media };
    this.on.media(this.#media && { ...this.#media });
  }

  /**
   * Play someone's video. Without a click on this page yet (e.g. after a
   * reload) the browser refuses sound: the page offers a button for it, and
   * with `muteIfBlocked` the picture plays without sound meanwhile.
   */
  play(video, { muteIfBlocked = false } = {}) {
    this.route(video);
    video.play?.()?.catch((err) => {
      if (err?.name !== "NotAllowedError") return;
      if (muteIfBlocked) {
        video.muted = true;
        video.play().catch(() => {});
      }
      this.on.playbackBlocked(true);
    });
  }

  #stopScreen() {
    const screen = this.#screen;
    if (!screen) return;
    this.#screen = null;
    try {
      this.stopScreen(screen.stream);
    } catch (err) {
      console.warn("stopping the screen share failed:", describe(err));
    }
    stopTracks(screen.stream);
    if (this.#media) {
      this.#media.screen = false;
      this.on.media({ ...this.#media });
    }
    this.on.feeds();
  }

  #toggle(kind) {
    if (!this.#media) return;
    const on = !this.#media[kind];
    this.#media[kind] = on;
    this.switchMedia(kind, on);
    if (kind === "video" && this.local) this.local.video = on ? "on" : "off";
    if (kind === "audio" && this.local) this.local.audio = on ? "on" : "off";
    this.on.media({ ...this.#media });
    this.on.feeds();
  }

  #end(state, message) {
    this.#generation += 1;
    this.#teardown();
    this.setState(state, message);
  }

  #teardown() {
    // The media side goes as a whole below; only the screen's own tracks are left to stop.
    stopTracks(this.#screen?.stream);
    this.#screen = null;
    this.teardownMedia();
    this.local = null;
    if (this.#media) this.setMedia(null);
    this.#links.clear();
    this.on.publishProblem(null);
    this.on.devices(null);
    this.on.feeds();
    this.on.playbackBlocked(false);
  }
}
