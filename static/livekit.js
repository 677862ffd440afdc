// The media side of a call through LiveKit (OpenVidu 3 is one): one
// livekit-client `Room` at a time, connected to `welcome.media.url` with the
// token the lobby issued. What every call shares (state, generation, feeds,
// stop/wait/fail, toggles) is callview.js's `CallView`; this module adds the
// room, your camera and microphone, the others' tracks, and `present` (who is
// connected to the LiveKit room).
//
// The lobby signs each token for one room, with the lobby participant id as
// the LiveKit identity, the nickname as its name and `{"user", "role"}` as its
// metadata; a viewer's (SUBSCRIBER) token cannot publish, so its page never
// asks for a camera. After a reload the page rejoins with a fresh token for the
// same identity, and LiveKit replaces the connection the old page left behind.
//
// A shared screen is a second published track (source ScreenShare); the
// others show it as a second tile of yours.
//
// livekit-client is the UMD bundle from the npm registry (static/vendor.json),
// loaded by the page before this module; it defines `window.LivekitClient`.

import { CallView, describe, deviceAdvice } from "./callview.js";
import { newFeed } from "./tiles.js";

const UNREACHABLE = "The media server cannot be reached right now. The lobby still works; try again in a moment.";

// livekit-client's DisconnectReason names (from LiveKit's protocol), and what they mean to a person.
const DISCONNECT_MESSAGES = {
  DUPLICATE_IDENTITY: "This call continued in another tab or window.",
  SERVER_SHUTDOWN: "The media server shut down.",
  PARTICIPANT_REMOVED: "The server ended your connection to the call.",
  ROOM_DELETED: "The call was closed by the server.",
  ROOM_CLOSED: "The call was closed by the server.",
  SIGNAL_CLOSE: "Your connection to the media server dropped.",
  CONNECTION_TIMEOUT: "Your connection to the media server dropped.",
  MEDIA_FAILURE: "Your connection to the media server dropped.",
};

function parseObject(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

/** "Nickname (user)" from a LiveKit participant's name and the lobby's metadata, as the tiles read. */
export function labelOf(participant) {
  const nickname = participant.name || participant.identity || "Guest";
  const user = parseObject(participant.metadata ?? "")?.user;
  return typeof user !== "string" || user === nickname ? nickname : `${nickname} (${user})`;
}

/** A sentence for a failed `room.connect`, whose error is livekit-client's ConnectionError. */
function connectFailure(LK, err) {
  const reasons = LK.ConnectionErrorReason ?? {};
  if (err?.reason === reasons.ServerUnreachable) return UNREACHABLE;
  if (err?.reason === reasons.NotAllowed) {
    return `The media server refused to let you into this call (${describe(err)}). Try again.`;
  }
  return `Could not connect to the video call (${describe(err)}). The lobby still works; try again.`;
}

/** A call through a LiveKit server; `new LiveKitCall(on, url)`, `url()` the server's (welcome.media.url). */
export class LiveKitCall extends CallView {
  #url;
  #room = null;
  #joined = false; // room.connect() succeeded
  #tracks = []; // your camera and microphone (LocalTracks)
  #retry = null; // () => starts and publishes your camera again (the device panel's "Try again")
  #screenTrack = null; // your shared screen's LocalVideoTrack, while published
  /** @type {Map<string, object>} identity -> feed of someone else */
  #remote = new Map();
  /** @type {Map<string, object>} identity -> feed of someone else's shared screen */
  #screens = new Map();

  constructor(on, url) {
    super(on);
    this.#url = url;
  }

  /** Participant ids of the others connected to the LiveKit room. */
  get present() {
    return new Set(this.#room ? this.#room.remoteParticipants.keys() : []);
  }

  async start({ token, nickname, publish, participantId, devices }) {
    const current = this.begin(participantId, devices);
    this.setState("connecting");
    const LK = window.LivekitClient;
    let room;
    try {
      LK.setLogLevel("warn"); // its info lines (every state change) would drown the console
      room = new LK.Room({ adaptiveStream: true, dynacast: true });
    } catch (err) {
      this.fail(`The video library did not load (${describe(err)}). Reload the page to try again.`);
      return;
    }
    this.#room = room;
    this.#joined = false;
    this.#listen(LK, room, current);
    // Your camera starts while the room connects: you see yourself at once.
    const camera = publish ? this.#startCamera(LK, { nickname, participantId }, current) : null;
    try {
      await room.connect(this.#url(), token, { autoSubscribe: true });
    } catch (err) {
      if (current()) this.fail(connectFailure(LK, err));
      return;
    }
    if (!current()) return;
    this.#joined = true;
    this.setState("connected");
    for (const participant of room.remoteParticipants.values()) this.#arrived(participant);
    this.#retry = publish
      ? async () => (await this.#startCamera(LK, { nickname, participantId }, current)) && this.#publish(room, current)
      : null;
    if (camera && (await camera)) await this.#publish(room, current);
  }

  retryMedia() {
    if (this.#joined && this.#tracks.length === 0) this.#retry?.();
  }

  /** Called from a click: also lets livekit-client start the others' sound. */
  resumePlayback() {
    this.#room?.startAudio().catch(() => {});
    super.resumePlayback();
  }

  // --- for CallView -----------------------------------------------------------

  get running() {
    return this.#room !== null;
  }

  get remoteFeeds() {
    return [...this.#remote.values(), ...this.#screens.values()];
  }

  async startScreen(stream) {
    const LK = window.LivekitClient;
    if (!this.#joined || !this.#room) throw new Error("you are not in the call yet");
    const [track] = stream.getVideoTracks();
    const local = new LK.LocalVideoTrack(track, undefined, true);
    this.#screenTrack = local;
    await this.#room.localParticipant.publishTrack(local, { source: LK.Track.Source.ScreenShare, name: "screen" });
  }

  stopScreen() {
    const track = this.#screenTrack;
    this.#screenTrack = null;
    if (track && this.#room) {
      this.#room.localParticipant.unpublishTrack(track, false).catch((err) => console.warn("livekit: unpublish failed", describe(err)));
    }
  }

  switchMedia(kind, on) {
    for (const track of this.#tracks) {
      if (track.kind !== kind) continue;
      // A muted camera is stopped (its light goes off) and asked for again when unmuted.
      (on ? track.unmute() : track.mute()).catch((err) => {
        this.on.notice(`Your ${kind === "video" ? "camera" : "microphone"} could not switch (${describe(err)}).`);
      });
    }
  }

  teardownMedia() {
    const room = this.#room;
    this.#room = null; // from here on its events are ignored, its Disconnected too
    for (const track of this.#tracks) {
      track.stop();
      track.detach();
    }
    this.#tracks = [];
    this.#screenTrack = null;
    this.#retry = null;
    this.#remote.clear();
    this.#screens.clear();
    this.#joined = false;
    room?.disconnect().catch((err) => console.warn("livekit disconnect failed", describe(err)));
  }

  // --- the room's events ------------------------------------------------------

  #listen(LK, room, current) {
    const E = LK.RoomEvent;
    const mine = () => current() && this.#room === room;
    room
      .on(E.ParticipantConnected, (participant) => mine() && this.#arrived(participant))
      .on(E.ParticipantDisconnected, (participant) => mine() && this.#departed(participant))
      .on(E.TrackSubscribed, (track, publication, participant) => mine() && this.#addTrack(track, participant))
      .on(E.TrackUnsubscribed, (track, publication, participant) => mine() && this.#removeTrack(track, participant))
      .on(E.TrackMuted, (publication, participant) => mine() && this.#muted(publication, participant))
      .on(E.TrackUnmuted, (publication, participant) => mine() && this.#muted(publication, participant))
      .on(E.AudioPlaybackStatusChanged, () => mine() && this.on.playbackBlocked(!room.canPlaybackAudio))
      .on(E.Reconnecting, () => {
        if (mine()) this.setState("connecting", "Connection to the media server lost, reconnecting…");
      })
      .on(E.Reconnected, () => mine() && this.setState("connected"))
      .on(E.Disconnected, (reason) => {
        // A failed connect is reported by `start`.
        if (!mine() || !this.#joined) return;
        const name = LK.DisconnectReason?.[reason];
        const why = DISCONNECT_MESSAGES[name] ?? "You were disconnected from the call.";
        this.fail(`${why} Retry to rejoin.`);
      });
  }

  // --- your camera ------------------------------------------------------------

  /** Your camera and microphone in your tile; false when they could not start. */
  async #startCamera(LK, { nickname, participantId }, current) {
    const feed = newFeed("local", { participantId, local: true, label: nickname });
    this.local = feed;
    this.on.feeds();
    const { video, audio, camera, microphone } = this.devices;
    let tracks;
    try {
      tracks = await LK.createLocalTracks({
        audio: microphone ? { deviceId: microphone } : true,
        video: camera ? { deviceId: camera } : true,
      });
      // Switched off in the pre-join check: muted at once (a muted camera is stopped, its light off).
      for (const track of tracks) {
        if ((track.kind === "video" && !video) || (track.kind === "audio" && !audio)) await track.mute();
      }
    } catch (err) {
      if (!current()) return false;
      this.local = null;
      this.on.feeds();
      this.on.devices(deviceAdvice(err)); // with "Try again", in place
      return false;
    }
    if (!current()) {
      for (const track of tracks) track.stop();
      return false;
    }
    this.#tracks = tracks;
    for (const track of tracks) {
      if (track.kind !== "video") continue; // never play your own microphone
      const video = track.attach();
      video.muted = true;
      feed.element.classList.add("feed-mirror");
      feed.element.append(video);
    }
    feed.video = video ? "on" : "off";
    feed.audio = audio ? "on" : "off";
    this.setMedia({ video, audio });
    this.on.feeds();
    return true;
  }

  async #publish(room, current) {
    try {
      for (const track of this.#tracks) await room.localParticipant.publishTrack(track);
    } catch (err) {
      if (!current()) return;
      this.on.publishProblem(
        `Others cannot see or hear you: the media server did not accept your camera (${describe(err)}). You can still watch and listen.`,
      );
      return;
    }
    if (!current() || !this.local) return;
    this.local.sending = true;
    this.on.publishProblem(null);
    this.on.feeds();
  }

  // --- the others -------------------------------------------------------------

  #feedOf(participant) {
    let feed = this.#remote.get(participant.identity);
    if (!feed) {
      feed = newFeed(`lk:${participant.identity}`, {
        participantId: participant.identity,
        local: false,
        label: labelOf(participant),
      });
      feed.sending = true;
      feed.video = "off"; // until a camera track arrives
      this.#remote.set(participant.identity, feed);
    }
    return feed;
  }

  #arrived(participant) {
    // Tiles come from the lobby's list; this only marks the participant present.
    this.on.feeds();
    for (const publication of participant.trackPublications.values()) {
      if (publication.track && publication.isSubscribed) this.#addTrack(publication.track, participant);
    }
  }

  #departed(participant) {
    const feed = this.#remote.get(participant.identity);
    this.#remote.delete(participant.identity);
    this.#screens.delete(participant.identity);
    for (const element of feed?.element.querySelectorAll("video, audio") ?? []) element.remove();
    this.on.feeds();
  }

  #isScreen(track) {
    return track.source === window.LivekitClient?.Track?.Source?.ScreenShare;
  }

  #screenOf(participant) {
    let feed = this.#screens.get(participant.identity);
    if (!feed) {
      feed = newFeed(`lk-screen:${participant.identity}`, {
        participantId: participant.identity,
        local: false,
        label: labelOf(participant),
      });
      Object.assign(feed, { screen: true, sending: true });
      this.#screens.set(participant.identity, feed);
    }
    return feed;
  }

  #addTrack(track, participant) {
    const feed = this.#isScreen(track) ? this.#screenOf(participant) : this.#feedOf(participant);
    if (track.attachedElements.some((element) => feed.element.contains(element))) return;
    const element = track.attach();
    feed.element.append(element);
    if (track.kind === "video") {
      feed.video = track.isMuted ? "off" : "on";
      this.play(element, { muteIfBlocked: true });
    } else {
      feed.audio = track.isMuted ? "off" : "on";
      this.route(element);
    }
    this.on.feeds();
  }

  #removeTrack(track, participant) {
    for (const element of track.detach()) element.remove();
    if (this.#isScreen(track)) {
      this.#screens.delete(participant.identity);
      this.on.feeds();
      return;
    }
    const feed = this.#remote.get(participant.identity);
    if (feed && track.kind === "video") feed.video = "off";
    this.on.feeds();
  }

  #muted(publication, participant) {
    const feed = this.#remote.get(participant.identity);
    if (!feed || publication.source === window.LivekitClient?.Track?.Source?.ScreenShare) return;
    feed[publication.kind === "video" ? "video" : "audio"] = publication.isMuted ? "off" : "on";
    this.on.feeds();
  }
}
