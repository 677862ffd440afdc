// The lobby's presence in the browser: live rooms and their participants, no
// DOM. It mirrors lobby/rules/presence.py's view as the protocol delivers it
// (docs/protocol.md): `welcome` replaces everything; `joined`, `left`,
// `room_closed`, `room_locked`, `call_state` and `media` are applied in the order the
// server sent them. A room that is gone takes its lock with it, as on the server.

export class Presence {
  /** @type {Map<string, {name: string, participants: object[]}>} in server order */
  #rooms = new Map();

  reset(rooms) {
    this.#rooms = new Map();
    for (const room of Array.isArray(rooms) ? rooms : []) {
      if (room && typeof room.name === "string") {
        this.#rooms.set(room.name, {
          name: room.name,
          participants: [...(room.participants ?? [])],
          locked: room.locked === true,
        });
      }
    }
  }

  add(roomName, participant) {
    let room = this.#rooms.get(roomName);
    if (!room) {
      room = { name: roomName, participants: [], locked: false };
      this.#rooms.set(roomName, room);
    }
    const i = room.participants.findIndex((p) => p.id === participant.id);
    if (i === -1) room.participants.push(participant);
    else room.participants[i] = participant;
  }

  remove(roomName, participantId) {
    const room = this.#rooms.get(roomName);
    if (room) room.participants = room.participants.filter((p) => p.id !== participantId);
  }

  /** A participant's call state changed (`call_state`): connecting, connected or dropped. */
  setCall(roomName, participantId, call) {
    const participant = this.#rooms.get(roomName)?.participants.find((p) => p.id === participantId);
    if (participant) participant.call = call;
  }

  /** A moderator locked or unlocked the room (`room_locked`). */
  setLocked(roomName, locked) {
    const room = this.#rooms.get(roomName);
    if (room) room.locked = locked === true;
  }

  /** A participant's reported media changed (`media`): {camera, microphone, screen}. */
  setMedia(roomName, participantId, media) {
    const participant = this.#rooms.get(roomName)?.participants.find((p) => p.id === participantId);
    if (participant) participant.media = media;
  }

  close(roomName) {
    this.#rooms.delete(roomName);
  }

  get(roomName) {
    return this.#rooms.get(roomName);
  }

  /** Rooms with someone in them (an emptied room waits for its room_closed). */
  list() {
    return [...this.#rooms.values()].filter((room) => room.participants.length > 0);
  }

  snapshot() {
    return structuredClone(this.list());
  }
}
