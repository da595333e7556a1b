// Assess: photos and an optional claim to POST /v1/assessments; each approach in its column,
// with what the two agree on (the response's `agreement`) marked.
"use strict";

(() => {
  const { el } = TG;
  const form = document.getElementById("assess-form");
  const images = document.getElementById("images");
  const status = document.getElementById("assess-status");
  const results = document.getElementById("results");
  const agreementLine = document.getElementById("agreement");
  const LABELS = { finetuned: "Fine-tuned", agentic: "Agentic" };
  const CLAIM_FIELDS = ["policy_id", "vin", "incident_date", "description", "claimed_amount"];

  function claim() {
    const out = {};
    for (const name of CLAIM_FIELDS) {
      const value = form.elements[name].value.trim();
      if (value) out[name] = name === "claimed_amount" ? Number(value) : value;
    }
    return Object.keys(out).length ? JSON.stringify(out) : null;
  }

  function money(value, currency) {
    return `${Number(value).toLocaleString("en-US", { maximumFractionDigits: 0 })} ${currency}`;
  }

  // `agree` marks a value both approaches gave; `title` says so for screen readers too.
  function mark(node, agree) {
    if (agree === undefined) return node;
    node.classList.add(agree ? "agree" : "differ");
    node.append(el("span", { class: "tag", text: agree ? " (both agree)" : " (differs)" }));
    return node;
  }

  function shared(agreement, field) {
    return agreement ? new Set(agreement[field].shared) : null;
  }

  function damagesTable(assessment, agreement) {
    const both = shared(agreement, "damages");
    const rows = assessment.damages.map((d) => {
      const row = el("tr", {}, el("td", { text: d.part.replaceAll("_", " ") }), el("td", { text: d.type }),
        el("td", { text: d.severity }), el("td", { text: `${Math.round(d.confidence * 100)} %` }));
      if (both) mark(row.firstChild, both.has(`${d.part}:${d.type}`));
      return row;
    });
    if (!rows.length) return el("p", { text: "No damage found." });
    return el("table", { class: "damages" },
      el("caption", { text: "Damages" }),
      el("thead", {}, el("tr", {}, ["Part", "Type", "Severity", "Confidence"].map(
        (h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows));
  }

  function repairs(assessment, agreement) {
    const both = shared(agreement, "repair_actions");
    const items = assessment.repair_recommendations.map((r) => {
      const item = el("li", {}, `${r.part.replaceAll("_", " ")}: ${r.action}`,
        r.reference ? el("span", { class: "cite", text: ` — ${r.reference}` }) : null);
      if (both) mark(item, both.has(`${r.part}:${r.action}`));
      return item;
    });
    const cited = assessment.evidence.filter((e) => e.source === "manual").map((e) => e.id);
    return [
      el("h3", { text: "Repair recommendations" }),
      items.length ? el("ul", {}, items) : el("p", { text: "None." }),
      cited.length ? el("p", { class: "cite" }, "Cited manual passages: ",
        cited.map((id, i) => [i ? ", " : "", el("code", { text: id })])) : null,
    ];
  }

  function timings(assessment, total) {
    const entries = Object.entries(assessment.timings_ms);
    const longest = Math.max(1, ...entries.map(([, ms]) => ms));
    return [
      el("h3", { text: `Timings (${total} ms for this approach)` }),
      el("dl", { class: "timings" }, entries.map(([node, ms]) => [
        el("dt", { text: node }),
        el("dd", {}, el("progress", { max: longest, value: ms, "aria-label": `${node} ${ms} ms` }),
          ` ${ms} ms`),
      ])),
    ];
  }

  function column(name, body) {
    const a = body.assessments[name];
    const agreement = body.agreement;
    const section = el("section", { class: "column", "data-approach": name,
      "aria-labelledby": `h-${name}` }, el("h2", { id: `h-${name}`, text: LABELS[name] }));
    if (!a) {
      const error = body.errors[name];
      section.append(el("p", { class: "error", role: "alert", text: error ? error.message : "No result." }));
      return section;
    }
    const c = a.cost_estimate;
    const severity = el("dd", { class: "severity", text: a.overall_severity });
    const cost = el("dd", { class: "cost", text: `${money(c.min, c.currency)} – ${money(c.max, c.currency)}` });
    const fraud = el("dd", { class: "fraud", text: `${a.fraud.level} (risk ${a.fraud.risk.toFixed(2)})` });
    if (agreement) {
      mark(severity, agreement.overall_severity.equal);
      mark(cost, agreement.cost_estimate.overlap);
      mark(fraud, agreement.fraud_level.equal);
    }
    const parts = [
      el("dl", { class: "summary" },
        el("dt", { text: "Overall severity" }), severity,
        el("dt", { text: "Cost range" }), cost,
        el("dt", { text: "Fraud level" }), fraud),
      a.fraud.signals.length ? el("ul", { class: "signals", "aria-label": "Fraud signals" },
        a.fraud.signals.map((s) => el("li", { text: s }))) : null,
      damagesTable(a, agreement),
      repairs(a, agreement),
      a.report ? [el("h3", { text: "Report" }), el("p", { class: "report", text: a.report })] : null,
      (body.notes[name] || []).map((n) => el("p", { class: "note", text: `Note: ${n}` })),
      timings(a, body.timings_ms[name]),
    ];
    section.append(...parts.flat(Infinity).filter((part) => part));
    return section;
  }

  function show(body) {
    const names = body.approach === "both" ? ["finetuned", "agentic"] : [body.approach];
    results.replaceChildren(...names.map((name) => column(name, body)));
    const a = body.agreement;
    agreementLine.hidden = !a;
    if (a) agreementLine.textContent = `The approaches agree on ${a.agreed} of ${a.checked} checks.`;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    TG.showError("");
    const max = Number(images.dataset.max);
    if (images.files.length > max) {
      TG.showError(`${images.files.length} photos chosen; at most ${max} per assessment.`);
      return;
    }
    const data = new FormData();
    for (const file of images.files) data.append("images", file, file.name);
    data.append("approach", form.elements.approach.value);
    const claimJson = claim();
    if (claimJson) data.append("claim", claimJson);
    status.textContent = "Assessing…";
    form.querySelector("button[type=submit]").disabled = true;
    try {
      show(await TG.json("/v1/assessments", { method: "POST", body: data }));
      status.textContent = "Done.";
    } catch (error) {
      results.replaceChildren();
      agreementLine.hidden = true;
      status.textContent = "";
      TG.showError(error.message);
    } finally {
      form.querySelector("button[type=submit]").disabled = false;
    }
  });
})();
