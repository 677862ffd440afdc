// The join form's checks: each error under the field it concerns (linked by
// aria-describedby, the field marked aria-invalid), and a warning when a new room's
// name differs from a live one only by case (names are case-sensitive, as OpenVidu's
// session ids are: "standup" and "Standup" are two rooms).

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const NICKNAME_MAX = 40;

const $ = (id) => document.getElementById(id);
const fields = {
  room: { input: $("room-input"), error: $("room-error") },
  nickname: { input: $("nickname-input"), error: $("nickname-error") },
};
const warning = $("room-warning");

/** Show `message` under the field (null clears it). */
function setFieldError({ input, error }, message) {
  error.textContent = message ?? "";
  error.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
  describe(input, error.id, Boolean(message));
}

function describe(input, id, on) {
  const ids = new Set((input.getAttribute("aria-describedby") ?? "").split(/\s+/).filter(Boolean));
  if (on) ids.add(id);
  else ids.delete(id);
  input.setAttribute("aria-describedby", [...ids].join(" "));
}

/** What is wrong with a room name, or null. */
export function roomProblem(room) {
  if (!room) return "Enter a room name.";
  if (!ROOM_PATTERN.test(room)) return `“${room}” is not a room name: use 1 to 64 letters, digits, “_” or “-”.`;
  return null;
}

function nicknameProblem(nickname) {
  if (!nickname) return "Enter a nickname.";
  if (nickname.length > NICKNAME_MAX) return `Nicknames are at most ${NICKNAME_MAX} characters.`;
  return null;
}

/** Check both fields; on a problem, say it under its field, focus it and answer false. */
export function checkJoin(room, nickname) {
  const problems = { room: roomProblem(room), nickname: nicknameProblem(nickname) };
  for (const [name, field] of Object.entries(fields)) setFieldError(field, problems[name]);
  const first = Object.keys(fields).find((name) => problems[name]);
  if (first) fields[first].input.focus();
  return !first;
}

export function clearFieldErrors() {
  for (const field of Object.values(fields)) setFieldError(field, null);
}

/** The live room whose name differs from `room` only by case, if `room` itself is not live. */
export function caseTwin(room, liveNames) {
  if (!room || liveNames.includes(room)) return null;
  const folded = room.toLowerCase();
  return liveNames.find((name) => name.toLowerCase() === folded) ?? null;
}

/** Warn (without stopping anyone) when the typed name is a live room's but for case. */
export function warnAboutCase(room, liveNames) {
  const twin = caseTwin(room, liveNames);
  const text = twin ? `A room named “${twin}” exists; names are case-sensitive.` : "";
  if (warning.textContent !== text) warning.textContent = text;
  warning.hidden = !twin;
  describe(fields.room.input, warning.id, Boolean(twin));
}
