// Chat: one question to every chat mode (/v1/models), each answer streamed (SSE) into its column.
// The server's text model queue is short: two modes are asked at once, and a 503 answer (full
// queue) is retried after its Retry-After, a few times at most.
"use strict";

(() => {
  const { el } = TG;
  const form = document.getElementById("chat-form");
  const status = document.getElementById("chat-status");
  const answers = document.getElementById("answers");
  const AT_ONCE = 2;
  const RETRIES = 5;
  let modes = [];

  async function loadModes() {
    try {
      const body = await TG.json("/v1/models");
      modes = body.data.map((m) => m.id).filter((id) => !id.startsWith("assessment-"));
      answers.replaceChildren(...modes.map((mode) => el("section",
        { class: "column", "data-mode": mode, "aria-labelledby": `h-${mode}` },
        el("h2", { id: `h-${mode}`, text: mode }),
        el("p", { class: "answer", "aria-live": "polite" }),
        el("p", { class: "meta" }))));
    } catch (error) {
      TG.showError(error.message);
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Reads the SSE body: `data: {...}` events until `data: [DONE]`.
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

  async function ask(mode, question) {
    const column = answers.querySelector(`[data-mode="${CSS.escape(mode)}"]`);
    const answer = column.querySelector(".answer");
    const meta = column.querySelector(".meta");
    answer.textContent = "";
    answer.classList.remove("error");
    meta.textContent = "Waiting…";
    const body = JSON.stringify({ model: mode, stream: true, stream_options: { include_usage: true },
      messages: [{ role: "user", content: question }] });
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await TG.request("/v1/chat/completions", {
          method: "POST", body, headers: { "Content-Type": "application/json" } });
        meta.textContent = "Answering…";
        for await (const chunk of events(response)) {
          if (chunk.error) throw new TG.APIError(500, chunk.error.message, chunk.error.code);
          for (const choice of chunk.choices) answer.textContent += choice.delta.content || "";
          if (chunk.usage) {
            const sources = (chunk.tunegraph || {}).sources || [];
            const tokens = chunk.usage.completion_tokens;
            meta.textContent = `${tokens} token${tokens === 1 ? "" : "s"}` +
              (sources.length ? ` · sources: ${sources.join(", ")}` : "");
          }
        }
        if (meta.textContent === "Answering…") meta.textContent = "";
        return;
      } catch (error) {
        if (error.status === 503 && error.code === "server_overloaded" && attempt < RETRIES) {
          meta.textContent = "Queue full, retrying…";
          await sleep(error.retryAfter * 1000);
          continue;
        }
        answer.classList.add("error");
        answer.textContent = error.message;
        meta.textContent = "";
        return;
      }
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    TG.showError("");
    if (!modes.length) await loadModes();
    const question = form.elements.question.value.trim();
    if (!question || !modes.length) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    status.textContent = "Asking…";
    const waiting = [...modes];
    const worker = async () => {
      while (waiting.length) await ask(waiting.shift(), question);
    };
    await Promise.all(Array.from({ length: AT_ONCE }, worker));
    status.textContent = "All modes answered.";
    button.disabled = false;
  });

  document.addEventListener("tunegraph:key", loadModes);
  loadModes();
})();
