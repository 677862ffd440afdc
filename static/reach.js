// Whether each peer of a peer-to-peer call is reached, for its tile (CallView
// `setLink`): "connecting" until its link is up, "reconnecting" once it was up
// and went, "unreachable" when it never came up within UNREACHABLE_MS or ICE
// failed (typically two networks and no STUN/TURN server: LOBBY_ICE_SERVERS).
// p2p.js keeps trying meanwhile; a late success turns it "connected". The
// clock runs once per peer and call: links started over do not reset it.

export const UNREACHABLE_MS = 10_000;

export class Reach {
  #ever = new Set(); // peers whose link was connected at some point of this call
  #unreachable = new Set();
  /** @type {Map<string, number>} peer -> its UNREACHABLE_MS timer */
  #timers = new Map();
  #changed;

  /** @param {(peerId: string) => void} changed a peer's state may have changed */
  constructor(changed) {
    this.#changed = changed;
  }

  /** A link to `peerId` is being set up; `isConnected()` tells whether one is up by then. */
  trying(peerId, isConnected) {
    if (this.#timers.has(peerId) || this.#ever.has(peerId)) return;
    const timer = setTimeout(() => {
      if (!isConnected() && !this.#ever.has(peerId)) this.#unreachable.add(peerId);
      this.#changed(peerId);
    }, UNREACHABLE_MS);
    this.#timers.set(peerId, timer);
  }

  /** A link to `peerId` changed its connection state. */
  update(peerId, connectionState) {
    if (connectionState === "connected") {
      this.#ever.add(peerId);
      this.#unreachable.delete(peerId);
    } else if (connectionState === "failed" && !this.#ever.has(peerId)) {
      this.#unreachable.add(peerId); // ICE tried every pair: no way through
    }
  }

  /** The state to show for `peerId`, whose current link is `connected` or not. */
  state(peerId, connected) {
    if (connected) return "connected";
    if (this.#ever.has(peerId)) return "reconnecting";
    return this.#unreachable.has(peerId) ? "unreachable" : "connecting";
  }

  /** The peer left the room. */
  forget(peerId) {
    clearTimeout(this.#timers.get(peerId));
    this.#timers.delete(peerId);
    this.#ever.delete(peerId);
    this.#unreachable.delete(peerId);
  }

  /** The call ended. */
  clear() {
    for (const peerId of [...this.#timers.keys()]) this.forget(peerId);
    this.#ever.clear();
    this.#unreachable.clear();
  }
}
