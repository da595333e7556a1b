// Reports: the caller's succeeded compare jobs; a report is fetched with the key and shown in a
// sandboxed frame (no scripts, its own opaque origin), or saved as a file.
"use strict";

(() => {
  const { el } = TG;
  const list = document.getElementById("reports");
  const empty = document.getElementById("reports-empty");
  const view = document.getElementById("report-view");
  const frame = document.getElementById("report-frame");
  const title = document.getElementById("report-title");
  const FORMATS = { html: "HTML", md: "Markdown", json: "JSON" };
  let shown = null; // the object URL in the frame

  async function blob(job, format) {
    const response = await TG.request(
      `/v1/jobs/${encodeURIComponent(job.id)}/report?format=${format}`);
    return response.blob();
  }

  const name = (job) => job.params.name || job.id;

  async function open(job) {
    TG.showError("");
    try {
      const html = await blob(job, "html");
      if (shown) URL.revokeObjectURL(shown);
      shown = URL.createObjectURL(new Blob([html], { type: "text/html" }));
      frame.src = shown;
      title.textContent = `Report: ${name(job)}`;
      view.hidden = false;
      title.scrollIntoView();
    } catch (error) {
      TG.showError(error.message);
    }
  }

  async function save(job, format) {
    TG.showError("");
    try {
      const url = URL.createObjectURL(await blob(job, format));
      const link = el("a", { href: url, download: `${name(job)}-report.${format}` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      TG.showError(error.message);
    }
  }

  function item(job) {
    const finished = new Date(job.finished_at * 1000).toLocaleString();
    const openButton = el("button", { type: "button", text: "Open",
      "aria-label": `Open report ${name(job)}` });
    openButton.addEventListener("click", () => open(job));
    const saves = Object.entries(FORMATS).map(([format, label]) => {
      const button = el("button", { type: "button", class: "secondary", text: `Save ${label}`,
        "aria-label": `Save report ${name(job)} as ${label}` });
      button.addEventListener("click", () => save(job, format));
      return button;
    });
    return el("li", { "data-job": job.id }, el("strong", { text: name(job) }),
      ` (${job.id}, finished ${finished}) `, openButton, saves);
  }

  async function load() {
    TG.showError("");
    try {
      const body = await TG.json("/v1/jobs?state=succeeded&limit=500");
      const jobs = body.data.filter((job) => job.kind === "compare");
      list.replaceChildren(...jobs.map(item));
      empty.hidden = jobs.length > 0;
    } catch (error) {
      TG.showError(error.message);
    }
  }

  document.addEventListener("tunegraph:key", load);
  load();
})();
