// A moderator's controls (docs/protocol.md, Moderation): a kick button on each
// participant chip one may kick, Lock/Unlock and Close room for a room, and the
// dialog that asks for a kick's optional reason. Only built for MODERATOR pages;
// the server refuses these requests from anyone else all the same.
//
// User text (nicknames, user names, room names, reasons) goes through
// textContent or setAttribute only.

/** @type {{kick: Function, close: Function, lock: Function, me: string} | null} */
let actions = null;

/** Turn the controls on for this page (its user is a moderator). */
export function enableModeration(handlers) {
  actions = handlers;
}

export function moderating() {
  return actions !== null;
}

function button(className, text, label, onClick) {
  const node = document.createElement("button");
  node.type = "button";
  node.className = className;
  node.textContent = text;
  if (label) node.setAttribute("aria-label", label);
  node.addEventListener("click", onClick);
  return node;
}

/**
 * Give `chip` a kick button if this page moderates and `participant` may be kicked
 * (no moderator, nobody of our own user: the server refuses those); the button has
 * no text of its own (CSS draws it), so the chip's text stays "nickname (user)".
 */
export function kickControl(chip, room, participant) {
  const wanted = actions !== null && participant.role !== "MODERATOR" && participant.user !== actions.me;
  let kick = chip.querySelector(".chip-kick");
  if (!wanted) {
    kick?.remove();
    return;
  }
  const who = `${participant.nickname} (${participant.user})`;
  if (!kick) {
    kick = button("chip-kick", "", "", () => askKick(kick.dataset.room, kick.dataset.participant, kick.dataset.who));
    chip.append(kick);
  }
  kick.dataset.room = room;
  kick.dataset.participant = participant.id;
  kick.dataset.who = who;
  kick.setAttribute("aria-label", `Kick ${who}`);
  kick.title = `Kick ${who} out of ${room}`;
}

/** Lock/Unlock and Close room for `room`, in a `div.mod-tools` (made once per place). */
export function roomTools(room) {
  const tools = document.createElement("div");
  tools.className = "mod-tools";
  tools.dataset.room = room;
  tools.append(
    button("btn btn-quiet btn-small room-lock-toggle", "Lock", `Lock ${room}`, () =>
      actions?.lock(tools.dataset.room, !tools.hasAttribute("data-locked")),
    ),
    button("btn btn-quiet btn-small room-close", "Close room", `Close ${room}`, () => {
      if (tools.dataset.room) actions?.close(tools.dataset.room);
    }),
  );
  return tools;
}

/** Show `tools` for `room` in the state it is in. */
export function updateTools(tools, room, locked) {
  tools.dataset.room = room;
  tools.toggleAttribute("data-locked", locked);
  const toggle = tools.querySelector(".room-lock-toggle");
  toggle.textContent = locked ? "Unlock" : "Lock";
  toggle.setAttribute("aria-label", `${locked ? "Unlock" : "Lock"} ${room}`);
  tools.querySelector(".room-close").setAttribute("aria-label", `Close ${room}`);
}

// --- the kick dialog ------------------------------------------------------------

let dialog = null;

function kickDialog() {
  if (dialog) return dialog;
  dialog = document.createElement("dialog");
  dialog.id = "kick-dialog";
  dialog.className = "card kick-dialog";
  dialog.setAttribute("aria-labelledby", "kick-title");
  const form = document.createElement("form");
  form.method = "dialog";
  const title = document.createElement("h2");
  title.id = "kick-title";
  const field = document.createElement("div");
  field.className = "field";
  const label = document.createElement("label");
  label.htmlFor = "kick-reason";
  label.textContent = "Reason (optional, shown to them)";
  const reason = document.createElement("input");
  reason.id = "kick-reason";
  reason.name = "reason";
  reason.type = "text";
  reason.maxLength = 200;
  reason.autocomplete = "off";
  field.append(label, reason);
  const buttons = document.createElement("div");
  buttons.className = "kick-actions";
  const confirm = document.createElement("button");
  confirm.className = "btn btn-danger";
  confirm.id = "kick-confirm";
  confirm.value = "kick";
  confirm.textContent = "Kick";
  const cancel = document.createElement("button");
  cancel.className = "btn btn-quiet";
  cancel.value = "cancel";
  cancel.textContent = "Cancel";
  buttons.append(cancel, confirm);
  form.append(title, field, buttons);
  dialog.append(form);
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "kick" && actions) {
      actions.kick(dialog.dataset.room, dialog.dataset.participant, reason.value.trim());
    }
  });
  document.body.append(dialog);
  return dialog;
}

function askKick(room, participantId, who) {
  const box = kickDialog();
  box.dataset.room = room;
  box.dataset.participant = participantId;
  box.querySelector("#kick-title").textContent = `Kick ${who} out of ${room}?`;
  box.querySelector("#kick-reason").value = "";
  box.returnValue = "";
  box.showModal();
}
