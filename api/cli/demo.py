"""The training and comparison half of ``tunegraph demo``: fine-tune text and vision with a
profile's recipes, compare the two approaches, and summarise the report.

Every stage is the command a user would run by hand (``tunegraph finetune text|vision``,
``tunegraph compare``), invoked with the profile's configs and overrides. The demo trains from
scratch each time (``--no-resume``): a smoke run's tiny checkpoints must never be resumed by a
quick run, which shares their names.

On a CPU with two or more cores the CPU profiles train the vision models (the damage model, then
the vision-language model that reads it) in a second process while this one trains the text
model, the threads split between them, so that both cores stay busy; whether that gets more done
than one after the other is what ``benchmarks/side_by_side.py`` measures.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
    # train vision in a second process beside the text model, the cores split (CPU profiles)
    side_by_side: bool = True


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
        side_by_side=False,
    ),
}


def train_and_compare(ctx: click.Context, profile_name: str, settings: Settings, step) -> dict:
    """Stages 5-7 of the demo; ``step(title)`` prints a stage header. Returns the timings."""
    from api.cli.compare import compare
    from api.cli.finetune import finetune_text
    from api.cli.vision import finetune_vision

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
    threads = torch_threads()
    if profile.side_by_side and threads >= 2:
        logs = settings.runs_dir / "demo-training"
        logs.mkdir(parents=True, exist_ok=True)
        own = threads // 2
        side = SideProcess(
            [
                ("damage_model", _vision_command(profile.damage_config, profile.damage)),
                ("vision_lm", _vision_command(profile.vlm_config, profile.vlm)),
            ],
            logs,
            threads=threads - own,
        )
        step(
            f"fine-tune text ({profile.text_config}); beside it, in a second process: the "
            f"damage model ({profile.damage_config}), then the vision-language model "
            f"({profile.vlm_config})"
        )
        click.echo(f"      vision logs: {logs}/damage_model.log, {logs}/vision_lm.log")
        started = time.perf_counter()
        side.start()
        try:
            with torch_threads_set(own):
                train("text", finetune_text, profile.text_config, profile.text)
            step("fine-tune vision: the second process")
            side.wait(lambda line: click.echo(f"      {line}"))
        except BaseException:
            side.stop()
            raise
        timings.update(side.timings)
        timings["training_wall"] = round(time.perf_counter() - started, 1)
        if side.failed:
            name, log = side.failed
            raise click.ClickException(
                f"the {name} stage failed; its log: {log}\n" + "\n".join(last_lines(log, 15))
            )
        for name in side.timings:
            for line in last_lines(logs / f"{name}.log", 2):
                click.echo(f"      {line}")
            click.echo(f"      ({name}: {side.timings[name]:.0f} s)")
    else:
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


def _vision_command(config: str, overrides: Sequence[str]) -> list[str]:
    """``tunegraph finetune vision`` for ``config``, from scratch, in a child Python."""
    command = [sys.executable, "-m", "api.cli.main", "finetune", "vision"]
    return [*command, "--config", str(CONFIGS / config), "--no-resume", *overrides]


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads_set(threads: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``threads`` inside the block."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SideProcess:
    """Commands run one after another in child processes, in a background thread, each with
    ``threads`` PyTorch threads and its output in ``logs/NAME.log``. The first to fail stops the
    chain (``failed``: its name and log)."""

    def __init__(self, stages: list[tuple[str, list[str]]], logs: Path, threads: int) -> None:
        self.stages = stages
        self.logs = logs
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.timings: dict[str, float] = {}
        self.failed: tuple[str, Path] | None = None
        self.current: tuple[str, Path] | None = None
        self._process: subprocess.Popen | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="demo-side", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        for name, command in self.stages:
            log = self.logs / f"{name}.log"
            started = time.perf_counter()
            with log.open("w", encoding="utf-8") as out:
                with self._lock:  # stop() either sees this child or keeps it from starting
                    if self._stopped.is_set():
                        return
                    self._process = subprocess.Popen(
                        command, stdout=out, stderr=subprocess.STDOUT, env=self.env
                    )
                    self.current = (name, log)
                code = self._process.wait()
            self.timings[name] = round(time.perf_counter() - started, 1)
            if code != 0:
                self.failed = (name, log)
                return
        self.current = None

    def wait(self, report: Callable[[str], None] | None = None, every: float = 30.0) -> None:
        """Wait for the chain; every ``every`` s, ``report(line)`` gets the running stage's last
        progress line."""
        while self._thread.is_alive():
            self._thread.join(every)
            current = self.current
            if report is not None and self._thread.is_alive() and current:
                lines = last_lines(current[1], 1)
                report(f"{current[0]}: {lines[0] if lines else 'starting'}")

    def stop(self) -> None:
        """Stop the chain and end the running child."""
        with self._lock:
            self._stopped.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(timeout=30)


def last_lines(log: Path, count: int) -> list[str]:
    """The last ``count`` non-empty lines of a log, progress-bar redraws (``\\r``) split out.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.log"
    >>> _ = path.write_text("a\\nstep 1/3\\rstep 2/3\\rstep 3/3\\ndone\\n\\n")
    >>> last_lines(path, 2)
    ['step 3/3', 'done']
    """
    try:
        text = log.read_text("utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n")]
    return [line for line in lines if line][-count:]


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
