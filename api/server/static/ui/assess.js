// Assess: photos and an optional claim to POST /v1/assessments with stream=true; each approach
// fills its column when its event arrives, and what the two agree on (the `agreement` event, the
// server's comparison) is marked once both are in. A refused photo's error shows beside it.
"use strict";

(() => {
  const { el } = TG;
  const form = document.getElementById("assess-form");
  const images = document.getElementById("images");
  const chosen = document.getElementById("chosen");
  const status = document.getElementById("assess-status");
  const results = document.getElementById("results");
  const agreementLine = document.getElementById("agreement");
  const LABELS = { finetuned: "Fine-tuned", agentic: "Agentic" };
  const CLAIM_FIELDS = ["policy_id", "vin", "incident_date", "description", "claimed_amount"];
  let photos = []; // the chosen files: { file, url (object URL), error (its message's slot) }

  const words = (value) => value.replaceAll("_", " ");

  function choose() {
    for (const photo of photos) URL.revokeObjectURL(photo.url);
    results.replaceChildren(); // results of other photos would show these beside them
    agreementLine.hidden = true;
    photos = [...images.files].map((file) => ({
      file, url: URL.createObjectURL(file),
      error: el("p", { class: "error", role: "alert", hidden: true }),
    }));
    chosen.replaceChildren(...photos.map((photo) => el("li", { "data-file": photo.file.name },
      el("img", { class: "thumb", src: photo.url, alt: "" }),
      el("span", { text: photo.file.name }), photo.error)));
  }

  // An upload refused by the API names its file first ("cut.jpg: ...", or "img.jpg (image 2):
  // ..." when several files share the name): shown beside that file.
  function showFileError(error) {
    if (error.param !== "images") return false;
    const photo = photos.find((p, i) => error.message.startsWith(`${p.file.name} (image ${i + 1}): `))
      || photos.find((p) => error.message.startsWith(`${p.file.name}: `));
    if (!photo) return false;
    photo.error.textContent = error.message;
    photo.error.hidden = false;
    return true;
  }

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

  // `agree` marks a value both approaches gave; the tag says so for screen readers too.
  function mark(node, agree) {
    if (agree === undefined) return node;
    node.classList.add(agree ? "agree" : "differ");
    node.append(el("span", { class: "tag", text: agree ? " (both agree)" : " (differs)" }));
    return node;
  }

  function shared(agreement, field) {
    return agreement ? new Set(agreement[field].shared) : null;
  }

  // Each photo with the approach's boxes: a box is in the pixels of the photo its damage's
  // `image` names; a box without one is drawn only when a single photo was assessed.
  function photoFigures(name, assessment, sent) {
    const boxed = assessment.damages.filter((d) => d.bbox);
    const unplaced = boxed.filter((d) => d.image == null || d.image >= sent.length);
    const figures = sent.map((photo, index) => {
      const img = el("img", { src: photo.url, alt: `Photo ${index + 1}: ${photo.file.name}` });
      const frame = el("div", { class: "photo" }, img);
      const boxes = boxed.filter((d) => d.image === index ||
        (sent.length === 1 && unplaced.includes(d)));
      const place = () => {
        const [w, h] = [img.naturalWidth, img.naturalHeight];
        boxes.forEach((d, i) => {
          const [x, y, bw, bh] = d.bbox;
          const box = frame.children[i + 1];
          // positions through the CSSOM: the policy forbids style attributes, not this
          Object.assign(box.style, { left: `${(100 * x) / w}%`, top: `${(100 * y) / h}%`,
            width: `${(100 * bw) / w}%`, height: `${(100 * bh) / h}%` });
        });
      };
      frame.append(...boxes.map((d) => el("span", { class: "box", "data-bbox": d.bbox.join(",") },
        el("span", { class: "box-label", text: `${words(d.part)} ${words(d.type)}` }))));
      if (img.complete && img.naturalWidth) place();
      else img.addEventListener("load", place, { once: true });
      const caption = boxes.length ? `${photo.file.name}: ${boxes.length} box` +
        (boxes.length === 1 ? "" : "es") : photo.file.name;
      return el("figure", { class: "figure" }, frame, el("figcaption", { text: caption }));
    });
    const note = sent.length > 1 && unplaced.length ? el("p", { class: "note",
      text: `${unplaced.length} box${unplaced.length === 1 ? "" : "es"} not drawn: the ` +
        "answer does not say which photo they are in." }) : null;
    return [el("div", { class: "photos", "aria-label": `Photos, ${LABELS[name]}`,
      role: "group" }, figures), note];
  }

  // A damage both approaches found, one whose severity they state differently, or one only
  // this approach found (the server's `agreement.damages`).
  function damagesTable(assessment, agreement) {
    const both = shared(agreement, "damages");
    const severityDiffers = new Set(agreement ? agreement.damages.severity_differs || [] : []);
    const rows = assessment.damages.map((d) => {
      const row = el("tr", {}, el("td", { text: words(d.part) }), el("td", { text: d.type }),
        el("td", { text: d.severity }), el("td", { text: `${Math.round(d.confidence * 100)} %` }));
      const key = `${d.part}:${d.type}`;
      if (both && severityDiffers.has(key)) {
        row.firstChild.classList.add("differ");
        row.cells[2].classList.add("differ");
        row.firstChild.append(el("span", { class: "tag", text: " (both found; severity differs)" }));
      } else if (both) {
        row.firstChild.classList.add(both.has(key) ? "agree" : "differ");
        row.firstChild.append(el("span", { class: "tag",
          text: both.has(key) ? " (both agree)" : " (only this approach)" }));
      }
      return row;
    });
    if (!rows.length) return el("p", { text: "No damage found." });
    return el("table", { class: "damages" },
      el("caption", { text: "Damages" }),
      el("thead", {}, el("tr", {}, ["Part", "Type", "Severity", "Confidence"].map(
        (h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows));
  }

  // The cited manual passages, each opening to its text; a recommendation's reference links to
  // its passage.
  function repairs(name, outcome, agreement) {
    const assessment = outcome.assessment;
    const both = shared(agreement, "repair_actions");
    const cited = assessment.evidence.filter((e) => e.source === "manual").map((e) => e.id);
    const anchors = new Map(cited.map((id, i) => [id, `passage-${name}-${i}`]));
    const items = assessment.repair_recommendations.map((r) => {
      let reference = null;
      if (r.reference) {
        const anchor = anchors.get(r.reference);
        reference = anchor && outcome.passages[r.reference] !== undefined
          ? el("a", { class: "ref", href: `#${anchor}`, text: r.reference })
          : el("span", { text: r.reference });
      }
      const item = el("li", {}, `${words(r.part)}: ${r.action}`,
        reference ? el("span", { class: "cite" }, " — ", reference) : null);
      if (both) mark(item, both.has(`${r.part}:${r.action}`));
      return item;
    });
    const passages = cited.map((id) => {
      const text = outcome.passages[id];
      if (text === undefined) return el("li", {}, el("code", { text: id }));
      return el("li", {}, TG.passage(id, text, anchors.get(id)));
    });
    return [
      el("h3", { text: "Repair recommendations" }),
      items.length ? el("ul", { class: "repairs" }, items) : el("p", { text: "None." }),
      passages.length ? [el("h4", { text: "Cited manual passages" }),
        el("ul", { class: "cited" }, passages)] : null,
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

  // One approach's column: waiting, its error, or its assessment (marked once `agreement` is in).
  function column(name, outcome, agreement, sent) {
    const section = el("section", { class: "column", "data-approach": name,
      "aria-labelledby": `h-${name}`, "aria-busy": outcome ? null : "true" },
      el("h2", { id: `h-${name}`, text: LABELS[name] }));
    if (!outcome) {
      section.append(el("p", { class: "pending", text: "Assessing…" }));
      return section;
    }
    if (outcome.type === "error") {
      section.append(el("p", { class: "error", role: "alert", text: outcome.error.message }));
      return section;
    }
    const a = outcome.assessment;
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
      photoFigures(name, a, sent),
      el("dl", { class: "summary" },
        el("dt", { text: "Overall severity" }), severity,
        el("dt", { text: "Cost range" }), cost,
        el("dt", { text: "Fraud level" }), fraud),
      a.fraud.signals.length ? el("ul", { class: "signals", "aria-label": "Fraud signals" },
        a.fraud.signals.map((s) => el("li", { text: s }))) : null,
      damagesTable(a, agreement),
      repairs(name, outcome, agreement),
      a.report ? [el("h3", { text: "Report" }), el("p", { class: "report", text: a.report })] : null,
      outcome.notes.map((n) => el("p", { class: "note", text: `Note: ${n}` })),
      timings(a, outcome.ms),
    ];
    section.append(...parts.flat(Infinity).filter((part) => part));
    return section;
  }

  // One submission's view: its photos, the outcomes in so far, the agreement once both are in.
  function view(names, sent) {
    const outcomes = {};
    let agreement = null;
    const render = (name) => {
      const old = results.querySelector(`[data-approach="${name}"]`);
      const fresh = column(name, outcomes[name], agreement, sent);
      if (old) old.replaceWith(fresh);
      else results.append(fresh);
    };
    results.replaceChildren();
    names.forEach(render);
    return {
      outcome(event) {
        outcomes[event.approach] = event;
        render(event.approach);
      },
      agree(value) {
        agreement = value;
        names.forEach(render);
        agreementLine.textContent =
          `The approaches agree on ${value.agreed} of ${value.checked} checks.`;
        agreementLine.hidden = false;
      },
      // `done`: an approach without an event of its own shows the answer's error
      finish(done) {
        for (const name of names.filter((n) => !outcomes[n])) {
          this.outcome({ type: "error", approach: name, error: done.body.error });
        }
      },
    };
  }

  images.addEventListener("change", choose);

  // a recommendation's reference opens its passage's text and moves the focus there
  results.addEventListener("click", (event) => {
    const link = event.target.closest("a.ref");
    if (!link) return;
    event.preventDefault();
    const passage = document.getElementById(link.hash.slice(1));
    passage.open = true;
    passage.querySelector("summary").focus();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    TG.showError("");
    for (const photo of photos) photo.error.hidden = true;
    const max = Number(images.dataset.max);
    if (photos.length > max) {
      TG.showError(`${photos.length} photos chosen; at most ${max} per assessment.`);
      return;
    }
    const approach = form.elements.approach.value;
    const data = new FormData();
    for (const photo of photos) data.append("images", photo.file, photo.file.name);
    data.append("approach", approach);
    data.append("stream", "true");
    const claimJson = claim();
    if (claimJson) data.append("claim", claimJson);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    agreementLine.hidden = true;
    status.textContent = "Assessing…";
    let shown = null;
    try {
      const response = await TG.request("/v1/assessments", { method: "POST", body: data });
      shown = view(approach === "both" ? ["finetuned", "agentic"] : [approach], [...photos]);
      let finished = false;
      for await (const message of TG.events(response)) {
        if (message.type === "assessment" || message.type === "error") shown.outcome(message);
        else if (message.type === "agreement") shown.agree(message.agreement);
        else if (message.type === "done") {
          finished = true;
          shown.finish(message);
        }
      }
      if (!finished) throw new Error("The connection closed before the assessment finished.");
      status.textContent = "Done.";
    } catch (error) {
      if (!shown) results.replaceChildren(); // else keep what arrived before the stream broke
      status.textContent = showFileError(error) ? "A photo was refused: see its message." : "";
      if (status.textContent === "") TG.showError(error.message);
    } finally {
      button.disabled = false;
    }
  });
})();
