"""The comparison report: ``report.md``, a self-contained ``report.html`` (the plots of
:mod:`agents.compare.plots` embedded as data URLs) and ``report.json``.

Both documents are rendered from one list of blocks (headings, paragraphs, tables, images), so
they always say the same thing.

Over 400 lines on purpose: most of it is the report's wording, one builder per section with the
paragraph that explains its table, read in the report's order; the two renderers are 50 lines.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.compare.plots import write_plots

if TYPE_CHECKING:
    from agents.compare.records import Comparison
    from finetune.bootstrap import Verdict

LATENCY_KEYS = ("mean", "p50", "p90", "p95", "p99", "min", "max", "std")


@dataclass(frozen=True)
class Block:
    kind: str  # h1 | h2 | h3 | p | table | img
    text: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def write_report(comparison: Comparison, out: Path, title: str) -> dict[str, Path]:
    """Write the plots and the three reports to ``out``; returns them by name."""
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(comparison, out)
    blocks = _blocks(comparison, title, plots)
    files = {
        "report.md": out / "report.md",
        "report.html": out / "report.html",
        "report.json": out / "report.json",
    }
    files["report.md"].write_text(to_markdown(blocks), "utf-8")
    files["report.html"].write_text(to_html(blocks, out, title), "utf-8")
    data = {"title": title, **comparison.to_dict(), "plots": sorted(p.name for p in plots.values())}
    files["report.json"].write_text(json.dumps(data, indent=2, default=str), "utf-8")
    return {**files, **{p.name: p for p in plots.values()}}


def to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            lines += ["#" * int(b.kind[1]) + " " + b.text, ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind == "table":
            lines.append("| " + " | ".join(b.header) + " |")
            lines.append("|" + " --- |" * len(b.header))
            lines += ["| " + " | ".join(row) + " |" for row in b.rows]
            lines.append("")
        elif b.kind == "img":
            lines += [f"![{b.text}]({b.text})", ""]
    return "\n".join(lines)


def to_html(blocks: Sequence[Block], folder: Path, title: str) -> str:
    """One HTML file with everything inline: no external script, style or image."""
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in b.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "img":
            data = base64.b64encode((folder / b.text).read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(b.text)}" src="data:image/png;base64,{data}">')
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;display:block;margin:1em 0}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _verdict_rows(verdicts: Sequence[Verdict], names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    from agents.compare.verdicts import verdict_text

    rows = []
    for v in verdicts:
        margin = (
            "-" if v.best is None else f"{_fmt(v.margin)} [{_fmt(v.ci_low)}, {_fmt(v.ci_high)}]"
        )
        direction = "higher" if v.higher_is_better else "lower"
        rows.append(
            (
                f"{v.metric} ({direction} is better)",
                *(_fmt(v.values[n]) for n in names),
                margin,
                verdict_text(v),
            )
        )
    return tuple(rows)


def _sizes(c: Comparison) -> str:
    """What was compared, and how the calls were made."""
    approaches = sorted({*c.assessments, *c.frauds}, key=[*c.assessments, *c.frauds].index)
    kinds: dict[str, int] = {}
    for q in c.questions:
        kinds[q.kind] = kinds.get(q.kind, 0) + 1
    parts = [
        f"{len(c.photos)} held-out photos and {len(c.claims)} test claims "
        f"({sum(x.fraud for x in c.claims)} fraudulent; approaches: {', '.join(approaches)})",
        f"{len(c.questions)} held-out manual questions"
        + (f" ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})" if kinds else "")
        + f" asked in each service-chat mode ({', '.join(c.chats)})",
    ]
    calls = (
        "one call at a time"
        if c.concurrency == 1
        else f"{c.concurrency} calls of one approach or mode in flight at once (the text engine "
        "decodes them in one batch; the vision and damage models take one at a time), so a "
        "call's latency includes its wait for a turn, as a client of a busy server would see it"
    )
    return (
        f"{' and '.join(parts)}; {calls}. Margins are the best minus the runner-up (positive: "
        "the best is better) with a paired-bootstrap 95 % interval over the items; an interval "
        "that includes 0 reads 'no significant difference'."
    )


def _blocks(c: Comparison, title: str, plots: dict[str, Path]) -> list[Block]:
    approaches, modes = list(c.assessments), list(c.chats)
    blocks = [Block("h1", title), Block("p", _sizes(c)), Block("h2", "Verdict")]
    for task, names, label in (
        ("assessment", approaches, "Assessment"),
        ("fraud", list(c.frauds), "Fraud detection on the test claims"),
        ("chat", modes, "Service chat"),
    ):
        if c.verdicts.get(task) and names:
            blocks += [
                Block("h3", label),
                Block(
                    "table",
                    header=("metric", *names, "margin [95 % CI]", "verdict"),
                    rows=_verdict_rows(c.verdicts[task], names),
                ),
            ]
    if approaches:
        blocks += _assessment_blocks(c, approaches, plots)
    if c.frauds:
        blocks += _fraud_blocks(c)
    if modes:
        blocks += _chat_blocks(c, modes, plots)
    blocks += _latency_blocks(c, plots)
    blocks += _cost_blocks(c)
    fraud_rows = [(f"{n} (fraud)", v) for n, v in c.fraud_scores.items()]
    errors = [
        (name, message, str(count))
        for name, s in [*_labelled(c.assessment_scores, c.chat_scores), *fraud_rows]
        for message, count in s["errors"].items()
    ]
    if errors:
        blocks += [
            Block("h2", "Failures (most frequent per approach)"),
            Block("table", header=("approach", "error", "calls"), rows=tuple(errors)),
        ]
    return blocks


def _labelled(assessment: dict[str, Any], chat: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rows of both tasks, named apart (both have a ``finetuned``)."""
    return [(f"{n} (assessment)", v) for n, v in assessment.items()] + [
        (f"{n} (chat)", v) for n, v in chat.items()
    ]


def _assessment_blocks(c: Comparison, names: list[str], plots: dict[str, Path]) -> list[Block]:
    keys = [
        ("type_f1_micro", "type F1 micro"),
        ("type_f1_macro", "type F1 macro"),
        ("part_f1_micro", "part F1 micro"),
        ("pair_f1", "(part, type) F1"),
        ("severity_accuracy", "severity acc."),
        ("overall_severity_accuracy", "overall-severity acc."),
        ("cost_mae", "cost MAE"),
        ("failure_rate", "failed"),
    ]
    s = c.assessment_scores
    blocks = [
        Block("h2", "Assessment quality"),
        Block(
            "table",
            header=("approach", *(label for _, label in keys)),
            rows=tuple((n, *(_fmt(s[n].get(k)) for k, _ in keys)) for n in names),
        ),
        Block("img", plots["assessment_scores"].name),
    ]
    if c.per_class_delta:
        classes = sorted({k for d in c.per_class_delta.values() for k in d})
        blocks += [
            Block("h3", "Per-class deltas (fine-tuned minus agentic)"),
            Block(
                "table",
                header=("class", *c.per_class_delta),
                rows=tuple(
                    (k, *(_fmt(d.get(k)) for d in c.per_class_delta.values())) for k in classes
                ),
            ),
            Block("img", plots["per_class_delta"].name),
        ]
    blocks.append(
        Block("h3", "Confusion matrices (rows: the annotation, columns: what the approach said)")
    )
    blocks.append(
        Block(
            "p",
            "Damage types: each photo's annotated and stated damages matched on the part (the "
            "same part and type first, then the same part); 'none' row: a damage stated on a "
            "part with no annotated damage left, 'none' column: an annotated damage not stated. "
            "Damage severity: the damages both name with the same part and type. Overall "
            "severity: one per photo.",
        )
    )
    for n in names:
        for key, label in (
            ("type_confusion", "damage type"),
            ("severity_confusion", "damage severity"),
        ):
            blocks += [
                Block("p", f"{n}: {label}"),
                _confusion_table(s[n][key]),
            ]
        blocks += [
            Block("img", plots[k].name)
            for k in (f"confusion_{n}", f"type_confusion_{n}")
            if k in plots
        ]
    return blocks


def _confusion_table(confusion: dict[str, Any]) -> Block:
    labels, matrix = confusion["labels"], confusion["matrix"]
    return Block(
        "table",
        header=("annotated / said", *labels),
        rows=tuple(
            (label, *(str(v) for v in row)) for label, row in zip(labels, matrix, strict=True)
        ),
    )


def _fraud_blocks(c: Comparison) -> list[Block]:
    from agents.compare.claims import TEST_FRACTION

    rows = []
    notes = []
    for name, f in c.fraud_scores.items():
        medium, high = f["at"]["medium"], f["at"]["high"]
        rows.append(
            (
                name,
                f"{f['n']} ({f['fraud']} fraud)",
                _fmt(f["roc_auc"]),
                str(medium["flagged"]),
                _fmt(medium["precision"]),
                _fmt(medium["recall"]),
                _fmt(medium["false_alarm_rate"]),
                str(high["flagged"]),
                _fmt(high["precision"]),
                _fmt(high["recall"]),
                ", ".join(f"{p} {_fmt(r, 2)}" for p, r in f["recall_by_pattern"].items()) or "-",
            )
        )
        if f["constant_risk"]:
            notes.append(
                f"{name} gives every claim the same fraud risk ({_fmt(f['mean_risk'])}): it has "
                "no fraud signal, so its ROC-AUC is 0.5 (every fraud-honest pair a tie) and it "
                "flags "
                + ("every claim." if medium["flagged"] == f["n"] else "no claim.")
                + (
                    " Its one model call sees the photos and the claim text, not the claims "
                    "history that the rules need (DESIGN.md, 'The two approaches'), so its graph "
                    "gives every claim this risk by design and the claims were not run through "
                    "the model to get it."
                    if name == "finetuned"
                    else ""
                )
            )
    return [
        Block("h2", "Fraud detection on the test claims"),
        Block(
            "p",
            f"The test claims are the latest {TEST_FRACTION:.0%} of the demo's claims by "
            "incident date, with their photos and what the claim says (policy, VIN, date, "
            "description, amount); while the comparison runs the tools read a copy of the claims "
            "database without them, so no test claim's row, amount or fraud label is in the "
            "history they search. Risk: the Assessment's fraud risk; flagged: its level "
            "(medium: risk >= 0.3, high: >= 0.6, the approach's own thresholds). A failed call "
            "flags nothing (risk 0). The agentic run of a claim stops after its fraud step (the "
            "report it would write next does not change the risk).",
        ),
        Block(
            "table",
            header=(
                "approach",
                "claims",
                "ROC-AUC",
                "flagged (medium+)",
                "precision",
                "recall",
                "false alarms",
                "flagged (high)",
                "precision (high)",
                "recall (high)",
                "recall per fraud pattern (medium+)",
            ),
            rows=tuple(rows),
        ),
        *(Block("p", note) for note in notes),
    ]


def _chat_blocks(c: Comparison, names: list[str], plots: dict[str, Path]) -> list[Block]:
    kinds = sorted({k for s in c.chat_scores.values() for k in s["per_kind"]})
    s = c.chat_scores

    def kind_value(name: str, kind: str) -> str:
        row = s[name]["per_kind"].get(kind, {})
        return _fmt(row.get("spec_exact_match", row.get("rouge_l")))

    return [
        Block("h2", "Service-chat quality"),
        Block(
            "p",
            "SPEC: exact match of the value; the other kinds: ROUGE-L F1 (answerable questions). "
            "Abstains: share of the questions the manual cannot answer that got the refusal; "
            "false abstentions: share of the answerable ones that did.",
        ),
        Block(
            "table",
            header=(
                "mode",
                *kinds,
                "ROUGE-L (all non-SPEC)",
                "halluc. numbers",
                "abstains",
                "false abstentions",
                "EOS",
                "failed",
            ),
            rows=tuple(
                (
                    n,
                    *(kind_value(n, k) for k in kinds),
                    _fmt(s[n]["rouge_l"]),
                    _fmt(s[n]["hallucinated_number_rate"]),
                    _fmt(s[n].get("abstention_rate")),
                    _fmt(s[n].get("false_abstention_rate")),
                    _fmt(s[n]["stopped_with_eos"]),
                    _fmt(s[n]["failure_rate"]),
                )
                for n in names
            ),
        ),
        Block("img", plots["chat_scores"].name),
        *_judge_blocks(c, names),
        *_kind_blocks(c, names),
    ]


JUDGE_RATES = ("correct", "incorrect", "neutral", "contradiction")


def _judge_blocks(c: Comparison, names: list[str]) -> list[Block]:
    """The seed evaluation's judge table: each mode's answers labelled by the judge."""
    if not c.judge:
        return []
    agreement = c.judge["agreement_with_exact_match"]
    trust = {True: "trusted on numbers", False: "not trusted on numbers", None: "untested"}
    rates = c.judge["per_mode"]
    return [
        Block("h3", f"Judge rates: {c.judge['judge']}"),
        Block(
            "p",
            "Every answer labelled against its reference (agents/judge.py says how): correct, "
            "incorrect, neutral (commits to nothing) and contradiction are shares of the valid "
            "answers; invalid format is a share of all. The judge agrees with SPEC exact match "
            f"on {_fmt(agreement['rate'])} of {agreement['n']} SPEC answers "
            f"({trust[agreement['trusted']]}).",
        ),
        Block(
            "table",
            header=("mode", "answers", "valid", *JUDGE_RATES, "invalid format"),
            rows=tuple(
                (
                    n,
                    str(rates[n]["total_responses"]),
                    str(rates[n]["valid_responses"]),
                    *(_fmt(rates[n][f"{label}_rate"]) for label in JUDGE_RATES),
                    _fmt(rates[n]["invalid_format_rate"]),
                )
                for n in names
                if n in rates
            ),
        ),
    ]


def _kind_blocks(c: Comparison, names: list[str]) -> list[Block]:
    """One table per chat mode: each kind of question's scores."""
    blocks = [
        Block("h3", "Per kind of question"),
        Block(
            "p",
            "Questions: how many of the kind were asked (of them, how many the manual cannot "
            "answer). Exact match for SPEC and ROUGE-L for the other kinds, over the answerable "
            "questions (a refusal scores 0); abstains: share of the unanswerable ones refused; "
            "false abstentions: share of the answerable ones refused.",
        ),
    ]
    for name in names:
        table = c.chat_scores[name]["by_kind"]
        blocks += [
            Block("p", f"{name}"),
            Block(
                "table",
                header=(
                    "kind",
                    "questions",
                    "exact match",
                    "ROUGE-L",
                    "abstains",
                    "false abstentions",
                    "halluc. numbers",
                ),
                rows=tuple(
                    (
                        kind,
                        f"{row['n']}"
                        + (f" ({row['unanswerable']})" if row["unanswerable"] else ""),
                        _fmt(row["spec_exact_match"]),
                        _fmt(row["rouge_l"]),
                        _fmt(row["abstention_rate"]),
                        _fmt(row["false_abstention_rate"]),
                        _fmt(row["hallucinated_number_rate"]),
                    )
                    for kind, row in table.items()
                ),
            ),
        ]
    return blocks


def _latency_blocks(c: Comparison, plots: dict[str, Path]) -> list[Block]:
    rows = []
    walls = [
        *(c.wall_s.get("assessment", {}).get(n) for n in c.assessment_scores),
        *(c.wall_s.get("chat", {}).get(n) for n in c.chat_scores),
    ]
    for (name, s), wall in zip(_labelled(c.assessment_scores, c.chat_scores), walls, strict=True):
        lat = s["latency_ms"]
        ok = s["n"] - s["failed"]
        rows.append(
            (
                name,
                str(ok),
                *(_fmt(lat.get(k), 1) for k in LATENCY_KEYS),
                _fmt(s["n"] / wall if wall else None),
            )
        )
    in_flight = (
        "one call at a time"
        if c.concurrency == 1
        else f"{c.concurrency} calls in flight: a call's latency includes its wait for a turn"
    )
    blocks = [
        Block("h2", f"Latency (ms, successful calls; {in_flight})"),
        Block(
            "p",
            "req/s: the approach's calls over the wall time of its whole run (all calls, "
            f"{c.concurrency} at a time).",
        ),
        Block(
            "table",
            header=("approach", "ok calls", *LATENCY_KEYS, "req/s"),
            rows=tuple(rows),
        ),
    ]
    blocks += [Block("img", plots[k].name) for k in sorted(plots) if k.startswith("latency_")]
    return blocks


def _cost_blocks(c: Comparison) -> list[Block]:
    from agents.compare.records import HARDWARE, PRICE_SOURCE

    p = c.prices
    currency = p.currency
    rows = tuple(
        (
            name,
            k["billing"],
            _fmt(k["compute_s_per_call"], 3),
            _fmt(k["input_tokens_per_call"], 1),
            _fmt(k["output_tokens_per_call"], 1),
            _fmt(k["inference_per_1k"], 4),
            _duration(k["training_s"]),
            _fmt(k["training"], 4),
            f"{k['training_tokens']:,}"
            + (f" + {k['training_images']:,} images" if k["training_images"] else ""),
            _fmt(k["training_hosted"], 2),
        )
        for name, k in _labelled(c.costs.get("assessment", {}), c.costs.get("chat", {}))
    )
    return [
        Block("h2", f"Cost ({currency})"),
        Block(
            "p",
            "Each row is billed as its 'billed by' column says. compute: the self-hosted models "
            "(the text model in this process, the damage model, the vision-language model) by "
            "their calls' seconds of the machine (each instant split among the model calls "
            "running then, so that calls decoded in one batch share its time) x the hourly "
            "price of the hardware they ran on, "
            f"here {c.hardware}: {HARDWARE[c.hardware]} at {p.per_hour(c.hardware)} per hour "
            f"(CPU {p.cpu_per_hour}, GPU {p.gpu_per_hour} per hour: {PRICE_SOURCE}). tokens: a "
            "text model hosted on an OpenAI-compatible server by its tokens at "
            f"{p.text_input_per_1m} in / {p.text_output_per_1m} out per 1M. Inference per "
            "1,000 requests from the mean cost of the successful calls ('-': none succeeded); "
            "retrieval and the claims database are not billed. Training: the training loops' "
            "wall time in the models' manifests (tokens or images over their throughput; "
            "evaluation and data preparation left out) x the same hourly price, as if trained "
            "on the same hardware; beside it, the same training tokens on a hosted fine-tuning "
            f"service at {p.training_per_1m_tokens} per 1M (+ {p.training_per_1k_images} per "
            "1k images). 0: not fine-tuned, or not trained yet.",
        ),
        Block(
            "table",
            header=(
                "approach",
                "billed by",
                "model s/call",
                "input tok/call",
                "output tok/call",
                "inference /1k req",
                "training time",
                "training",
                "training tokens",
                "hosted fine-tuning",
            ),
            rows=rows,
        ),
    ]


def _duration(seconds: float | None) -> str:
    """
    >>> _duration(None), _duration(0.0), _duration(95.0), _duration(7260.0)
    ('-', '0', '1.6 min', '2.0 h')
    """
    if seconds is None:
        return "-"
    if not seconds:
        return "0"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"
