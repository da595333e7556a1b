"""``tunegraph eval retrieval|text|vision|judge|tools``: each command reads its inputs, calls one
evaluation of the library (``rag.retrieval``, ``finetune.evaluation``,
``finetune.vision_evaluation``, ``agents.judge``, ``agents.tool_eval``) and prints or saves its
scores.

Over 400 lines on purpose: it is the ``tunegraph eval`` group, five subcommands side by side with
their options and their printing, read as ``tunegraph eval --help`` lists them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import click

from api import composition
from api.cli.options import load_settings, manual_retriever, namespace_option
from api.settings import Settings

TASKS = click.Choice(["damage", "classify"])


@click.group("eval")
def eval_() -> None:
    """Evaluate retrieval, and base versus fine-tuned models."""


@eval_.command("retrieval")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-k", "k", type=click.IntRange(1, 100), default=5, show_default=True)
@namespace_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def eval_retrieval(questions: Path, k: int, namespace: str, as_json: bool) -> None:
    """Recall@1, recall@k and MRR of dense, BM25 and hybrid search on QUESTIONS.jsonl.

    Each line holds "q" (the question) and "must" (a text a relevant chunk contains).
    """
    from rag.retrieval import MODES, QuestionsError, evaluate, read_questions

    try:
        items = read_questions(questions)
    except QuestionsError as exc:
        raise click.ClickException(str(exc)) from None
    retriever = manual_retriever(namespace)
    results = evaluate(retriever, items, k)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(f"{len(items)} questions, k={k}")
    click.echo(f"{'mode':<8} {'recall@1':>9} {f'recall@{k}':>9} {'MRR':>7}")
    for mode in MODES:
        r = results[mode]
        click.echo(f"{mode:<8} {r['recall@1']:>9.3f} {r[f'recall@{k}']:>9.3f} {r['mrr']:>7.3f}")


@eval_.command("text")
@click.option(
    "--adapter",
    default="manual-lora",
    show_default=True,
    help="adapter name under TUNEGRAPH_HOME/adapters",
)
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="QA JSONL (question, answer, kind[, answerable]) [default: the adapter's test split "
    "when it kept one, else the demo's test questions]",
)
@click.option(
    "--blocks",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="manual blocks.jsonl whose numbers count as known [default: the adapter's training "
    "manual, else the demo's, else the --namespace index]",
)
@namespace_option
@click.option(
    "--limit", type=click.IntRange(1), default=None, help="evaluate a seeded sample of N questions"
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(["SPEC", "PROCEDURE", "EXPLANATION", "WIRING", "TROUBLESHOOTING"]),
    multiple=True,
    help="only questions of this block kind (repeatable) [default: all]",
)
@click.option(
    "--retrieval/--no-retrieval",
    default=True,
    show_default=True,
    help="also answer with the top-3 manual chunks",
)
@click.option(
    "--base/--no-base",
    "with_base",
    default=True,
    show_default=True,
    help="also answer with the base model (--no-base: the fine-tuned variants only)",
)
@click.option("--max-new-tokens", type=click.IntRange(1, 2048), default=128, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
def eval_text(
    adapter: str,
    questions: Path | None,
    blocks: Path | None,
    limit: int | None,
    kinds: tuple[str, ...],
    namespace: str,
    retrieval: bool,
    with_base: bool,
    max_new_tokens: int,
    batch_size: int,
    as_json: bool,
) -> None:
    """Base and fine-tuned model (each with and without retrieval) on held-out questions.

    SPEC: exact match of the value (numbers and units normalised); PROCEDURE/EXPLANATION and the
    rest: ROUGE-L; plus the share of answers that stop with EOS, the rate of numbers found in no
    manual block, the abstention rate on unanswerable questions ("answerable": false) and the
    false-abstention rate on the others, and latency. Retrieval searches the --namespace index.
    Writes report.json and report.md to TUNEGRAPH_HOME/runs/eval-text.
    """
    from tqdm import tqdm

    from agents.backends.base import GenerationError
    from agents.graphs import service_chat
    from finetune.datasets import DatasetError
    from finetune.evaluation import evaluate_text, markdown_table
    from finetune.model_store import ModelNotFoundError
    from finetune.onnx_build import EngineUnavailable

    settings = load_settings()
    kept = settings.adapters_dir / adapter / "data"  # what the adapter kept of its data
    questions = questions or default_questions(settings, adapter)
    if not questions.is_file():
        raise click.ClickException(
            f"{questions} does not exist: run `tunegraph demo`, or pass --questions FILE "
            "(JSONL lines with question, answer and kind)."
        )
    known = _known_blocks(settings, blocks, kept, questions == demo_questions(settings), namespace)
    if not as_json:
        click.echo(f"questions: {questions}")
    search = supported = None
    if retrieval:
        try:
            retriever = manual_retriever(namespace)
            search, supported = service_chat.rag_retrieval(retriever, settings.min_support)
        except click.ClickException as exc:
            if not as_json:
                click.echo(f"retrieval skipped: {exc.message}")
    report_dir = settings.runs_dir / "eval-text"
    store = composition.model_store(settings)
    try:
        answerer = composition.text_answerer(settings, store, adapter)
        if not as_json:
            click.echo(
                "answering with transformers generate"
                if answerer is None
                else f"answering with the engine ({settings.max_batch_size} questions at a time)"
            )
        results = evaluate_text(
            store,
            adapter,
            base_model=settings.text_model,
            questions=questions,
            blocks=known,
            report_dir=report_dir,
            kinds=kinds,
            limit=limit,
            search=search,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=functools.partial(tqdm, disable=as_json),
            log=None if as_json else click.echo,
            answerer=answerer,
            supported=supported,
            with_base=with_base,
        )
    except (DatasetError, ModelNotFoundError, EngineUnavailable, GenerationError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(markdown_table(results))
        click.echo(f"\nreport: {report_dir / 'report.md'}")


def default_questions(settings: Settings, adapter: str) -> Path:
    """The held-out questions an evaluation asks by default: the test split that ``adapter``
    kept (its ``data/test.jsonl``), else the demo's (either may not exist yet)."""
    kept = settings.adapters_dir / adapter / "data" / "test.jsonl"
    return kept if kept.is_file() else demo_questions(settings)


def demo_questions(settings: Settings) -> Path:
    """The demo corpus's held-out questions."""
    return settings.demo_dir / "manual" / "qa" / "test.jsonl"


def _known_blocks(
    settings: Any, blocks: Path | None, kept: Path, demo: bool, namespace: str
) -> Path | list[str]:
    """Where the numbers that count as known come from: ``--blocks``, else the manual the
    adapter was trained on, else the demo's blocks for the demo's questions, else the
    ``namespace`` index, else the demo's blocks."""
    if blocks is not None:
        return blocks
    if (kept / "blocks.jsonl").is_file():
        return kept / "blocks.jsonl"
    demo_blocks = settings.demo_dir / "manual" / "blocks.jsonl"
    if demo and demo_blocks.is_file():
        return demo_blocks
    try:
        texts = [b.text for b in composition.index_blocks(settings, namespace)]
    except NotImplementedError:  # a store that cannot list its documents (Pinecone)
        texts = []
    if texts:
        return texts
    if demo_blocks.is_file():
        return demo_blocks
    raise click.ClickException(
        "no manual to tell known numbers from: pass --blocks FILE (a blocks.jsonl), or "
        f"ingest the manual into the {namespace!r} index (`tunegraph ingest manuals PATH`)."
    )


@eval_.command("vision")
@click.option("--task", type=TASKS, required=True)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="trained model folder [default: TUNEGRAPH_HOME/vision/damage-model for damage]",
)
@click.option(
    "--base",
    "base_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="classify: a second (base) model; the report adds per-class deltas base -> model",
)
@click.option(
    "--test",
    "test_file",
    type=click.Path(path_type=Path),
    default=None,
    help="classify: test JSONL; damage: COCO .json [default: the demo's test split]",
)
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="report folder (JSON, confusion matrix PNG) [default: TUNEGRAPH_HOME/runs/eval-vision-...]",
)
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
def eval_vision(
    task: str,
    model_dir: Path | None,
    base_dir: Path | None,
    test_file: Path | None,
    images_dir: Path | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Score a trained vision model on held-out images: accuracy, per-class accuracy and the
    confusion matrix (classify), damage-type/part F1, severity accuracy and, for a model that
    states costs, cost MAE (damage), and latency statistics."""
    from api.composition import model_store, vision_engine_cache
    from finetune.vision_evaluation import evaluate_vision

    settings = load_settings()
    model_dir = model_dir or settings.vision_dir / "damage-model"
    out = out or settings.runs_dir / f"eval-vision-{task}-{model_dir.name}"
    try:
        result = evaluate_vision(
            task,
            model_dir,
            base_dir=base_dir,
            test_file=test_file,
            images_dir=images_dir,
            demo_dir=settings.demo_dir,
            out=out,
            load_causal_lm=model_store(settings).load_causal_lm,
            engine_cache=vision_engine_cache(settings),
            progress=None if as_json else _tqdm(),
        )
    except ValueError as exc:  # VisionDataError, VisionModelError: the test data, the model
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print_vision(task, result, out)


def _tqdm():
    from tqdm import tqdm

    return tqdm


def _print_vision(task: str, result: dict, out: Path) -> None:
    if task == "classify":
        click.echo(
            f"accuracy {result['accuracy']:.3f} on {result['n']} images ({result['model']['model']})"
        )
        if "base" in result:
            click.echo(f"base accuracy {result['base']['accuracy']:.3f}")
        click.echo("class                      accuracy   delta")
        for label, accuracy in result["per_class"].items():
            delta = result.get("per_class_delta", {}).get(label)
            click.echo(f"{label:<26} {accuracy:>8.3f}   {'' if delta is None else f'{delta:+.3f}'}")
        latency = result["model"]["latency_ms"]
    else:
        click.echo(
            f"{result['n']} images ({result['model']}): damage-type F1 micro "
            f"{result['type_f1_micro']:.3f} / macro {result['type_f1_macro']:.3f}; part F1 "
            f"{result['part_f1_micro']:.3f}; pair F1 {result['pair_f1']:.3f}; severity accuracy "
            f"{result['severity_accuracy']}"
            + (f"; cost MAE {result['cost_mae']} USD" if result.get("cost_mae") is not None else "")
            + f"; invalid {result['invalid_rate']:.1%}"
        )
        click.echo("per type: " + ", ".join(f"{k} {v:.3f}" for k, v in result["type_f1"].items()))
        latency = result["latency_ms"]
    click.echo(
        "latency ms: "
        + ", ".join(f"{k} {v}" for k, v in latency.items() if k != "throughput_per_s")
        + f"; {latency['throughput_per_s']} images/s sequential"
    )
    click.echo(f"report: {out / 'results.json'}")


@eval_.command("judge")
@click.argument("answers", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="for a compare report.json that does not hold its questions: the questions it asked "
    "[default: the served adapter's test split when it kept one, else the demo's]",
)
@click.option(
    "--judge-url",
    default=None,
    help="an OpenAI-compatible endpoint up to /v1 that judges (its key: "
    "TUNEGRAPH_JUDGE_API_KEY) [default: the offline rule judge]",
)
@click.option("--judge-model", default=None, help="the judge's model name at --judge-url")
@click.option("--json", "as_json", is_flag=True, help="print the rates and every label as JSON")
def eval_judge(
    answers: Path,
    questions: Path | None,
    judge_url: str | None,
    judge_model: str | None,
    as_json: bool,
) -> None:
    """Judge rates of the answers in ANSWERS: each labelled correct, incorrect, neutral,
    contradiction or invalid format against its reference answer, as the seed evaluation's
    LLM judge; the rates per mode and per mode and kind, and the judge's agreement with SPEC
    exact match (below 0.9 it is not trusted on numbers).

    ANSWERS: a JSONL of records (question, reference, answer; optional kind, mode, id,
    answerable), or the report.json of a `tunegraph compare` run (its chat answers).
    Without --judge-url, a transparent rule judge runs offline (numbers with units, negations,
    key terms of the reference); a judge answer that does not parse is counted as unjudged.
    """
    from tqdm import tqdm

    from agents.judge import (
        RULE_JUDGE_NAME,
        EndpointJudge,
        JudgeError,
        JudgeInputError,
        RuleJudge,
        judge_rates,
        load_records,
    )

    if (judge_url is None) != (judge_model is None):
        raise click.UsageError("--judge-url and --judge-model go together: pass both, or neither")
    if judge_url is not None and not judge_url.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{judge_url!r}: give the server's URL up to /v1, e.g. http://localhost:8000/v1",
            param_hint="--judge-url",
        )
    settings = load_settings()
    if questions is None:
        default = default_questions(settings, settings.text_adapter)
        questions = default if default.is_file() else None
    try:
        records = load_records(answers, questions)
    except JudgeInputError as exc:
        raise click.ClickException(str(exc)) from None
    judge: Any = RuleJudge()
    if judge_url is not None and judge_model is not None:
        judge = EndpointJudge.at(
            judge_url,
            judge_model,
            api_key=settings.judge_api_key or None,
            timeout_s=settings.generation_timeout_s,
        )
    bar = functools.partial(
        tqdm, desc="judging", unit="answer", disable=as_json or judge.name == RULE_JUDGE_NAME
    )
    try:
        report = judge_rates(records, judge, progress=bar)
    except JudgeError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_judge(report)


_RATES = (
    ("correct", "correct_rate"),
    ("incorrect", "incorrect_rate"),
    ("neutral", "neutral_rate"),
    ("contradiction", "contradiction_rate"),
    ("invalid format", "invalid_format_rate"),
)


def _print_judge(report: Any) -> None:
    click.echo(f"judge: {report.judge}")
    header = f"{'':<24} {'n':>4} {'valid':>5}" + "".join(
        f" {name:>{len(name)}}" for name, _ in _RATES
    )
    click.echo(header + " unjudged confidence")

    def row(name: str, rates: Any) -> str:
        cells = "".join(
            f" {'-' if getattr(rates, key) is None else f'{getattr(rates, key):.3f}':>{len(label)}}"
            for label, key in _RATES
        )
        confidence = "-" if rates.average_confidence is None else f"{rates.average_confidence:.2f}"
        return (
            f"{name:<24} {rates.total_responses:>4} {rates.valid_responses:>5}{cells} "
            f"{rates.unjudged:>8} {confidence:>10}"
        )

    for mode, rates in report.per_mode.items():
        click.echo(row(mode, rates))
    click.echo("per kind:")
    for mode, kinds in report.per_kind.items():
        for kind, rates in kinds.items():
            click.echo(row(f"{mode} {kind}", rates))
    agreement = report.agreement
    if agreement.rate is None:
        click.echo("agreement with exact match on SPEC: no SPEC answer to compare")
    else:
        trust = "trusted on numbers" if agreement.trusted else "NOT trusted on numbers"
        click.echo(
            f"agreement with exact match on SPEC: {agreement.rate:.3f} ({agreement.agree} of "
            f"{agreement.n} answers); {trust} (needs {agreement.min_agreement})"
        )
        for what, items in (
            ("judged correct without an exact match", agreement.judge_only),
            ("exact match not judged correct", agreement.exact_only),
        ):
            if items:
                more = f" and {len(items) - 10} more" if len(items) > 10 else ""
                click.echo(f"  {what}: {', '.join(items[:10])}{more}")
    click.echo(
        "rates of the valid answers (correct, incorrect, neutral, contradiction); invalid format "
        "and unjudged (a judge answer that did not parse): of all answers"
    )


@eval_.command("tools")
@click.option(
    "--adapter",
    default=None,
    help="the fine-tuned adapter under TUNEGRAPH_HOME/adapters [default: TUNEGRAPH_TEXT_ADAPTER]",
)
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="QA JSONL of the test split [default: the adapter's test split when it kept one, "
    "else the demo's test questions]",
)
@namespace_option
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="evaluate a seeded sample of N questions, spread evenly over the right tools",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="the sample's seed (--limit): another seed draws other questions",
)
@click.option(
    "--router",
    "routers",
    type=click.Choice(["base", "rules", "finetuned"]),
    multiple=True,
    help="only this router (repeatable) [default: all; finetuned needs a trained adapter]",
)
@click.option("--max-new-tokens", type=click.IntRange(1, 2048), default=128, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
def eval_tools(
    adapter: str | None,
    questions: Path | None,
    namespace: str,
    limit: int | None,
    seed: int,
    routers: tuple[str, ...],
    max_new_tokens: int,
    as_json: bool,
) -> None:
    """The service-chat agent's tool routers on held-out questions: the base model choosing
    tools, the regex rules, and the fine-tuned model choosing tools.

    Each question's right first step is a manual search, a spec lookup, a fault-code lookup, or
    no tool (greetings). Reports tool-choice accuracy, argument exact match (when the tool was
    right), SPEC exact match and ROUGE-L of the answers, tool calls per question, the share of
    answers whose calls parsed, and a confusion table per router. The tools search the
    --namespace index. Writes report.json and report.md to TUNEGRAPH_HOME/runs/eval-tools.
    """
    import dataclasses

    from tqdm import tqdm

    from agents.backends.base import GenerationError
    from agents.chat_model import LocalChatModel
    from agents.tool_eval import (
        evaluate_tools,
        held_out_questions,
        markdown,
        router_contexts,
        sample_by_tool,
    )
    from finetune.datasets import DatasetError
    from finetune.model_store import ModelNotFoundError
    from finetune.onnx_build import EngineUnavailable
    from finetune.tool_data import trained_for_tools

    settings = load_settings()
    if adapter:
        settings = dataclasses.replace(settings, text_adapter=adapter)
    adapter_dir = composition.text_adapter_dir(settings)
    if "finetuned" in routers and adapter_dir is None:
        raise click.BadParameter(
            f"no trained adapter {settings.text_adapter!r}: train one with `tunegraph finetune "
            "text` or name it with --adapter",
            param_hint="--router",
        )
    questions = questions or default_questions(settings, settings.text_adapter)
    if not questions.is_file():
        raise click.ClickException(
            f"{questions} does not exist: run `tunegraph demo`, or pass --questions FILE "
            "(the test split: JSONL lines with question, answer and kind)."
        )
    try:
        cases = held_out_questions(questions)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from None
    if limit is not None and limit < len(cases):
        cases = sample_by_tool(cases, limit, seed)
    manuals = manual_retriever(namespace)
    store = composition.model_store(settings)
    report_dir = settings.runs_dir / "eval-tools"
    try:
        base, adapters = composition.served_text_model(settings)
        backend = composition.local_backend(settings, store, base, adapters)
        llm = LocalChatModel(backend=backend, max_tokens=max_new_tokens)
        contexts = router_contexts(
            llm,
            manuals,
            settings.text_adapter if adapter_dir is not None else None,
            tool_adapter=adapter_dir is not None and trained_for_tools(adapter_dir),
            min_support=settings.min_support,
        )
        if routers:
            contexts = {name: c for name, c in contexts.items() if name in routers}
        if not as_json:
            click.echo(f"questions: {questions} ({len(cases)})")
        results = evaluate_tools(
            cases,
            contexts,
            progress=lambda items: tqdm(items, desc="questions", disable=as_json),
        )
    except (DatasetError, ModelNotFoundError, EngineUnavailable, GenerationError) as exc:
        raise click.ClickException(str(exc)) from None
    data = {name: score.to_dict() for name, score in results.items()}
    table = markdown(results)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(data, indent=2) + "\n", "utf-8")
    (report_dir / "report.md").write_text(table + "\n", "utf-8")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(table)
        click.echo(f"\nreport: {report_dir / 'report.md'}")
