"""The comparison report's PNG plots (matplotlib, Agg; imported when they are drawn): quality
per approach, per-class deltas, confusion matrices, latency histograms and box plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.compare.records import Comparison


def write_plots(c: Comparison, out: Path) -> dict[str, Path]:
    """Write the comparison's PNG plots into ``out``; returns them by key (file stem)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finetune.vision_metrics import confusion_png

    plots: dict[str, Path] = {}

    def save(figure: Any, key: str) -> None:
        figure.tight_layout()
        path = out / f"{key}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        plots[key] = path

    if c.assessment_scores:
        keys = [
            "type_f1_micro",
            "type_f1_macro",
            "part_f1_micro",
            "severity_accuracy",
            "overall_severity_accuracy",
        ]
        save(
            _bars(plt, c.assessment_scores, keys, "Assessment quality (higher is better)"),
            "assessment_scores",
        )
        if c.per_class_delta:
            figure, axes = plt.subplots(1, len(c.per_class_delta), figsize=(10, 4), squeeze=False)
            for ax, (label, delta) in zip(axes[0], c.per_class_delta.items(), strict=True):
                names = list(delta)
                ax.barh(
                    names,
                    [delta[n] for n in names],
                    color=["tab:green" if delta[n] >= 0 else "tab:red" for n in names],
                )
                ax.axvline(0, color="black", linewidth=0.8)
                ax.set_title(f"{label}: fine-tuned - agentic", fontsize=9)
            save(figure, "per_class_delta")
        for name, scores in c.assessment_scores.items():
            for key, stem, label in (
                ("overall_confusion", "confusion", "overall severity"),
                ("type_confusion", "type_confusion", "damage type"),
            ):
                path = out / f"{stem}_{name}.png"
                if confusion_png(scores[key], path, f"{label}: {name}"):
                    plots[f"{stem}_{name}"] = path
    if c.chat_scores:
        save(
            _bars(
                plt,
                c.chat_scores,
                ["spec_exact_match", "rouge_l", "hallucinated_number_rate"],
                "Service chat: exact match and ROUGE-L (higher), hallucinated numbers (lower)",
            ),
            "chat_scores",
        )
    for task, outcomes in (("assessment", c.assessments), ("chat", c.chats)):
        latencies = {
            n: [o.latency_ms for o in rows if o.error is None] for n, rows in outcomes.items()
        }
        latencies = {n: v for n, v in latencies.items() if v}
        if not latencies:
            continue
        figure, ax = plt.subplots(figsize=(8, 4))
        for name, values in latencies.items():
            ax.hist(values, bins=min(20, max(5, len(values) // 2)), alpha=0.5, label=name)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("calls")
        ax.set_title(f"{task}: latency per call")
        ax.legend(fontsize=8)
        save(figure, f"latency_hist_{task}")
        figure, ax = plt.subplots(figsize=(8, 4))
        ax.boxplot(list(latencies.values()))
        ax.set_xticks(range(1, len(latencies) + 1), list(latencies), fontsize=8)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{task}: latency distribution")
        save(figure, f"latency_box_{task}")
    return plots


def _bars(plt: Any, scores: dict[str, dict[str, Any]], keys: list[str], title: str) -> Any:
    names = list(scores)
    figure, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys) * len(names) / 2), 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [scores[name].get(k) or 0.0 for k in keys]
        ax.bar([k + i * width for k in range(len(keys))], values, width, label=name)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], keys, fontsize=8, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return figure
