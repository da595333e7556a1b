// Shared by every page: the API key (sessionStorage, sent as a Bearer header, never in a URL),
// API calls whose errors carry the API's own message, server-sent events, small DOM helpers.
"use strict";

const TG = (() => {
  const KEY = "tunegraph.api-key";
  const keysRequired = document.body.dataset.keysRequired === "true";

  class APIError extends Error {
    constructor(status, message, code, retryAfter, param) {
      super(message);
      this.status = status;
      this.code = code;
      this.param = param || null; // the request field the API names as the cause
      this.retryAfter = retryAfter || 1; // seconds, from a 429 or 503 answer
    }
  }

  function key() {
    return sessionStorage.getItem(KEY);
  }

  function headers(extra) {
    const h = new Headers(extra || {});
    const k = key();
    if (k) h.set("Authorization", `Bearer ${k}`);
    return h;
  }

  // The error envelope's message ({"error": {"message": ...}}), or the status line.
  async function failure(response) {
    let message = `${response.status} ${response.statusText}`;
    let code = null;
    let param = null;
    try {
      const body = await response.json();
      if (body && body.error) {
        ({ message, code, param } = body.error);
      }
    } catch (_) {
      // not JSON: keep the status line
    }
    if (response.status === 401) askForKey(message);
    const retryAfter = Number(response.headers.get("Retry-After"));
    return new APIError(response.status, message, code, retryAfter, param);
  }

  // fetch() under the key; resolves to the Response when it is 2xx, else throws APIError.
  async function request(path, options = {}) {
    const response = await fetch(path, { ...options, headers: headers(options.headers) });
    if (!response.ok) throw await failure(response);
    return response;
  }

  async function json(path, options) {
    return (await request(path, options)).json();
  }

  // A server-sent-events body's `data:` objects as they arrive, until `data: [DONE]` or its end.
  async function* events(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data: "))
          .map((l) => l.slice(6)).join("\n");
        if (data === "[DONE]") return;
        if (data) yield JSON.parse(data);
      }
    }
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // A manual passage: its id, opening to its text.
  function passage(id, text, anchor) {
    return el("details", { class: "passage", id: anchor },
      el("summary", {}, el("code", { text: id })), el("blockquote", { text }));
  }

  function showError(message, target) {
    const box = target || document.getElementById("page-error");
    box.textContent = message;
    box.hidden = !message;
  }

  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const state = document.getElementById("key-state");
  const forget = document.getElementById("key-forget");

  function renderKey(message) {
    form.hidden = !keysRequired && !message;
    forget.hidden = !key();
    state.textContent = message || (key() ? "Key in use for this tab." : "Enter your API key.");
  }

  function askForKey(message) {
    renderKey(`${message} Enter a valid API key.`);
    input.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    renderKey();
    showError("");
    document.dispatchEvent(new Event("tunegraph:key"));
  });
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    renderKey();
  });
  renderKey();

  return { APIError, request, json, events, el, passage, showError, headers, failure };
})();
