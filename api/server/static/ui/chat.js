// Chat: one question to every chat mode (/v1/models), each answer streamed (SSE) into its column,
// then (from the usage chunk's `tunegraph` field) the passages retrieval used and the tools the
// agent called, each passage opening to its text.
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
        el("p", { class: "meta" }),
        el("div", { class: "used" }))));
    } catch (error) {
      TG.showError(error.message);
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function passages(list) {
    return el("ul", { class: "passages" }, list.map((p) => el("li", {}, TG.passage(p.id, p.text))));
  }

  // A tool call as the agent made it, and what it found: passages, or the tool's own answer.
  function toolCall(call) {
    const args = Object.entries(call.arguments).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
    const found = call.passages.length;
    const outcome = call.status === "error" ? " failed: " :
      found ? ` found ${found} passage${found === 1 ? "" : "s"}` : " found nothing: ";
    return el("li", { class: call.status === "error" ? "error" : null },
      el("code", { text: `${call.name}(${args.join(", ")})` }), outcome,
      found ? passages(call.passages) : el("span", { class: "message", text: call.message }));
  }

  function used(details) {
    return [
      details.passages.length ? [el("h3", { text: "Passages used" }),
        passages(details.passages)] : null,
      details.tool_calls.length ? [el("h3", { text: "Tools called" }),
        el("ol", { class: "tools" }, details.tool_calls.map(toolCall))] : null,
    ].flat().filter((part) => part);
  }

  async function ask(mode, question) {
    const column = answers.querySelector(`[data-mode="${CSS.escape(mode)}"]`);
    const answer = column.querySelector(".answer");
    const meta = column.querySelector(".meta");
    const usedBox = column.querySelector(".used");
    usedBox.replaceChildren();
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
        for await (const chunk of TG.events(response)) {
          if (chunk.error) throw new TG.APIError(500, chunk.error.message, chunk.error.code);
          for (const choice of chunk.choices) answer.textContent += choice.delta.content || "";
          if (chunk.usage) {
            const tokens = chunk.usage.completion_tokens;
            meta.textContent = `${tokens} token${tokens === 1 ? "" : "s"}`;
            usedBox.replaceChildren(...used(chunk.tunegraph));
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
