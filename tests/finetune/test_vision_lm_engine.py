"""The composed vision-language model's decoder on the ONNX engine: the same greedy answers as
the torch loop, a build cached by the decoder's weights (LoRA merged), and torch where the
engine cannot run — on a tiny random-weight decoder with SmolLM2's tokenizer."""

from __future__ import annotations

import pytest
import torch

from finetune import onnx_build
from finetune.constrained import json_grammar, ll_tokenizer
from finetune.vision_lm import ComposedVLM, answer_schema, generate
from finetune.vision_lm.engine import EngineDecoder, engine_decoder
from tests.finetune.test_text_lora import tiny_model

pytest.importorskip("onnxruntime_genai")
pytestmark = pytest.mark.real_model  # SmolLM2's tokenizer and chat template


@pytest.fixture(scope="module")
def tokenizer(model_store):
    return model_store.load_causal_lm("smollm2-135m-instruct")[1]


def _tiny_vlm(tokenizer, seed: int = 1) -> ComposedVLM:
    """A tiny decoder with a LoRA adapter whose B is not zero: the build must merge it."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"])
    decoder = get_peft_model(tiny_model(tokenizer, seed=seed), config)
    for name, weight in decoder.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.5)
    return ComposedVLM(decoder, tokenizer, feature_dim=8, cells=3).eval()


@pytest.fixture(scope="module")
def built(tokenizer, tmp_path_factory):
    cache = tmp_path_factory.mktemp("onnx")
    vlm = _tiny_vlm(tokenizer)
    engine = engine_decoder(vlm, cache)
    assert engine is not None
    return vlm, engine, cache


def test_the_engine_answers_as_the_torch_loop(built, tokenizer):
    vlm, engine, _ = built
    prompt = vlm.prompt("Assess.")
    torch.manual_seed(2)
    features = torch.randn(4, 3, 8) * 3
    tags = [vlm.tag_ids(t) for t in ("no damage", "minor dent on hood", "x", "severe crack")]
    ll_tok = ll_tokenizer(tokenizer, tokenizer.eos_token_id)
    lark = json_grammar(answer_schema())
    args = (vlm, features, prompt, lark, ll_tok)
    on_torch = generate(*args, max_new_tokens=600, tags=tags)
    on_engine = generate(*args, max_new_tokens=600, tags=tags, engine=engine)
    assert [a.text for a in on_engine] == [a.text for a in on_torch]
    assert [a.tokens for a in on_engine] == [a.tokens for a in on_torch]
    assert len({a.text for a in on_engine}) > 1  # the rows really differ
    assert all(a.complete for a in on_engine)
    slow = generate(*args, max_new_tokens=600, tags=tags, engine=engine, fast_forward=False)
    assert [a.text for a in slow] == [a.text for a in on_torch]
    (cut,) = generate(*args[:1], features[:1], *args[2:], max_new_tokens=5, engine=engine)
    assert not cut.complete and cut.tokens == 5
    sampled = generate(*args, max_new_tokens=600, temperature=1.0, engine=engine)
    assert all(a.complete for a in sampled)


def test_the_kv_cache_grows_without_changing_the_logits(built):
    vlm, engine, _ = built
    hidden = vlm.causal_lm.config.hidden_size
    embeds = torch.randn(1, 9, hidden).numpy()
    roomy = engine.start(capacity=64)
    tight = engine.start(capacity=2)
    for part in (embeds[:, :4], embeds[:, 4:5], embeds[:, 5:]):
        expected, got = engine.forward(roomy, part), engine.forward(tight, part)
        assert torch.allclose(expected, got)
    assert tight.buffers[0].shape[2] >= 9 and tight.length == roomy.length == 9
    with torch.inference_mode():
        full = vlm.causal_lm(inputs_embeds=torch.from_numpy(embeds)).logits[0, -1]
    assert torch.allclose(got, full, atol=1e-4)


def test_the_build_is_reused_and_keyed_by_the_merged_weights(built, tokenizer, monkeypatch):
    cache = built[2]
    monkeypatch.setattr(onnx_build, "_run_builder", lambda *args: pytest.fail("built again"))
    assert isinstance(engine_decoder(_tiny_vlm(tokenizer), cache), EngineDecoder)
    assert len([p for p in cache.iterdir() if p.name.startswith("embeds-decoder-")]) == 1
    other = _tiny_vlm(tokenizer, seed=3).decoder.merge_and_unload()
    same = _tiny_vlm(tokenizer).decoder.merge_and_unload()
    assert onnx_build._weights_digest(same) != onnx_build._weights_digest(other)


def test_a_partial_build_is_never_loaded(tokenizer, tmp_path, monkeypatch):
    vlm = _tiny_vlm(tokenizer)
    calls = []

    def failing_builder(source, out, *args):
        calls.append(out)
        (out / "model.onnx").write_bytes(b"half")
        raise onnx_build.EngineUnavailable("the builder stopped half way")

    monkeypatch.setattr(onnx_build, "_run_builder", failing_builder)
    logged = []
    assert engine_decoder(vlm, tmp_path, log=logged.append) is None  # torch decodes instead
    assert calls and "builder stopped half way" in logged[-1]
    assert not [p for p in tmp_path.iterdir()]  # nothing half-built is left to load


def test_without_the_engine_the_decoder_stays_in_torch(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr("finetune.vision_lm.engine.engine_version", lambda: None)
    logged = []
    assert engine_decoder(_tiny_vlm(tokenizer), tmp_path, log=logged.append) is None
    assert "not installed" in logged[0]
