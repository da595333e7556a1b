// Jobs: submit one, and the caller's jobs polled every second (progress, log tail, cancel).
// Rows are updated in place so that an open log or the keyboard focus survives each poll.
"use strict";

(() => {
  const { el } = TG;
  const form = document.getElementById("job-form");
  const status = document.getElementById("job-status");
  const tbody = document.querySelector("#jobs tbody");
  const empty = document.getElementById("jobs-empty");
  const ACTIVE = new Set(["queued", "running"]);
  const rows = new Map();

  async function loadKinds() {
    try {
      const spec = await TG.json("/openapi.json");
      const kinds = spec.components.schemas.JobRequest.properties.kind.enum || [];
      document.getElementById("job-kinds").replaceChildren(
        ...kinds.map((k) => el("option", { value: k })));
    } catch (_) {
      // the kind stays free text
    }
  }

  function row(job) {
    const cancel = el("button", { type: "button", class: "cancel", text: "Cancel",
      "aria-label": `Cancel job ${job.id}` });
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await TG.json(`/v1/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
        await refresh();
      } catch (error) {
        TG.showError(error.message);
        cancel.disabled = false; // a refused cancel (429, 503) may be tried again
      }
    });
    const tr = el("tr", { "data-job": job.id },
      el("td", {}, el("code", { text: job.id })),
      el("td", { text: job.kind }),
      el("td", { class: "state" }),
      el("td", {}, el("progress", { max: 1, value: 0, "aria-label": `Progress of job ${job.id}` }),
        el("span", { class: "percent" })),
      el("td", {}, el("details", {}, el("summary", { text: "Log" }), el("pre", { class: "log" }))),
      el("td", {}, cancel));
    return tr;
  }

  function update(tr, job) {
    tr.querySelector(".state").textContent = job.error ? `${job.state}: ${job.error}` : job.state;
    tr.querySelector("progress").value = job.progress;
    tr.querySelector(".percent").textContent = ` ${Math.round(job.progress * 100)} %`;
    tr.querySelector(".log").textContent = job.log.join("\n") || "(empty)";
    tr.querySelector(".cancel").hidden = !ACTIVE.has(job.state) || job.cancel_requested;
  }

  async function refresh() {
    const body = await TG.json("/v1/jobs?limit=50");
    const seen = new Set();
    body.data.forEach((job, index) => {
      seen.add(job.id);
      let tr = rows.get(job.id);
      if (!tr) rows.set(job.id, (tr = row(job)));
      if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
      update(tr, job);
    });
    for (const [id, tr] of rows) {
      if (!seen.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    empty.hidden = body.data.length > 0;
  }

  let polling = false;

  async function poll() {
    if (polling) return;
    polling = true;
    for (;;) {
      let wait = 1000;
      try {
        await refresh();
      } catch (error) {
        TG.showError(error.message);
        if (error.status === 401) break; // resumes once a key is entered
        if (error.status === 429 || error.status === 503) wait = error.retryAfter * 1000;
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    polling = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    TG.showError("");
    let params;
    try {
      params = JSON.parse(form.elements.params.value || "{}");
    } catch (error) {
      TG.showError(`Parameters: not JSON (${error.message})`);
      return;
    }
    try {
      const job = await TG.json("/v1/jobs", { method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ kind: form.elements.kind.value.trim(), params }) });
      status.textContent = `Submitted ${job.id}.`;
      await refresh();
    } catch (error) {
      TG.showError(error.message);
    }
  });

  document.addEventListener("tunegraph:key", poll);
  loadKinds();
  poll();
})();
