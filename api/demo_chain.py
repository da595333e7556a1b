"""The training and comparison half of ``tunegraph demo``: fine-tune text and vision with a
profile's recipes, compare the two approaches, and summarise the report.

Every stage is the command a user would run by hand (``tunegraph finetune text|vision``,
``tunegraph compare``), invoked with the profile's configs and overrides. The demo trains from
scratch each time (``--no-resume``): a smoke run's tiny checkpoints must never be resumed by a
quick run, which shares their names.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import click

from api.settings import Settings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class DemoProfile:
    text_config: str
    damage_config: str
    vlm_config: str
    text: tuple[str, ...] = ()  # KEY=VALUE overrides of each config
    damage: tuple[str, ...] = ()
    vlm: tuple[str, ...] = ()
    # compare: held-out photos, and held-out manual questions (each in the 5 chat modes); on a
    # 2-core CPU an agentic assessment takes ~35 s and a chat answer up to ~25 s
    images: int = 4
    questions: int = 3
    corpus: tuple[tuple[str, int], ...] = ()  # corpus sizes unless --corpus-config is given
    max_tokens: int | None = 160  # compare: cap on each text-model answer


PROFILES = {
    # tiny training: checks the chain end to end in minutes; the models it leaves are weak
    "smoke": DemoProfile(
        "text/smollm2_quick.yaml",
        "vision/damage_quick.yaml",
        "vision/vlm_quick.yaml",
        text=("train.epochs=1", "train.max_steps=4", "data.spec_paraphrases=0"),
        damage=("train.epochs=1",),
        vlm=("align.max_steps=2", "align.batch_size=4", "train.max_steps=3", "train.batch_size=4"),
        images=2,
        questions=1,
        max_tokens=32,
        corpus=(("n_claims", 300), ("n_images", 240), ("n_scanned_pages", 2)),
    ),
    # the quick CPU profiles the fine-tuning issues' targets are measured with
    "quick": DemoProfile(
        "text/smollm2_quick.yaml", "vision/damage_quick.yaml", "vision/vlm_quick.yaml"
    ),
    # GPU: Llama 3.1 8B QLoRA, a ViT damage model with LoRA, LLaVA-1.5 QLoRA (hub downloads)
    "full": DemoProfile(
        "text/llama31_8b_qlora.yaml",
        "vision/damage_vit_lora.yaml",
        "vision/vlm_llava_qlora.yaml",
        images=24,
        questions=40,
        max_tokens=None,
    ),
}


def train_and_compare(ctx: click.Context, profile_name: str, settings: Settings, step) -> dict:
    """Stages 5-7 of the demo; ``step(title)`` prints a stage header. Returns the timings."""
    from api.commands_compare import compare
    from api.commands_finetune import finetune_text
    from api.commands_vision import finetune_vision

    profile = PROFILES[profile_name]
    timings: dict[str, float] = {}

    def timed(stage: str, function, **kwargs) -> None:
        started = time.perf_counter()
        ctx.invoke(function, **kwargs)
        timings[stage] = round(time.perf_counter() - started, 1)
        click.echo(f"      ({timings[stage]:.0f} s)")

    def train(stage: str, command, config: str, overrides: tuple[str, ...], **extra) -> None:
        timed(
            stage,
            command,
            config_path=CONFIGS / config,
            no_resume=True,
            as_json=False,
            overrides=overrides,
            **extra,
        )

    vision = {"task": None, "train_file": None, "val_file": None, "out": None}
    step(f"fine-tune text ({profile.text_config})")
    train("text", finetune_text, profile.text_config, profile.text)
    step(f"fine-tune vision: the damage model ({profile.damage_config})")
    train("damage_model", finetune_vision, profile.damage_config, profile.damage, **vision)
    click.echo(f"      and the vision-language model ({profile.vlm_config})")
    train("vision_lm", finetune_vision, profile.vlm_config, profile.vlm, **vision)
    step(f"compare on {profile.images} photos and {profile.questions} questions x 5 chat modes")
    timed(
        "compare",
        compare,
        name="demo",
        images=profile.images,
        questions=profile.questions,
        prices=None,
        max_tokens=profile.max_tokens,
        seed=0,
        as_json=False,
    )
    return timings


def headline(report_json: Path) -> list[str]:
    """The report's headline numbers, one line each."""
    report = json.loads(report_json.read_text("utf-8"))
    lines = []
    for approach, scores in report.get("assessment_scores", {}).items():
        latency = scores.get("latency_ms", {}).get("p50")
        lines.append(
            f"assessment {approach}: damage-type F1 (macro) {scores.get('type_f1_macro')}, "
            f"invalid {scores.get('invalid_rate')}, p50 "
            + (f"{latency / 1000:.1f} s" if latency else "n/a")
        )
    for mode, scores in report.get("chat_scores", {}).items():
        latency = scores.get("latency_ms", {}).get("p50")
        lines.append(
            f"chat {mode}: SPEC exact match {scores.get('spec_exact_match')}, ROUGE-L "
            f"{scores.get('rouge_l')}, p50 " + (f"{latency / 1000:.1f} s" if latency else "n/a")
        )
    return lines
