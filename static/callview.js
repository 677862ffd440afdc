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
// For the media side (JS private fields do not reach a subclass): `on` (the
// callbacks), `local` (your feed), `media` and `setMedia`, `setState`, `begin`
// and `play`. It implements `running`, `remoteFeeds`, `switchMedia` and
// `teardownMedia`, plus `start` and `present`.

/** Viewers (SUBSCRIBER) only watch and listen. */
export function canPublish(role) {
  return role === "PUBLISHER" || role === "MODERATOR";
}

/** A short reason for a failure, for a sentence a person reads. */
export function describe(err) {
  return (err && (err.message || err.name)) || String(err);
}

export function stopTracks(stream) {
  for (const track of stream?.getTracks() ?? []) track.stop();
}

export class CallView {
  /**
   * Callbacks: state(state, message), media({video, audio}|null),
   * feeds() (feeds or presence changed), publishProblem(message|null),
   * notice(message), playbackBlocked(bool), report("connected"|"dropped")
   * (where this page's own call stands, for the lobby's call states).
   */
  on;
  /** Your feed, from the moment your camera is asked for; null without one. */
  local = null;
  #generation = 0;
  #state = "idle";
  #media = null; // {video, audio} while the camera is on

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
    return [...(this.local ? [this.local] : []), ...this.remoteFeeds];
  }

  /** {video, audio} while your camera is on, else null. */
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

  /** Tear down what runs and start anew: `current()` stays true until the next start, stop, wait or fail. */
  begin() {
    this.#teardown();
    const generation = ++this.#generation;
    return () => generation === this.#generation;
  }

  setState(state, message = "") {
    this.#state = state;
    this.on.state(state, message);
  }

  /** Your camera is on ({video, audio}) or gone (null); the page shows its switches. */
  setMedia(media) {
    this.#media = media;
    this.on.media(media && { ...media });
  }

  /**
   * Play someone's video. Without a click on this page yet (e.g. after a
   * reload) the browser refuses sound: the page offers a button for it, and
   * with `muteIfBlocked` the picture plays without sound meanwhile.
   */
  play(video, { muteIfBlocked = false } = {}) {
    video.play?.()?.catch((err) => {
      if (err?.name !== "NotAllowedError") return;
      if (muteIfBlocked) {
        video.muted = true;
        video.play().catch(() => {});
      }
      this.on.playbackBlocked(true);
    });
  }

  #toggle(kind) {
    if (!this.#media) return;
    const on = !this.#media[kind];
    this.#media[kind] = on;
    this.switchMedia(kind, on);
    if (kind === "video") this.local.video = on ? "on" : "off";
    this.on.media({ ...this.#media });
    this.on.feeds();
  }

  #end(state, message) {
    this.#generation += 1;
    this.#teardown();
    this.setState(state, message);
  }

  #teardown() {
    this.teardownMedia();
    this.local = null;
    if (this.#media) this.setMedia(null);
    this.on.publishProblem(null);
    this.on.feeds();
    this.on.playbackBlocked(false);
  }
}
