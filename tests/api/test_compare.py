"""``tunegraph compare`` on a tiny generated demo corpus, with fake models."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from agents.chat_model import LocalChatModel
from agents.compare import (
    CompareError,
    CompareOptions,
    load_prices,
    photo_cases,
    run_compare,
    training_usage,
)
from agents.context import AgentContext
from api import composition
from api.cli.main import main
from api.settings import Settings
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus
from tests.agents.fakes import FakeRetriever
from tests.agents.test_compare import (
    MANUAL,
    MapDamageModel,
    OracleBackend,
    TruthVision,
    truth_answer,
)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare") / "home"
    generate_demo_corpus(
        root / "demo",
        DemoCorpusConfig(seed=3, n_claims=60, n_images=24, n_scanned_pages=0, test_fraction=0.4),
    )
    return root


def fake_context(settings: Settings) -> AgentContext:
    """A perfect fine-tuned vision model; an agentic damage model that always sees a hood
    dent; a chat model that repeats the question's first number."""
    cases = photo_cases(settings.demo_dir, 100)

    def answer(question, adapter, prompt):
        return f"It is {question.split()[0]}." if adapter else "It is 12 Nm."

    return AgentContext(
        llm=LocalChatModel(backend=OracleBackend(answer)),
        finetuned_adapter="ft",
        manuals=FakeRetriever(MANUAL),
        damage_model=MapDamageModel(),
        vision=TruthVision({c.image: truth_answer(c) for c in cases}),
    )


def test_run_compare_writes_a_self_contained_report(home):
    settings = Settings(home=home)
    seen = []
    result = run_compare(
        CompareOptions(name="t1", images=6, questions=5, claims=0, resamples=200),
        demo_dir=settings.demo_dir,
        runs_dir=settings.runs_dir,
        models=composition.trained_models(settings),
        context_factory=lambda: fake_context(settings),
        progress=lambda fraction, message: seen.append(fraction),
    )
    assert result.out == home / "runs" / "t1"
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) == 1 + 2 * 6 + 5 * 5
    fine = result.comparison.assessment_scores["finetuned"]
    assert fine["n"] == 6 and fine["type_f1_micro"] == 1.0 and fine["cost_mae"] == 0.0
    costs = result.comparison.costs["assessment"]
    # in-process models: billed by their calls' seconds, even where tokens were not counted
    assert costs["finetuned"]["billing"] == costs["agentic"]["billing"] == "compute"
    assert costs["finetuned"]["input_tokens_per_call"] is None  # a fake VLM: not counted
    assert costs["finetuned"]["compute_s_per_call"] > 0 and costs["agentic"]["inference_per_1k"] > 0

    pngs = sorted(p.name for p in result.out.glob("*.png"))
    assert {
        "assessment_scores.png",
        "per_class_delta.png",
        "confusion_finetuned.png",
        "confusion_agentic.png",
        "chat_scores.png",
        "latency_hist_assessment.png",
        "latency_box_assessment.png",
        "latency_hist_chat.png",
        "latency_box_chat.png",
    } <= set(pngs)
    for name in pngs:
        assert (result.out / name).read_bytes().startswith(PNG), name

    markdown = (result.out / "report.md").read_text()
    assert "## Verdict" in markdown and "finetuned wins over agentic" in markdown
    assert "| damage-type F1 (micro) (higher is better) | 1.000 |" in markdown
    assert "![assessment_scores.png](assessment_scores.png)" in markdown
    assert "p99" in markdown and "inference /1k req" in markdown
    assert "| approach | billed by | model s/call |" in markdown  # each row says its method
    assert "| agentic (assessment) | compute |" in markdown
    assert "| base (chat) | compute |" in markdown

    page = (result.out / "report.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == len(pngs)  # every plot inline, nothing else referenced
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "finetuned wins over agentic" in page

    report = json.loads((result.out / "report.json").read_text())
    assert report["photos"] == 6 and len(report["items"]["chat"]["agent"]) == 5
    assert report["verdicts"]["assessment"][0]["best"] == "finetuned"


def test_the_cli_runs_end_to_end_with_an_injected_context(home):
    runner = CliRunner(env={"TUNEGRAPH_HOME": str(home)})
    result = runner.invoke(
        main,
        ["compare", "--name", "cli", "--images", "3", "--questions", "0", "--json"],
        obj={"context_factory": fake_context},
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["out"] == str(home / "runs" / "cli") and data["photos"] == 3
    assert data["chat_scores"] == {} and "items" not in data
    assert (home / "runs" / "cli" / "report.html").is_file()

    # the hourly price: a flag, else a setting; the hardware follows TUNEGRAPH_DEVICE
    args = ["compare", "--name", "cli-gpu", "--images", "1", "--questions", "0", "--json"]
    gpu = CliRunner(
        env={"TUNEGRAPH_HOME": str(home), "TUNEGRAPH_DEVICE": "cuda", "TUNEGRAPH_GPU_PER_HOUR": "3"}
    )
    data = json.loads(gpu.invoke(main, args, obj={"context_factory": fake_context}).output)
    assert data["hardware"]["kind"] == "gpu" and data["hardware"]["per_hour"] == 3.0
    assert data["costs"]["assessment"]["agentic"]["per_hour"] == 3.0
    flag = gpu.invoke(main, [*args, "--gpu-per-hour", "0.5"], obj={"context_factory": fake_context})
    assert json.loads(flag.output)["hardware"]["per_hour"] == 0.5
    cpu = CliRunner(env={"TUNEGRAPH_HOME": str(home), "TUNEGRAPH_DEVICE": "cpu"})
    data = json.loads(cpu.invoke(main, args, obj={"context_factory": fake_context}).output)
    assert data["hardware"] == {
        "kind": "cpu",
        "instance": "AWS EC2 m7g.large (2 Arm vCPU, 8 GiB)",
        "per_hour": 0.0816,
    }
    negative = cpu.invoke(
        main, [*args, "--cpu-per-hour", "-1"], obj={"context_factory": fake_context}
    )
    assert negative.exit_code == 2 and "--cpu-per-hour" in negative.output

    text = runner.invoke(
        main,
        ["compare", "--name", "cli2", "--images", "2", "--questions", "2"],
        obj={"context_factory": fake_context},
    )
    assert text.exit_code == 0, text.output
    assert "assessment:" in text.output and "report: " in text.output
    assert "cost of agentic (assessment): billed by compute" in text.output


def test_as_a_job_it_reports_the_whole_comparison_and_ends_with_its_summary(home, monkeypatch):
    """What a compare job's worker process runs (api.jobs.worker.compare): its bars report
    through the child's progress interface; the job follows the `comparison` bar."""
    from api.jobs.child import ReportingBar
    from api.jobs.kinds import KINDS
    from api.jobs.worker import compare

    monkeypatch.setenv("TUNEGRAPH_HOME", str(home))
    sent: list[dict] = []

    def progress(*args, **kwargs):
        return ReportingBar(sent.append, *args, **kwargs)

    summary = compare(
        {"name": "job", "images": 2, "questions": 1, "claims": 0}, progress, print,
        context_factory=fake_context,
    )  # fmt: skip
    assert summary["out"] == str(home / "runs" / "job") and summary["photos"] == 2
    assert "items" not in summary and json.dumps(summary)
    assert (home / "runs" / "job" / "report.html").is_file()
    bars = [m["progress"] for m in sent]
    overall = [b["n"] / b["total"] for b in bars if b["unit"] == KINDS["compare"].unit]
    # 2 approaches x 2 photos + 5 modes x 1 question: 9 calls, one report each, after 0 first
    assert overall == sorted(overall) and overall[0] == 0.0 and overall[-1] == 1.0
    assert len(overall) == 1 + 9
    assert {b["unit"] for b in bars} == {"comparison", "call"}  # the per-call bars too


def test_a_job_compares_what_the_command_compares_by_default():
    """A compare job's parameters left out are the command's defaults (the job builds its
    CompareOptions from the parameters given)."""
    from api.cli.compare import compare as compare_command

    defaults = {p.name: p.default for p in compare_command.params}
    options = CompareOptions()
    for name in ("name", "images", "questions", "claims", "seed"):
        assert getattr(options, name) == defaults[name], name


def test_bad_input_is_a_clear_error(home, tmp_path):
    runner = CliRunner(env={"TUNEGRAPH_HOME": str(home)})
    result = runner.invoke(
        main, ["compare", "--name", "../x"], obj={"context_factory": fake_context}
    )
    assert result.exit_code == 1 and "name: use 1-64 letters" in result.output
    empty = CliRunner(env={"TUNEGRAPH_HOME": str(tmp_path)})
    result = empty.invoke(main, ["compare"], obj={"context_factory": fake_context})
    assert result.exit_code == 1 and "tunegraph demo" in result.output


def test_a_prices_file_overrides_the_defaults_and_rejects_unknown_keys(tmp_path):
    good = tmp_path / "prices.yaml"
    good.write_text("text_input_per_1m: 0.5\ncpu_per_hour: 0.9\ncurrency: EUR\n")
    prices = load_prices(good)
    assert (prices.text_input_per_1m, prices.cpu_per_hour, prices.currency) == (0.5, 0.9, "EUR")
    assert prices.training_per_1m_tokens == 27.5 and prices.gpu_per_hour == 1.006  # defaults
    assert load_prices(good, {"cpu_per_hour": 0.2}).cpu_per_hour == 0.2  # a flag wins
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosting_per_hour: 2\ntext_output_per_1m: -1\n")
    with pytest.raises(CompareError) as error:
        load_prices(bad)
    message = str(error.value)
    assert "unknown key hosting_per_hour" in message and "cpu_per_hour" in message
    assert "cannot be negative: text_output_per_1m" in message
    with pytest.raises(CompareError, match="hardware: use cpu or gpu"):
        CompareOptions(hardware="tpu")


def test_training_tokens_come_from_the_manifests(tmp_path):
    settings = Settings(home=tmp_path)
    adapter = settings.adapters_dir / settings.text_adapter
    damage = settings.vision_dir / "damage-model"
    for directory, metrics in (
        (adapter, {"train_tokens": 5000, "tokens_per_s": 50.0}),
        (damage, {"train_images": 900, "images_per_s": 30.0}),
    ):
        directory.mkdir(parents=True)
        (directory / "tunegraph-manifest.json").write_text(json.dumps({"metrics": metrics}))
    (adapter / "adapter_config.json").write_text("{}")
    usage = training_usage(composition.trained_models(settings))
    agentic = usage["assessment"]["agentic"]
    assert (agentic.tokens, agentic.images) == (5000, 900)
    assert agentic.seconds == 100 + 30  # units over throughput, both models
    assert usage["chat"]["agent"].seconds == 100
    assert set(agentic.models) == {"damage-model", settings.text_adapter}
    assert usage["assessment"]["finetuned"].tokens == 0  # no vision-language model trained
    assert usage["chat"]["finetuned-rag"].tokens == 5000 and "base" not in usage["chat"]


def test_max_tokens_caps_every_text_model_request(home):
    seen: list[int] = []

    def recording(settings: Settings) -> AgentContext:
        context = fake_context(settings)
        backend = context.llm.backend
        original = backend.stream

        def stream(request):
            seen.append(request.max_tokens)
            yield from original(request)

        backend.stream = stream
        return context

    options = CompareOptions(name="capped", images=2, questions=2, resamples=200, max_tokens=24)
    settings = Settings(home=home)
    run_compare(
        options,
        demo_dir=settings.demo_dir,
        runs_dir=settings.runs_dir,
        models=composition.trained_models(settings),
        context_factory=lambda: recording(settings),
    )
    assert len(seen) >= 2 * 5 and set(seen) == {24}  # chat in 5 modes and the reports
    with pytest.raises(CompareError, match="max_tokens"):
        CompareOptions(max_tokens=0)


def test_the_whole_test_split_as_a_flag_as_a_demo_profile_gives_it_and_as_a_job(home, tmp_path):
    import click

    from api.cli.compare import compare as compare_command
    from api.jobs.confine import Roots
    from api.jobs.kinds import validate

    runner = CliRunner(env={"TUNEGRAPH_HOME": str(home), "TUNEGRAPH_MAX_BATCH_SIZE": "3"})
    every = len(photo_cases(home / "demo", "all"))
    args = ["compare", "--name", "all", "--images", "all", "--questions", "0", "--claims", "0"]
    result = runner.invoke(main, [*args, "--json"], obj={"context_factory": fake_context})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["photos"] == every > 6 and data["claims"] == 0
    assert data["concurrency"] == 3  # TUNEGRAPH_MAX_BATCH_SIZE: the engine's batch fills
    batch_sizes = []

    def recording(settings: Settings) -> AgentContext:
        batch_sizes.append(settings.max_batch_size)  # the engine's batch: the concurrency
        return fake_context(settings)

    one = runner.invoke(
        main, [*args, "--concurrency", "1", "--json"], obj={"context_factory": recording}
    )
    assert json.loads(one.output)["concurrency"] == 1 and batch_sizes == [1]
    bad = runner.invoke(
        main, ["compare", "--images", "lots"], obj={"context_factory": fake_context}
    )
    assert bad.exit_code == 2 and "use a whole number >= 0 or 'all', not 'lots'" in bad.output

    @click.command()
    @click.pass_context
    def demo_like(ctx):  # `tunegraph demo` passes a profile's YAML values as they are
        ctx.invoke(
            compare_command, name="yaml", images="all", questions=0, claims=0, prices=None,
            max_tokens=None, seed=0, as_json=True,
        )  # fmt: skip

    result = runner.invoke(demo_like, obj={"context_factory": fake_context})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["photos"] == every

    roots = Roots(tmp_path, "local")
    assert validate("compare", {"claims": 5, "concurrency": 2}, roots)["claims"] == 5
    for params, message in (
        ({"claims": -1}, "claims cannot be negative: use a whole number >= 0 or 'all', not -1"),
        ({"concurrency": 0}, "concurrency: use a whole number >= 1, not 0"),
        ({"concurrency": "4"}, "parameter 'concurrency' of compare must be int"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            validate("compare", params, roots)
