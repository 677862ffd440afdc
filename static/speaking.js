// Who is speaking: the loudness of every audio track in the call, measured
// with Web Audio, and of the pre-join check's microphone.
//
// Cheap on purpose: one AudioContext for the page, one AnalyserNode per track
// (nothing is played through it: the analysers end the graph), and one 100 ms
// timer for them all, running only while there is a track to measure. A
// speaker stays "speaking" for a moment after the level falls, so the
// highlight does not flicker between syllables.
//
// Any media library works: the tracks are read from the <video>/<audio>
// elements of each feed (their `srcObject`), which openvidu-browser,
// livekit-client and our own peer-to-peer code all set.

const INTERVAL_MS = 100;
const THRESHOLD = 0.02; // RMS of the waveform, 0..1: above room noise, below a voice
const HOLD_MS = 600;

let context = null;

/** The page's one AudioContext; call it first from a click, so the browser lets it run. */
export function audioContext() {
  if (!context) {
    const Context = window.AudioContext ?? window.webkitAudioContext;
    if (!Context) return null;
    context = new Context();
  }
  if (context.state === "suspended") context.resume().catch(() => {});
  return context;
}

/** A level meter for one audio track: `level()` is its loudness now, 0..1. */
export function meterFor(track) {
  const ctx = audioContext();
  if (!ctx || !track) return null;
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = ctx.createAnalyser();
  // About 90 ms of sound per reading (at 44.1-48 kHz): nearly all of what passed since the
  // last 100 ms tick, so a short sound (a plosive, the fake microphone's beep) is not missed.
  analyser.fftSize = 4096;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  return {
    track,
    level() {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      return Math.sqrt(sum / samples.length);
    },
    close() {
      source.disconnect();
    },
  };
}

/** Audio tracks a feed plays (or, for your own feed, sends). */
function audioTracksOf(feed) {
  const tracks = [];
  for (const media of feed.element.querySelectorAll("video, audio")) {
    for (const track of media.srcObject?.getAudioTracks?.() ?? []) {
      if (track.readyState === "live") tracks.push(track);
    }
  }
  return tracks;
}

/**
 * Watches the feeds' audio; `onChange(speaking)` gets the participant ids
 * speaking now whenever that set changes.
 */
export class SpeakingWatch {
  #onChange;
  /** @type {Map<string, {participantId: string, meter: object}>} track id -> meter */
  #meters = new Map();
  #lastLoud = new Map(); // participant id -> time it was last above the threshold
  #speaking = new Set();
  #timer = 0;

  constructor(onChange) {
    this.#onChange = onChange;
  }

  get speaking() {
    return new Set(this.#speaking);
  }

  /** Measure exactly these feeds' tracks from now on (call it whenever the feeds change). */
  watch(feeds) {
    const wanted = new Map();
    for (const feed of feeds) {
      if (!feed.participantId || feed.screen) continue;
      for (const track of audioTracksOf(feed)) wanted.set(track.id, { track, participantId: feed.participantId });
    }
    for (const [id, entry] of this.#meters) {
      if (!wanted.has(id)) {
        entry.meter.close();
        this.#meters.delete(id);
      }
    }
    for (const [id, { track, participantId }] of wanted) {
      if (this.#meters.has(id)) continue;
      try {
        const meter = meterFor(track);
        if (meter) this.#meters.set(id, { participantId, meter });
      } catch (err) {
        console.warn("speaking: cannot measure a track:", err?.message ?? err);
      }
    }
    if (this.#meters.size && !this.#timer) this.#timer = setInterval(() => this.#tick(), INTERVAL_MS);
    if (!this.#meters.size) this.#stop();
  }

  #tick() {
    const now = performance.now();
    for (const { participantId, meter } of this.#meters.values()) {
      // A muted (disabled) track measures silence, so a muted speaker is never lit.
      if (meter.track.enabled && meter.level() > THRESHOLD) this.#lastLoud.set(participantId, now);
    }
    const speaking = new Set();
    for (const [id, at] of this.#lastLoud) {
      if (now - at <= HOLD_MS) speaking.add(id);
      else this.#lastLoud.delete(id);
    }
    const changed = speaking.size !== this.#speaking.size || [...speaking].some((id) => !this.#speaking.has(id));
    this.#speaking = speaking;
    if (changed) this.#onChange(this.speaking);
  }

  #stop() {
    clearInterval(this.#timer);
    this.#timer = 0;
    this.#lastLoud.clear();
    if (this.#speaking.size) {
      this.#speaking = new Set();
      this.#onChange(this.speaking);
    }
  }
}
