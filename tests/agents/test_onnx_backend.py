"""The ONNX Runtime GenAI backend answers as the transformers backend does (fp32: the same
tokens), with adapters, grammars and stop sequences; its builds are cached and rebuilt when
incomplete; the composition root picks it by TUNEGRAPH_ENGINE."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

pytest.importorskip(
    "onnxruntime_genai", reason="the engine extra is not installed: pip install -e '.[engine]'"
)

from agents.backends import onnx_genai
from agents.backends.base import ChatRequest, DeadlineExceeded, GenerationError
from agents.backends.onnx_genai import OnnxGenAIBackend
from agents.backends.transformers import TransformersBackend
from api import composition
from api.settings import Settings
from finetune import onnx_build
from tests.agents.fakes import fake_engine_builds
from tests.finetune.test_text_lora import save_tiny_model, tiny_model

pytestmark = pytest.mark.real_model  # the SmolLM2 tokenizer and chat template

SMOLLM2 = "smollm2-135m-instruct"  # its tokenizer and chat template
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_spec",
        "description": "Look up a specification value in the service manual.",
        "parameters": {
            "type": "object",
            "properties": {"item": {"type": "string", "enum": ["torque", "capacity"]}},
            "required": ["item"],
        },
    },
}
VERDICT = {
    "type": "object",
    "properties": {
        "severity": {"type": "string", "enum": ["minor", "moderate", "severe"]},
        "cost": {"type": "integer", "minimum": 0, "maximum": 9999},
    },
    "required": ["severity", "cost"],
}


def ask(text: str, **options) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **options)


def answer(backend, request: ChatRequest) -> tuple:
    """What a client sees of a streamed answer: text, tool calls, finish reason, usage."""
    events = list(backend.stream(request))
    calls = [(e.tool_call.name, e.tool_call.arguments) for e in events if e.tool_call]
    text = "".join(e.text for e in events)
    return text, calls, events[-1].finish_reason, events[-1].usage


@pytest.fixture(scope="module")
def smollm2_dir(model_store):
    return model_store.checkpoint_dir(SMOLLM2)  # converts the GGUF once per test session


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A data root whose model cache holds the engine builds of this module."""
    return tmp_path_factory.mktemp("engine-home")


@pytest.fixture(scope="module")
def tiny_dir(tokenizer, tmp_path_factory):
    return save_tiny_model(tokenizer, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def adapters(tokenizer, tmp_path_factory):
    """Two LoRA adapters of the tiny model with random B (so they change the answer): one on
    every linear layer, one of another rank on q/v of the last layer only."""
    import torch
    from peft import LoraConfig, get_peft_model

    folders = {}
    for name, config in {
        "all": LoraConfig(r=4, lora_alpha=8, target_modules=list(onnx_build.LORA_TARGETS)),
        "qv": LoraConfig(
            r=2,
            lora_alpha=2,
            target_modules=["q_proj", "v_proj"],
            use_rslora=True,
            layers_to_transform=[1],
        ),
    }.items():
        model = get_peft_model(tiny_model(tokenizer), config)
        torch.manual_seed(1)
        for key, weight in model.named_parameters():
            if "lora_B" in key:
                torch.nn.init.normal_(weight, std=2.0)
        folders[name] = tmp_path_factory.mktemp(f"adapter-{name}")
        model.save_pretrained(folders[name])
    return folders


@pytest.fixture(scope="module")
def plain(tiny_dir, home):
    """The tiny model built without LoRA slots (what serves when no adapter is trained)."""
    return OnnxGenAIBackend.from_checkpoint(tiny_dir, "tiny", home / "models" / "onnx")


@pytest.fixture(scope="module")
def engine(tiny_dir, adapters, home):
    """The tiny model built with LoRA slots, with both adapters."""
    return OnnxGenAIBackend.from_checkpoint(tiny_dir, "tiny", home / "models" / "onnx", adapters)


@pytest.fixture(scope="module")
def reference(tiny_dir, tokenizer, adapters):
    from transformers import AutoModelForCausalLM

    return TransformersBackend(
        AutoModelForCausalLM.from_pretrained(tiny_dir), tokenizer, "tiny", adapters
    )


def test_greedy_answers_are_the_transformers_tokens(plain, reference, monkeypatch):
    assert plain.context_window == reference.context_window == 256
    monkeypatch.setattr(onnx_genai, "PREFILL_CHUNK", 16)  # prompts read in several chunks
    for request in (
        ask("What is the capital of France?", max_tokens=12),
        ask("List three parts of a car brake.", max_tokens=12),
        ask("Hi " * 60, max_tokens=6),
    ):
        assert plain.count_tokens(request) == reference.count_tokens(request)
        assert answer(plain, request) == answer(reference, request)


def test_adapters_answer_as_peft_does_and_leave_the_base_alone(engine, reference):
    assert sorted(engine.adapters()) == ["all", "qv"]
    answers = {}
    for adapter in (None, "all", "qv", None):
        request = ask("Wheel nut torque?", max_tokens=8, adapter=adapter)
        answers[adapter] = answer(engine, request)
        assert answers[adapter] == answer(reference, request)
    assert len({answers[a][0] for a in (None, "all", "qv")}) == 3  # each adapter changes it


def test_tool_calls_and_json_answers_parse_and_match(engine, reference):
    call = ask("Wheel nut torque?", tools=[TOOL], tool_choice="required", max_tokens=48)
    _, calls, finish, _ = answer(engine, call)
    assert finish == "tool_calls" and calls[0][0] == "lookup_spec"
    assert calls[0][1]["item"] in ("torque", "capacity")
    schema = ask("Assess the dent.", response_schema=VERDICT, max_tokens=24, adapter="all")
    text, _, finish, _ = answer(engine, schema)
    assert set(json.loads(text)) == {"severity", "cost"} and finish == "stop"
    for request in (call, schema):
        assert answer(engine, request) == answer(reference, request)


def test_stop_sequences_and_seeded_sampling(engine, reference):
    free, _, _, _ = answer(engine, ask("Tell me about brakes.", max_tokens=12))
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    request = ask("Tell me about brakes.", max_tokens=12, stop=[stop])
    text, _, finish, _ = answer(engine, request)
    assert text == free[: free.index(stop)] and finish == "stop"
    sampled = ask("Tell me about brakes.", max_tokens=8, temperature=0.9, top_p=0.9, seed=5)
    assert answer(engine, sampled) == answer(reference, sampled) == answer(engine, sampled)


def test_unknown_adapter_deadline_and_context_window(engine):
    with pytest.raises(GenerationError, match=r"unknown adapter 'nope' \(adapters: all, qv\)"):
        list(engine.stream(ask("Hi", adapter="nope")))
    with pytest.raises(DeadlineExceeded):
        list(engine.stream(ask("Hi", deadline=time.monotonic() - 1)))
    assert engine.context_window == 256  # the tiny model's max_position_embeddings
    *_, usage = answer(engine, ask("Hi " * 100, max_tokens=200))
    assert usage.input_tokens + usage.output_tokens == 256  # the answer ends at the window


def test_a_build_is_reused_and_an_incomplete_one_built_again(tiny_dir, home, monkeypatch):
    cache = home / "cache-test"
    runs = fake_engine_builds(monkeypatch)
    first = onnx_build.build_model(tiny_dir, cache).path
    (cache / f".{first.name}-crashed").mkdir()  # a build that died half-way is ignored
    assert onnx_build.build_model(tiny_dir, cache).path == first and len(runs) == 1
    (first / "model.onnx.data").write_bytes(b"cut")  # a damaged file
    assert onnx_build.build_model(tiny_dir, cache).path == first and len(runs) == 2
    (first / onnx_build.MANIFEST).unlink()  # no manifest: never finished
    assert onnx_build.build_model(tiny_dir, cache).path == first and len(runs) == 3
    assert (first / "model.onnx.data").read_bytes() == b"weights" * 100
    # another precision (or engine version, or changed weights) is another build
    assert onnx_build.build_model(tiny_dir, cache, precision="int4").path != first


def test_adapters_the_engine_cannot_apply_are_refused(engine, tiny_dir, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
    get_peft_model(tiny_model(tokenizer), config).save_pretrained(tmp_path)
    with pytest.raises(onnx_build.EngineUnavailable, match=r"modules_to_save.*TUNEGRAPH_ENGINE"):
        onnx_build.build_adapter(tmp_path, engine.build, tmp_path / "cache")


def test_the_engine_setting_picks_the_backend(plain, tiny_dir, home, monkeypatch, caplog):
    store = composition.model_store(Settings(home=home))
    settings = Settings(home=home, text_model=str(tiny_dir))
    chosen = composition.local_backend(settings, store, str(tiny_dir), {})
    assert isinstance(chosen, OnnxGenAIBackend) and chosen.build == plain.build  # cached
    monkeypatch.setattr(onnx_build, "engine_version", lambda: None)  # as if not installed
    with pytest.raises(
        onnx_build.EngineUnavailable, match=r"ENGINE=onnx.*pip install -e '\.\[engine\]'"
    ):
        composition.local_backend(settings.replace(engine="onnx"), store, str(tiny_dir), {})
    # the API's logger may not propagate (the server's JSON log): listen on composition's own
    monkeypatch.setattr(
        logging.getLogger("tunegraph.api.composition"), "handlers", [caplog.handler]
    )
    fallback = composition.local_backend(settings, store, str(tiny_dir), {})
    assert isinstance(fallback, TransformersBackend)
    assert "TUNEGRAPH_ENGINE=auto: onnxruntime-genai is not installed" in caplog.text


def test_concurrent_requests_are_batched_and_answer_as_they_do_alone(engine):
    """Plain text, stop sequences, sampling, a tool call and a JSON answer, on the base and
    both adapters, sent at once: batched by adapter, each answer the one it gets alone."""
    requests = [
        ask("What is the capital of France?", max_tokens=12),
        ask("Hi " * 20, max_tokens=5),
        ask("Tell me about brakes.", max_tokens=12, temperature=0.9, top_p=0.9, seed=5),
        ask("Wheel nut torque?", tools=[TOOL], tool_choice="required", max_tokens=48),
        ask("Assess the dent.", response_schema=VERDICT, max_tokens=24, adapter="all"),
        ask("Wheel nut torque?", max_tokens=8, adapter="all"),
        ask("Wheel nut torque?", max_tokens=8, adapter="qv"),
    ]
    alone = [answer(engine, request) for request in requests]
    before = len(engine._batcher.batches)
    together: list = [None] * len(requests)
    threads = [
        threading.Thread(target=lambda i=i: together.__setitem__(i, answer(engine, requests[i])))
        for i in range(len(requests))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert together == alone
    assert max(list(engine._batcher.batches)[before:]) > 1


def test_eval_text_answers_on_the_engine_as_on_transformers(tiny_dir, adapters, home, tmp_path):
    """``eval text``'s answerer is the engine with the adapter; greedy fp32 answers, and so
    every score but latency, are those of the transformers path."""
    import shutil

    from finetune.artifact import Manifest
    from finetune.evaluation import evaluate_text
    from tests.finetune.test_evaluation import QUESTIONS

    settings = Settings(home=home, text_model=str(tiny_dir))
    store = composition.model_store(settings)
    shutil.copytree(adapters["all"], settings.adapters_dir / "tuned", dirs_exist_ok=True)
    Manifest("text-lora", str(tiny_dir)).write(settings.adapters_dir / "tuned")
    questions, blocks = tmp_path / "qa.jsonl", tmp_path / "blocks.jsonl"
    questions.write_text("".join(json.dumps(q.to_dict()) + "\n" for q in QUESTIONS))
    blocks.write_text(json.dumps({"id": "b1", "text": "Wheel bolt torque: 120 Nm"}) + "\n")
    answerer = composition.text_answerer(settings, store, "tuned")
    assert answerer is not None
    common = {"base_model": "unused", "questions": questions, "blocks": blocks}

    def scores(**options):
        report = evaluate_text(store, "tuned", report_dir=tmp_path / "r", **common, **options)
        for variant in report.values():
            for key in [k for k in variant if "latency" in k]:
                del variant[key]
        return report

    engine_scores = scores(answerer=answerer, max_new_tokens=10)
    assert list(engine_scores) == ["base", "finetuned (tuned)"]
    assert engine_scores == scores(max_new_tokens=10, batch_size=1)
    transformers = settings.replace(engine="transformers")
    assert composition.text_answerer(transformers, store, "tuned") is None
