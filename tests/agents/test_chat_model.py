from __future__ import annotations

import asyncio
import json
from typing import Literal

import pytest
import torch
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from agents.backends.base import GenerationError
from agents.backends.transformers import TransformersBackend
from agents.chat_model import LocalChatModel
from tests.finetune.test_text_lora import tiny_model

pytestmark = pytest.mark.real_model  # the SmolLM2 tokenizer and chat template


@tool
def lookup_spec(vehicle: str, item: Literal["torque", "capacity", "gap"], count: int) -> str:
    """Look up a specification value in the service manual."""
    return "110 Nm"


class Verdict(BaseModel):
    severity: Literal["minor", "moderate", "severe"]
    cost: int = Field(ge=0, le=100_000)  # bounded: random weights never stop a free number
    parts: list[Literal["hood", "front_bumper", "windshield"]] = Field(max_length=3)


@pytest.fixture(scope="module")
def tokenizer(model_store):
    return model_store.load_causal_lm("smollm2-135m-instruct")[1]


@pytest.fixture(scope="module")
def adapter_dir(tokenizer, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights, saved with a manifest and tokenizer."""
    from peft import LoraConfig, get_peft_model

    path = tmp_path_factory.mktemp("adapter")
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(tiny_model(tokenizer), config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "tunegraph-manifest.json").write_text(json.dumps({"base_model": "tiny"}))
    return path


@pytest.fixture(scope="module")
def llm(tokenizer, adapter_dir):
    backend = TransformersBackend(tiny_model(tokenizer), tokenizer, "tiny", {"ft": adapter_dir})
    return LocalChatModel(backend=backend, max_tokens=300)


def test_forced_tool_calls_from_random_weights_always_match_the_schema(llm):
    bound = llm.bind_tools([lookup_spec], tool_choice="any")
    for seed in range(4):
        message = bound.invoke("Wheel nut torque?", temperature=1.0, seed=seed)
        assert message.tool_calls, message
        for call in message.tool_calls:
            assert call["name"] == "lookup_spec"
            # The tool's own pydantic schema validates the arguments.
            lookup_spec.args_schema.model_validate(call["args"])
        assert message.response_metadata["finish_reason"] == "tool_calls"


def test_structured_output_parses_every_time(llm):
    structured = llm.with_structured_output(Verdict)
    for seed in range(4):
        verdict = structured.invoke("Assess the damage.", temperature=1.0, seed=seed)
        assert isinstance(verdict, Verdict)


def test_structured_output_with_include_raw_and_a_json_schema(llm):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    result = llm.with_structured_output(schema, include_raw=True).invoke("ok?")
    assert result["parsing_error"] is None
    assert isinstance(result["parsed"]["ok"], bool)
    assert result["raw"].usage_metadata["output_tokens"] > 0


def test_streamed_tool_calls_arrive_as_tool_call_chunks(llm):
    bound = llm.bind_tools([lookup_spec], tool_choice="lookup_spec")
    chunks = list(bound.stream("torque?"))
    parts = [p for c in chunks for p in c.tool_call_chunks]
    assert parts and all(p["name"] == "lookup_spec" and p["id"] for p in parts)
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.tool_calls[0]["args"] == json.loads(parts[0]["args"])


def test_streamed_text_equals_the_whole_answer_and_usage_counts_tokens(llm, tokenizer):
    whole = llm.invoke("Describe a dent.", max_tokens=20)
    pieces = [c.content for c in llm.stream("Describe a dent.", max_tokens=20)]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == whole.content
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe a dent."}],
        add_generation_prompt=True,
        return_dict=True,
    )["input_ids"]
    usage = whole.usage_metadata
    assert usage["input_tokens"] == len(prompt)
    assert usage["output_tokens"] == 20
    assert usage["total_tokens"] == len(prompt) + 20
    assert whole.response_metadata["finish_reason"] == "length"


def test_a_stop_sequence_cuts_the_answer_before_it(llm):
    text = llm.invoke("Describe a dent.", max_tokens=30).content
    stop = text[10:14]
    cut = llm.invoke("Describe a dent.", max_tokens=30, stop=[stop])
    assert cut.content == text[: text.index(stop)]
    assert cut.response_metadata["finish_reason"] == "stop"
    streamed = "".join(
        c.content for c in llm.stream("Describe a dent.", max_tokens=30, stop=[stop])
    )
    assert streamed == cut.content


def test_adapters_switch_without_leaking_into_the_base(llm, tokenizer, adapter_dir):
    from peft import PeftModel

    prompt = "Describe a dent."
    base_before = llm.invoke(prompt, max_tokens=12).content
    tuned = llm.with_adapter("ft").invoke(prompt, max_tokens=12)
    base_after = llm.invoke(prompt, max_tokens=12).content
    assert base_before == base_after != tuned.content
    assert tuned.response_metadata["model_name"] == "tiny+ft"
    # The adapter answers as it would alone on a fresh base.
    alone = PeftModel.from_pretrained(tiny_model(tokenizer), str(adapter_dir)).eval()
    reference = TransformersBackend(alone, tokenizer, "tiny")
    assert LocalChatModel(backend=reference).invoke(prompt, max_tokens=12).content == tuned.content


def test_tool_results_go_back_to_the_model(llm):
    call = llm.bind_tools([lookup_spec], tool_choice="any").invoke("torque?")
    history = [
        HumanMessage("torque?"),
        call,
        ToolMessage("110 Nm", tool_call_id=call.tool_calls[0]["id"]),
    ]
    answer = llm.bind_tools([lookup_spec], tool_choice="none").invoke(history, max_tokens=5)
    assert answer.content and not answer.tool_calls


def test_async_invoke_and_stream(llm):
    async def run():
        whole = await llm.ainvoke("Describe a dent.", max_tokens=8)
        pieces = [c.content async for c in llm.astream("Describe a dent.", max_tokens=8)]
        return whole.content, "".join(pieces)

    whole, streamed = asyncio.run(run())
    assert whole == streamed and whole


def test_unknown_adapter_and_wrong_base_are_clear_errors(llm, tokenizer, adapter_dir):
    with pytest.raises(ValueError, match=r"unknown adapter 'nope'.*ft"):
        llm.with_adapter("nope")
    with pytest.raises(GenerationError, match="trained on 'tiny', not on the loaded base 'other'"):
        TransformersBackend(tiny_model(tokenizer), tokenizer, "other", {"ft": adapter_dir})
    with pytest.raises(GenerationError, match=r"no adapter_config\.json"):
        TransformersBackend(tiny_model(tokenizer), tokenizer, "tiny", {"x": adapter_dir / "no"})


def test_a_cut_json_answer_is_an_error_not_a_broken_value(llm):
    class Long(BaseModel):
        text: str

    with pytest.raises(GenerationError, match="max_tokens=3"):
        llm.with_structured_output(Long).invoke("write", max_tokens=3)


def test_weights_stay_unchanged_by_generation(llm):
    before = {k: v.clone() for k, v in llm.backend.model.state_dict().items()}
    llm.with_adapter("ft").invoke("x", max_tokens=3)
    after = llm.backend.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
