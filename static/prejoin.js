// The pre-join check: before a publisher enters a call it sees its camera,
// a level meter for its microphone, picks camera, microphone and (where the
// browser can route sound, `setSinkId`) speaker, and may join with either off.
// Viewers never see it (they send nothing).
//
// The choice is remembered in localStorage (this browser, every tab): a
// reload or a Retry rejoins with it without asking again. Device ids are the
// browser's own, stable per site; a remembered one that is gone falls back to
// the default device.
//
// A camera or microphone that is denied, missing or busy is explained in
// words, switched off, and joining stays possible without it.

import { audioContext, meterFor } from "./speaking.js";
import { stopTracks } from "./callview.js";

const STORE = "lobby.devices";
const DEFAULTS = { video: true, audio: true, camera: "", microphone: "", speaker: "" };
const METER_MS = 100;

const $ = (id) => document.getElementById(id);

/** The remembered choice: {video, audio, camera, microphone, speaker} (ids "" = default). */
export function loadChoices() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE));
    if (!saved || typeof saved !== "object") return { ...DEFAULTS };
    const pick = (key, type) => (typeof saved[key] === type ? saved[key] : DEFAULTS[key]);
    return {
      video: pick("video", "boolean"),
      audio: pick("audio", "boolean"),
      camera: pick("camera", "string"),
      microphone: pick("microphone", "string"),
      speaker: pick("speaker", "string"),
    };
  } catch {
    return { ...DEFAULTS };
  }
}

function saveChoices(choices) {
  try {
    localStorage.setItem(STORE, JSON.stringify(choices));
  } catch {
    // storage disabled: the next join asks with the defaults
  }
}

/** getUserMedia constraints for one kind: false when off, a device when one is chosen. */
export function constraint(on, deviceId) {
  if (!on) return false;
  return deviceId ? { deviceId: { ideal: deviceId } } : true;
}

/** Why a camera or microphone did not start, in words, and that joining still works. */
export function explain(err, what = "camera or microphone") {
  const name = err?.name;
  if (!navigator.mediaDevices) return `This page is not served over https, so the browser offers no ${what}. You can still join: others will not see or hear you.`;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return `Your browser blocks the ${what} for this site. You can still join without it; to use it, allow it in the browser's site settings (the icon left of the address) and reload.`;
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return `No ${what} was found. Plug one in and choose it here, or join without it.`;
  }
  if (name === "NotReadableError" || name === "AbortError") {
    return `The ${what} is in use by another application or could not start. Close that application and try again, or join without it.`;
  }
  return `The ${what} could not start (${err?.message || name || err}). You can still join without it.`;
}

const ui = {
  section: $("prejoin"),
  title: $("prejoin-title"),
  room: $("prejoin-room"),
  video: $("prejoin-video"),
  noVideo: $("prejoin-no-video"),
  level: $("prejoin-level"),
  camera: $("prejoin-camera"),
  microphone: $("prejoin-microphone"),
  speaker: $("prejoin-speaker"),
  speakerField: $("prejoin-speaker-field"),
  videoOn: $("prejoin-video-on"),
  audioOn: $("prejoin-audio-on"),
  problem: $("prejoin-problem"),
  join: $("prejoin-join"),
  cancel: $("prejoin-cancel"),
};

let session = null; // the open check: {resolve, stream, meter, timer, generation}

/**
 * Show the check for `room`; resolves with the choice when the user joins,
 * null when they cancel. `hide()`/`show()` swap the lobby out and back.
 */
export function openPrejoin(room, { hide, show }) {
  close(null);
  hide();
  ui.room.textContent = room;
  const choices = loadChoices();
  ui.videoOn.checked = choices.video;
  ui.audioOn.checked = choices.audio;
  ui.speakerField.hidden = !("setSinkId" in HTMLMediaElement.prototype);
  setProblem([]);
  ui.section.hidden = false;
  ui.title.focus();
  return new Promise((resolve) => {
    session = { resolve, show, stream: null, meter: null, timer: 0, generation: 0, choices };
    audioContext(); // from the Join click: the level meter may run
    preview();
  });
}

function current() {
  return {
    video: ui.videoOn.checked,
    audio: ui.audioOn.checked,
    camera: ui.camera.value || session.choices.camera,
    microphone: ui.microphone.value || session.choices.microphone,
    speaker: ui.speaker.value || session.choices.speaker,
  };
}

function stopPreview() {
  clearInterval(session.timer);
  session.meter?.close();
  session.meter = null;
  stopTracks(session.stream);
  session.stream = null;
  ui.video.srcObject = null;
  ui.level.value = 0;
}

/** Ask for the chosen devices (only those switched on) and show them. */
async function preview() {
  const mine = ++session.generation;
  stopPreview();
  const wanted = current();
  const problems = [];
  const stream = new MediaStream();
  // One request per kind: a missing camera must not take the microphone down with it.
  for (const [kind, on, id, what] of [
    ["video", wanted.video, wanted.camera, "camera"],
    ["audio", wanted.audio, wanted.microphone, "microphone"],
  ]) {
    if (!on) continue;
    try {
      if (!navigator.mediaDevices) throw new Error("no mediaDevices");
      const got = await navigator.mediaDevices.getUserMedia({ [kind]: constraint(true, id) });
      for (const track of got.getTracks()) stream.addTrack(track);
    } catch (err) {
      problems.push(explain(err, what));
      (kind === "video" ? ui.videoOn : ui.audioOn).checked = false;
    }
  }
  if (!session || mine !== session.generation) {
    stopTracks(stream);
    return;
  }
  session.stream = stream;
  setProblem(problems);
  const hasVideo = stream.getVideoTracks().length > 0;
  ui.noVideo.hidden = hasVideo;
  ui.video.hidden = !hasVideo;
  if (hasVideo) {
    ui.video.srcObject = stream;
    ui.video.play().catch(() => {});
  }
  const [audio] = stream.getAudioTracks();
  ui.level.disabled = !audio;
  if (audio) {
    session.meter = meterFor(audio);
    // In decibels, as sound meters read: -60 dB (silence) to 0 dB (full scale).
    session.timer = setInterval(() => {
      if (!session?.meter) return;
      const db = 20 * Math.log10(Math.max(session.meter.level(), 1e-6));
      ui.level.value = Math.min(1, Math.max(0, (db + 60) / 60));
    }, METER_MS);
  }
  await listDevices(stream);
}

async function listDevices(stream) {
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  if (!session) return; // "Join now" came first: the check is closed
  const inUse = (kind) => stream.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId;
  fill(ui.camera, devices, "videoinput", inUse("video") || session.choices.camera, "Camera");
  fill(ui.microphone, devices, "audioinput", inUse("audio") || session.choices.microphone, "Microphone");
  fill(ui.speaker, devices, "audiooutput", session.choices.speaker, "Speaker");
}

function fill(select, devices, kind, chosen, noun) {
  const options = devices.filter((d) => d.kind === kind && d.deviceId);
  select.replaceChildren();
  options.forEach((device, i) => {
    const option = document.createElement("option");
    option.value = device.deviceId;
    option.textContent = device.label || `${noun} ${i + 1}`; // labels are device names: text only
    select.append(option);
  });
  if (options.some((d) => d.deviceId === chosen)) select.value = chosen;
  select.disabled = options.length === 0;
}

function setProblem(sentences) {
  ui.problem.replaceChildren(...sentences.map((s) => Object.assign(document.createElement("p"), { textContent: s })));
  ui.problem.hidden = sentences.length === 0;
}

function close(choice) {
  if (!session) return;
  const { resolve, show } = session;
  stopPreview();
  session = null;
  ui.section.hidden = true;
  if (choice) saveChoices(choice);
  else show();
  resolve(choice);
}

ui.join.addEventListener("click", () => session && close(current()));
ui.cancel.addEventListener("click", () => close(null));
for (const control of [ui.camera, ui.microphone, ui.videoOn, ui.audioOn]) {
  control.addEventListener("change", () => {
    if (!session) return;
    session.choices = { ...session.choices, camera: ui.camera.value, microphone: ui.microphone.value };
    preview();
  });
}
ui.section.addEventListener("keydown", (event) => {
  if (event.key === "Escape") close(null);
});
