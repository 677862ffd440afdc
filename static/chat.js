// Room chat in the call view: the messages of your room, a box to send one, and
// the number of messages you have not seen while the panel is closed.
//
// Protocol: docs/protocol.md (`chat`, `chat_history`). Messages are user text:
// every bit of them (text, nickname, user name) goes through textContent, never
// HTML, and links stay plain text. The list is a `log` (aria-live polite), so
// screen readers read new messages without moving focus.

const MAX_CHARS = 500; // code points, as the server counts them

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** "Alice" or, when the nickname is not the user name, "Alice (bob)" (see docs/protocol.md). */
function senderName(from) {
  return from.nickname === from.user ? from.nickname : `${from.nickname} (${from.user})`;
}

function timeOf(at) {
  const when = new Date(at);
  return Number.isNaN(when.getTime())
    ? ""
    : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export class ChatPanel {
  #send;
  #room = null;
  #selfId = null;
  #unread = 0;
  #messages = [];

  /**
   * @param {object} options
   * @param {HTMLElement} options.host where the panel goes (the call view's side column)
   * @param {HTMLElement} options.controls the call controls, which get the Chat button
   * @param {HTMLElement|null} options.before the control the Chat button goes before
   * @param {(text: string) => boolean} options.send sends a `chat`; false when offline
   */
  constructor({ host, controls, before, send }) {
    this.#send = send;
    this.toggle = el("button", "btn chat-toggle");
    this.toggle.type = "button";
    this.toggle.id = "chat-toggle";
    this.toggle.setAttribute("aria-controls", "chat-panel");
    this.toggle.setAttribute("aria-expanded", "false");
    this.toggle.append(el("span", "", "Chat"));
    this.badge = el("span", "chat-badge");
    this.badge.hidden = true;
    this.toggle.append(this.badge);
    this.toggle.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    controls.insertBefore(this.toggle, before?.parentNode === controls ? before : null);

    this.panel = el("section", "chat-panel");
    this.panel.id = "chat-panel";
    this.panel.hidden = true;
    this.panel.setAttribute("aria-labelledby", "chat-title");
    const head = el("div", "chat-head");
    const title = el("h2", "", "Chat");
    title.id = "chat-title";
    const closer = el("button", "btn btn-quiet btn-small", "Close");
    closer.type = "button";
    closer.setAttribute("aria-label", "Close the chat");
    closer.addEventListener("click", () => {
      this.close();
      this.toggle.focus();
    });
    head.append(title, closer);

    this.list = el("ol", "chat-log");
    this.list.id = "chat-log";
    this.list.setAttribute("role", "log");
    this.list.setAttribute("aria-live", "polite");
    this.list.setAttribute("aria-labelledby", "chat-title");
    this.list.tabIndex = 0; // scrollable by keyboard
    this.empty = el("p", "chat-empty", "No messages yet. Say hello!");

    this.form = el("form", "chat-form");
    this.form.noValidate = true;
    const label = el("label", "visually-hidden", "Message to everyone in this room");
    label.htmlFor = "chat-input";
    this.input = el("textarea", "chat-input");
    this.input.id = "chat-input";
    this.input.rows = 2;
    this.input.maxLength = MAX_CHARS * 2; // UTF-16 units; the server counts characters
    this.input.placeholder = "Message everyone here";
    this.input.title = "Enter sends; Shift+Enter starts a new line.";
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    const sendButton = el("button", "btn btn-primary", "Send");
    sendButton.type = "submit";
    this.form.append(label, this.input, sendButton);
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.error = el("p", "chat-error");
    this.error.setAttribute("role", "alert");

    this.panel.append(head, this.list, this.empty, this.form, this.error);
    host.append(this.panel);
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  get unread() {
    return this.#unread;
  }

  /** The messages shown, oldest first, as the server sent them (for tests and debugging). */
  get messages() {
    return this.#messages.map((m) => ({ from: m.from.id, text: m.text, at: m.at }));
  }

  /** This page holds `selfId` in `room` (a `token` or `resumed`); a new room starts empty. */
  enter(room, selfId) {
    if (room !== this.#room) this.#replace([]);
    this.#room = room;
    this.#selfId = selfId;
  }

  /** Out of the call: nothing shown, nothing unread, the panel closed. */
  leave() {
    this.#room = null;
    this.#selfId = null;
    this.#replace([]);
    this.close();
    this.input.value = "";
  }

  /** `chat_history`: the room's last messages replace those shown. */
  history(msg) {
    if (msg.room !== this.#room) return;
    const shown = new Set(this.#messages.map(key));
    const fresh = msg.messages.filter((m) => !shown.has(key(m)) && m.from.id !== this.#selfId);
    this.#replace(msg.messages);
    if (!this.isOpen) this.#setUnread(this.#unread + fresh.length);
  }

  /** A `chat` event of your room. */
  add(msg) {
    if (msg.room !== this.#room) return;
    this.#messages.push(msg);
    const atBottom = this.#atBottom();
    this.list.append(this.#item(msg));
    this.empty.hidden = true;
    if (atBottom || msg.from.id === this.#selfId) this.list.scrollTop = this.list.scrollHeight;
    if (!this.isOpen && msg.from.id !== this.#selfId) this.#setUnread(this.#unread + 1);
  }

  /** The server refused a message: say why, under the box. */
  refused(msg) {
    this.error.textContent = msg.message;
  }

  open() {
    this.panel.hidden = false;
    this.toggle.setAttribute("aria-expanded", "true");
    this.#setUnread(0);
    this.list.scrollTop = this.list.scrollHeight;
    this.input.focus();
  }

  close() {
    this.panel.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
  }

  #submit() {
    const text = this.input.value.trim();
    if (!text) return;
    if ([...text].length > MAX_CHARS) {
      this.error.textContent = `Messages are at most ${MAX_CHARS} characters.`;
      return;
    }
    if (!this.#send(text)) {
      this.error.textContent = "Not connected to the lobby right now; your message was not sent.";
      return;
    }
    this.error.textContent = "";
    this.input.value = "";
  }

  #replace(messages) {
    this.#messages = [...messages];
    this.list.replaceChildren(...messages.map((m) => this.#item(m)));
    this.empty.hidden = messages.length > 0;
    this.list.scrollTop = this.list.scrollHeight;
    if (!messages.length) this.#setUnread(0);
  }

  #item(msg) {
    const item = el("li", "chat-message");
    if (msg.from.id === this.#selfId) item.dataset.self = "true";
    const meta = el("div", "chat-meta");
    meta.append(el("span", "chat-name", senderName(msg.from)));
    const time = el("time", "chat-time", timeOf(msg.at));
    time.dateTime = msg.at;
    meta.append(time);
    // textContent: markup and links stay the characters they are.
    item.append(meta, el("p", "chat-text", msg.text));
    return item;
  }

  #atBottom() {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 8;
  }

  #setUnread(count) {
    this.#unread = count;
    this.badge.hidden = count === 0;
    this.badge.textContent = count > 99 ? "99+" : String(count);
    this.toggle.setAttribute("aria-label", count ? `Chat, ${count} unread` : "Chat");
  }
}

function key(m) {
  return `${m.at}|${m.from.id}|${m.text}`;
}
