// The call view's media side for peer-to-peer rooms: one RTCPeerConnection to
// every other participant (a full mesh), negotiated through the lobby socket.
//
// The contract between pages is docs/protocol.md, "Peer-to-peer calls". In
// short: each connection to a peer is a "link" with a fresh id on both sides;
// a page says `hello` with its link id, the peer answers `ack` with its own,
// and every later signal names both ids, so nothing from an older connection
// (before a reload, a failure) reaches a newer one. Offers and answers follow
// the perfect negotiation pattern: the polite side (id sorts last) rolls back
// on a collision, the impolite side ignores the colliding offer. The first
// offer of a link always comes from the impolite side, though (with receive-
// only transceivers if it has no camera), and the polite side adds its tracks
// to that offer's transceivers before answering: one round trip, and no
// collision at the start. (Chromium 156 can leave a connection without ICE
// candidates when a rollback lands while its own first offer is gathering.)
//
// What every call shares (state, generation, feeds, stop/wait/fail, toggles)
// is callview.js's `CallView`; this module adds the links, and `signal` (a
// frame from a peer), `roster` (who is in the room) and `reconnected` (the
// lobby socket came back while the call went on).
//
// Each peer's link state (CallView `setLink`, shown on its tile) comes from
// reach.js: connecting, connected, reconnecting or unreachable.

import { CallView, canPublish, describe, deviceAdvice, stopTracks } from "./callview.js";
import { constraint, explain } from "./prejoin.js";
import { Reach } from "./reach.js";
import { newFeed } from "./tiles.js";
import { el } from "./view.js";

const HELLO_RETRY_MS = [1000, 2000, 4000, 8000, 10_000];
const CONNECT_TIMEOUT_MS = 10_000; // a link not connected by then starts over
const CANDIDATE_BATCH_MS = 25; // trickled candidates go out together, not one frame each
const MAX_CANDIDATES = 16; // per frame (the server's limit)

function newLinkId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return Array.from(bytes, (b) => b.toString(36).padStart(2, "0")).join("");
}

// Negotiation steps at debug level (hidden in the console unless "Verbose" is on).
function trace(link, ...what) {
  console.debug(`p2p ${link.peer} ${link.id}:`, ...what);
}

function videoFor(stream, { muted }) {
  const video = el("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = muted;
  video.srcObject = stream;
  return video;
}

/** One RTCPeerConnection to one peer, and what we know of the peer's side of it. */
class Link {
  constructor(peer, theirs) {
    this.peer = peer; // participant id
    this.id = newLinkId();
    this.theirs = theirs; // the peer's link id, once it said hello or ack
    this.pc = null;
    this.polite = false;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.queue = Promise.resolve(); // incoming signals, one at a time
    this.candidates = [];
    this.flushTimer = 0;
    this.helloTimer = 0;
    this.connectTimer = 0;
    this.hellos = 0;
    this.connected = false;
    this.stream = null; // the peer's camera and microphone
    this.feed = null;
    this.screenFeed = null; // the peer's shared screen
    this.media = { video: true, audio: true, screen: null };
  }
}

export class PeerCall extends CallView {
  #send;
  #me = null; // {id, role} while a call runs
  #iceServers = [];
  #stream = null; // your camera and microphone (only the kinds switched on so far)
  #screen = null; // your shared screen's stream
  /** @type {Map<string, object>} participant id -> participant, the others in the room */
  #peers = new Map();
  /** @type {Map<string, Link>} participant id -> link */
  #links = new Map();
  #reach = new Reach((peerId) => this.#mark(peerId));
  #retry = null; // () => starts your camera again (the device panel's "Try again")

  /**
   * @param {object} on the callbacks, see CallView
   * @param {(to: string, data: object) => boolean} send a `signal` to a participant
   */
  constructor(on, send) {
    super(on);
    this.#send = send;
  }

  /** Participant ids of the peers we have a working connection with. */
  get present() {
    return new Set([...this.#links.values()].filter((link) => link.connected).map((link) => link.peer));
  }

  start({ participantId, role, nickname, publish, iceServers, participants, devices }) {
    const current = this.begin(participantId, devices);
    this.#me = { id: participantId, role };
    this.#iceServers = iceServers ?? [];
    this.setState(publish ? "connecting" : "connected");
    this.roster(participants);
    // Everyone already here hears from us; whoever comes later says hello to us.
    for (const peer of this.#peers.values()) {
      if (this.#wants(peer)) this.#hello(peer.id);
    }
    this.#retry = () => this.#startCamera(nickname, current);
    if (publish) this.#startCamera(nickname, current);
  }

  retryMedia() {
    if (this.#me && !this.#stream && canPublish(this.#me.role)) this.#retry?.();
  }

  /** The room's participants (you included) as the lobby knows them. */
  roster(participants) {
    const others = new Map((participants ?? []).filter((p) => p.id !== this.#me?.id).map((p) => [p.id, p]));
    for (const id of [...this.#links.keys()]) {
      if (!others.has(id)) this.#closeLink(id);
    }
    const gone = [...this.#peers.keys()].filter((id) => !others.has(id));
    this.#peers = others;
    for (const id of gone) this.#forget(id);
    this.#report();
  }

  /**
   * Tell the lobby where this call stands: connected once your media runs and a
   * link is up with everyone you exchange media with (or there is nobody), dropped
   * when every such link failed. Anything in between changes nothing.
   */
  #report() {
    if (!this.#me || this.state !== "connected") return;
    const links = [...this.#peers.values()].filter((peer) => this.#wants(peer)).map((peer) => this.#links.get(peer.id));
    if (links.length > 0 && links.every((link) => link?.pc?.connectionState === "failed")) this.on.report("dropped");
    else if (links.every((link) => link?.connected)) this.on.report("connected");
  }

  /** The lobby socket is back and the call went on: mend links whose signals may be lost. */
  reconnected() {
    if (!this.#me) return;
    for (const peer of this.#peers.values()) {
      const link = this.#links.get(peer.id);
      if (this.#wants(peer) && !link?.connected) this.#hello(peer.id);
    }
  }

  /** A `signal` frame from participant `from`. */
  signal(from, data) {
    if (!this.#me || !this.#peers.has(from) || !data) return;
    const link = this.#links.get(from);
    if (data.kind === "hello") {
      this.#onHello(from, data.link, link);
    } else if (data.kind === "ack") {
      if (link && data.peer_link === link.id && link.theirs === null) {
        link.theirs = data.link;
        clearTimeout(link.helloTimer);
        this.#open(link);
      }
    } else if (link?.pc && data.peer_link === link.id && data.link === link.theirs) {
      link.queue = link.queue
        .then(() => this.#negotiate(link, data))
        .catch((err) => console.warn("p2p: signalling with", from, "failed:", describe(err)));
    }
  }

  // --- for CallView -----------------------------------------------------------

  get running() {
    return this.#me !== null;
  }

  get remoteFeeds() {
    return [...this.#links.values()].flatMap((link) => [link.feed, link.screenFeed]).filter(Boolean);
  }

  switchMedia(kind, on) {
    const tracks = kind === "video" ? this.#stream.getVideoTracks() : this.#stream.getAudioTracks();
    for (const track of tracks) track.enabled = on;
    // Joined with it off: the device is asked for only now, and its track added to every link.
    if (on && tracks.length === 0) this.#addDevice(kind);
    // A disabled track still arrives (black, silent): the peers label your tile from this.
    this.#announce();
  }

  startScreen(stream) {
    this.#screen = stream;
    // The peers learn which stream is the screen before its track arrives (one socket, in order).
    this.#announce();
    for (const link of this.#links.values()) this.#addTracks(link);
  }

  stopScreen(stream) {
    if (this.#screen !== stream) return;
    this.#screen = null;
    this.#announce();
    for (const link of this.#links.values()) {
      if (!link.pc || link.pc.signalingState === "closed") continue;
      for (const sender of link.pc.getSenders()) {
        if (sender.track && stream.getTracks().includes(sender.track)) link.pc.removeTrack(sender);
      }
    }
  }

  teardownMedia() {
    for (const id of [...this.#links.keys()]) this.#closeLink(id);
    this.#reach.clear(); // CallView forgets the link states itself
    this.#retry = null;
    stopTracks(this.#stream);
    this.#stream = null;
    this.#screen = null;
    this.#me = null;
  }

  /** What the peers show on your tiles: camera and microphone on or off, and your screen's stream. */
  #mediaSignal() {
    const { video, audio } = this.media;
    return { kind: "media", video, audio, screen: this.#screen?.id ?? null };
  }

  #announce() {
    for (const link of this.#links.values()) this.#sendTo(link, this.#mediaSignal());
  }

  async #addDevice(kind) {
    const me = this.#me;
    const id = kind === "video" ? this.devices.camera : this.devices.microphone;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraint(true, id) });
    } catch (err) {
      if (this.#me === me) this.on.notice(explain(err, kind === "video" ? "camera" : "microphone"));
      return;
    }
    if (this.#me !== me || !this.#stream) {
      stopTracks(stream);
      return;
    }
    for (const track of stream.getTracks()) {
      track.enabled = Boolean(this.media?.[kind]); // switched off again meanwhile
      this.#stream.addTrack(track);
    }
    for (const link of this.#links.values()) this.#addTracks(link);
    this.#showLocal();
    this.on.feeds();
  }

  /** Your own tile plays your stream (muted), whatever it holds so far. */
  #showLocal() {
    const feed = this.local;
    if (!feed || feed.element.querySelector("video") || !this.#stream?.getTracks().length) return;
    const video = videoFor(this.#stream, { muted: true }); // never hear yourself
    feed.element.classList.add("feed-mirror");
    feed.element.append(video);
    video.play().catch(() => {});
  }

  // --- your camera -----------------------------------------------------------

  async #startCamera(nickname, current) {
    const feed = newFeed("local", { participantId: this.#me.id, local: true, label: nickname });
    this.local = feed;
    this.on.feeds();
    const { video, audio, camera, microphone } = this.devices;
    let stream;
    try {
      if (!navigator.mediaDevices) throw new Error("this page is not served over https");
      // Only what the pre-join check left on: a camera switched off there never lights up.
      stream =
        video || audio
          ? await navigator.mediaDevices.getUserMedia({
              video: constraint(video, camera),
              audio: constraint(audio, microphone),
            })
          : new MediaStream();
    } catch (err) {
      if (!current()) return;
      this.local = null;
      this.on.devices(deviceAdvice(err)); // with "Try again", in place
      this.setState("connected");
      this.#report();
      this.on.feeds();
      return;
    }
    if (!current()) {
      stopTracks(stream);
      return;
    }
    this.#stream = stream;
    // Also with the camera off: the element carries your microphone for the speaking mark,
    // and plays the camera once it is added to the same stream.
    this.#showLocal();
    feed.sending = true;
    feed.video = video ? "on" : "off";
    feed.audio = audio ? "on" : "off";
    this.setMedia({ video, audio });
    this.#announce(); // links opened while the camera started were told nothing yet
    for (const link of this.#links.values()) this.#addTracks(link);
    this.setState("connected");
    this.#report();
    this.on.feeds();
  }

  // --- links -----------------------------------------------------------------

  /** Two viewers have nothing to send each other. */
  #wants(peer) {
    return canPublish(this.#me.role) || canPublish(peer.role);
  }

  /** Start over with `peerId`: a fresh link, announced until the peer answers. */
  #hello(peerId) {
    this.#closeLink(peerId);
    const link = new Link(peerId, null);
    this.#links.set(peerId, link);
    this.#watchReach(peerId);
    this.#sayHello(link);
  }

  #sayHello(link) {
    clearTimeout(link.helloTimer);
    this.#send(link.peer, { kind: "hello", link: link.id, peer_link: null });
    const pause = HELLO_RETRY_MS[Math.min(link.hellos, HELLO_RETRY_MS.length - 1)];
    link.hellos += 1;
    // The peer may be away (reloading) and miss it: say it again until it answers.
    link.helloTimer = setTimeout(() => {
      if (this.#links.get(link.peer) === link && link.theirs === null) this.#sayHello(link);
    }, pause);
  }

  #onHello(from, theirs, link) {
    if (link && link.theirs === theirs) {
      this.#sendTo(link, { kind: "ack" }); // our ack was lost: say it again
      return;
    }
    if (link && link.theirs === null && this.#me.id < from) {
      // Our hellos crossed: the one from the id that sorts first wins, so the
      // peer will answer ours; make sure it has it now.
      this.#sayHello(link);
      return;
    }
    this.#closeLink(from);
    const fresh = new Link(from, theirs);
    this.#links.set(from, fresh);
    this.#watchReach(from);
    this.#sendTo(fresh, { kind: "ack" });
    this.#open(fresh);
  }

  #open(link) {
    const pc = new RTCPeerConnection({ iceServers: this.#iceServers });
    link.pc = pc;
    link.polite = this.#me.id > link.peer;
    const mine = () => this.#links.get(link.peer) === link;
    pc.onnegotiationneeded = async () => {
      try {
        link.makingOffer = true;
        await pc.setLocalDescription();
        trace(link, "negotiationneeded:", pc.localDescription?.type, pc.signalingState);
        if (mine()) this.#sendDescription(link);
      } catch (err) {
        console.warn("p2p: offer failed:", describe(err));
      } finally {
        link.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate?.candidate && mine()) this.#queueCandidate(link, candidate.toJSON());
    };
    pc.ontrack = ({ track, streams }) => mine() && this.#onTrack(link, track, streams[0]);
    pc.onconnectionstatechange = () => mine() && this.#onConnectionState(link);
    pc.oniceconnectionstatechange = () => trace(link, "ice", pc.iceConnectionState);
    pc.onicegatheringstatechange = () => trace(link, "gathering", pc.iceGatheringState);
    if (!link.polite) {
      // We make the first offer: with our tracks, or asking to receive what we do not send.
      const kinds = new Set(this.#stream?.getTracks().map((track) => track.kind));
      for (const kind of ["audio", "video"]) {
        if (!kinds.has(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
      }
      this.#addTracks(link);
    }
    if (this.media) this.#sendTo(link, this.#mediaSignal());
    // Whatever went wrong on the way (a lost signal, a stuck negotiation), start over.
    link.connectTimer = setTimeout(() => {
      if (mine() && !link.connected && this.#me.id < link.peer) this.#hello(link.peer);
    }, CONNECT_TIMEOUT_MS);
  }

  /**
   * Our tracks not yet on `link` (camera, microphone, a shared screen); on the
   * polite side only once the peer's first offer is in. Every later addition
   * renegotiates through `negotiationneeded`.
   */
  #addTracks(link) {
    if (!link.pc || (link.polite && !link.pc.remoteDescription)) return;
    const sent = new Set(link.pc.getSenders().map((sender) => sender.track));
    // addTrack takes over an unused transceiver of the same kind (one of the
    // offer's, or our receive-only one) before it makes a new one.
    for (const stream of [this.#stream, this.#screen]) {
      for (const track of stream?.getTracks() ?? []) {
        if (!sent.has(track)) link.pc.addTrack(track, stream);
      }
    }
  }

  async #negotiate(link, data) {
    const pc = link.pc;
    if (data.kind === "description") {
      const description = data.description;
      const collision = description.type === "offer" && (link.makingOffer || pc.signalingState !== "stable");
      link.ignoreOffer = !link.polite && collision;
      trace(link, "got", description.type, collision ? "(collision)" : "", link.ignoreOffer ? "ignored" : "");
      if (link.ignoreOffer) return;
      await pc.setRemoteDescription(description); // rolls our own offer back if we are polite
      if (description.type === "offer") {
        this.#addTracks(link); // into the offer's transceivers, so the answer sends them
        await pc.setLocalDescription();
        this.#sendDescription(link);
      }
    } else if (data.kind === "candidates") {
      for (const candidate of data.candidates) {
        try {
          await pc.addIceCandidate(candidate);
        } catch (err) {
          if (!link.ignoreOffer) console.warn("p2p: a candidate was refused:", describe(err));
        }
      }
    } else if (data.kind === "media") {
      link.media = { video: data.video, audio: data.audio, screen: data.screen ?? null };
      if (link.feed) {
        link.feed.video = data.video ? "on" : "off";
        link.feed.audio = data.audio ? "on" : "off";
      }
      // Sharing stopped (or another screen started): its tile goes now, before renegotiation.
      if (link.screenFeed && link.screenFeed.streamId !== link.media.screen) this.#dropScreen(link);
      this.on.feeds();
    }
  }

  #sendDescription(link) {
    if (!link.pc.localDescription) return; // rolled back meanwhile
    const { type, sdp } = link.pc.localDescription;
    this.#sendTo(link, { kind: "description", description: { type, sdp } });
  }

  #queueCandidate(link, candidate) {
    trace(link, "candidate", candidate.candidate);
    link.candidates.push(candidate);
    if (link.flushTimer) return;
    link.flushTimer = setTimeout(() => {
      link.flushTimer = 0;
      while (link.candidates.length) {
        this.#sendTo(link, { kind: "candidates", candidates: link.candidates.splice(0, MAX_CANDIDATES) });
      }
    }, CANDIDATE_BATCH_MS);
  }

  #sendTo(link, payload) {
    if (link.theirs === null) return;
    this.#send(link.peer, { ...payload, link: link.id, peer_link: link.theirs });
  }

  #onTrack(link, track, stream) {
    const peer = this.#peers.get(link.peer);
    // Viewers send nothing (the server refuses it too); never show what one sends.
    if (!peer || !canPublish(peer.role)) return;
    if (stream && stream.id === link.media.screen) {
      this.#showScreen(link, peer, track, stream);
      return;
    }
    if (!link.stream) link.stream = new MediaStream();
    link.stream.addTrack(track);
    if (!link.feed) {
      link.feed = newFeed(`peer:${link.id}`, { participantId: peer.id, local: false, label: peer.nickname });
      link.feed.sending = true;
      const video = videoFor(link.stream, { muted: false });
      link.feed.element.append(video);
      this.play(video, { muteIfBlocked: true });
    }
    link.feed.video = link.media.video ? "on" : "off";
    link.feed.audio = link.media.audio ? "on" : "off";
    this.on.feeds();
  }

  /** The peer's shared screen: a tile of its own next to the peer's camera. */
  #showScreen(link, peer, track, stream) {
    if (link.screenFeed?.streamId === stream.id) return;
    this.#dropScreen(link);
    const feed = newFeed(`screen:${link.id}`, { participantId: peer.id, local: false, label: peer.nickname });
    Object.assign(feed, { screen: true, sending: true, streamId: stream.id });
    const video = videoFor(new MediaStream([track]), { muted: true }); // a screen carries no sound here
    feed.element.append(video);
    this.play(video);
    link.screenFeed = feed;
    this.on.feeds();
  }

  #dropScreen(link) {
    const feed = link.screenFeed;
    if (!feed) return;
    link.screenFeed = null;
    for (const video of feed.element.querySelectorAll("video")) video.srcObject = null;
  }

  #onConnectionState(link) {
    const state = link.pc.connectionState;
    trace(link, "connection", state);
    const was = link.connected;
    link.connected = state === "connected";
    this.#reach.update(link.peer, state);
    this.#mark(link.peer);
    this.#report(); // before a failed link is started over below
    // Start over after a failure; one side does it, so the two do not race.
    if (state === "failed" && this.#me.id < link.peer) this.#hello(link.peer);
    else if (was !== link.connected) this.on.feeds();
  }

  /** A link to `peerId` is being set up: its clock starts (once per peer and call). */
  #watchReach(peerId) {
    this.#mark(peerId);
    this.#reach.trying(peerId, () => Boolean(this.#links.get(peerId)?.connected));
  }

  /** The link state shown on `peerId`'s tile (CallView `links`). */
  #mark(peerId) {
    if (this.#peers.has(peerId)) this.setLink(peerId, this.#reach.state(peerId, Boolean(this.#links.get(peerId)?.connected)));
  }

  /** The peer left the room: nothing more to say about it. */
  #forget(peerId) {
    this.#reach.forget(peerId);
    this.setLink(peerId, null);
  }

  #closeLink(peerId) {
    const link = this.#links.get(peerId);
    if (!link) return;
    this.#links.delete(peerId);
    clearTimeout(link.helloTimer);
    clearTimeout(link.connectTimer);
    clearTimeout(link.flushTimer);
    link.pc?.close();
    stopTracks(link.stream);
    this.#dropScreen(link);
    if (link.feed || link.connected) this.on.feeds();
  }
}
