"""Decode speed of the embedded SmolLM2: transformers against the ONNX Runtime GenAI engine.

Baseline, measured in the same run on the same prompts: transformers eager (``generate``,
fp32, greedy). Compared: the engine through its own API (an ``og.Generator`` stepping with
``generate_next_token``) and tunegraph's :class:`OnnxGenAIBackend` in-process (a ChatRequest
in, streamed events out), both on the fp32 build. Batch 1, up to 128 new tokens, greedy; the
three take turns on each prompt. Tokens/s counts new tokens over the whole call (prompt
included); time to first token is to the first new token (the backend: its first event).
The answers' texts are compared too: fp32 greedy decoding should give the same text.

    python benchmarks/decode.py [--quick] [--tokens N]

Uses the model cache under TUNEGRAPH_HOME (the first run converts the GGUF and builds the
engine's model, ~1 minute). Needs the engine extra: pip install -e '.[engine]'.

Last line: {"backend_tokens_per_s", "engine_tokens_per_s", "transformers_tokens_per_s",
"speedup_vs_transformers", "backend_over_engine", ...}
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import onnxruntime_genai as og
import torch

from agents.backends.base import ChatRequest
from agents.backends.onnx_genai import OnnxGenAIBackend
from api import composition
from api.settings import Settings
from finetune.onnx_build import engine_version

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "Write a detailed step-by-step guide to replacing the front brake pads on a car.",
    "Explain how a car's engine cooling system works, part by part.",
    "Describe how to inspect a used car before buying it, in detail.",
    "Write a long story about a mechanic who restores an old truck.",
]


def run_transformers(
    model, tokenizer, ids: list[int], tokens: int
) -> tuple[float, float, str, int]:
    """(seconds, seconds to the first token, text, new tokens) of ``generate``; the first
    token is timed as a separate one-token call."""
    inputs = torch.tensor([ids])
    with torch.no_grad():
        started = time.perf_counter()
        model.generate(inputs, max_new_tokens=1, do_sample=False)
        first = time.perf_counter() - started
        started = time.perf_counter()
        out = model.generate(inputs, max_new_tokens=tokens, do_sample=False)
        seconds = time.perf_counter() - started
    new = [t for t in out[0, len(ids) :].tolist() if t != tokenizer.eos_token_id]
    return seconds, first, tokenizer.decode(new, skip_special_tokens=True), len(new)


def run_engine(model, tokenizer, ids: list[int], tokens: int) -> tuple[float, float, str, int]:
    """(seconds, seconds to the first token, text, new tokens) of the engine's own loop."""
    started = time.perf_counter()
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    new, first = [], None
    while not generator.is_done():
        generator.generate_next_token()
        new.append(int(generator.get_next_tokens()[0]))
        first = first or time.perf_counter() - started
    seconds = time.perf_counter() - started
    new = [t for t in new if t != tokenizer.eos_token_id]
    return seconds, first, tokenizer.decode(new, skip_special_tokens=True), len(new)


def run_backend(backend, prompt: str, tokens: int) -> tuple[float, float, str, int]:
    """(seconds, seconds to the first event, text, new tokens) of one streamed ChatRequest."""
    request = ChatRequest(messages=[{"role": "user", "content": prompt}], max_tokens=tokens)
    started = time.perf_counter()
    first, text, usage = None, "", None
    for event in backend.stream(request):
        first = first or time.perf_counter() - started
        text += event.text
        usage = event.usage or usage
    return time.perf_counter() - started, first, text, usage.output_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 prompts (< 5 minutes)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per answer")
    args = parser.parse_args()
    prompts = PROMPTS[:2] if args.quick else PROMPTS

    settings = Settings.from_env()
    store = composition.model_store(settings)
    source = store.checkpoint_dir(MODEL)
    model, tokenizer = store.load_causal_lm(MODEL)
    backend = OnnxGenAIBackend.from_checkpoint(
        source, MODEL, settings.models_dir / "onnx", log=print
    )
    engine = og.Model(str(backend.build.path))  # the same build, through the engine's own API
    print(f"onnxruntime-genai {engine_version()}, fp32 build {backend.build.path}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    runs = {"transformers": [], "engine": [], "backend": []}
    same = {"engine": True, "backend": True}
    for i, prompt in enumerate(prompts):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        if i == 0:  # the engine's first-call set-up, untimed
            run_engine(engine, tokenizer, ids, 4)
            run_backend(backend, prompt, 4)
        results = {
            "engine": run_engine(engine, tokenizer, ids, args.tokens),
            "backend": run_backend(backend, prompt, args.tokens),
            "transformers": run_transformers(model, tokenizer, ids, args.tokens),
        }
        for name, result in results.items():
            runs[name].append(result)
            seconds, first, _, count = result
            print(
                f"{name:>12}: {count} tokens in {seconds:.2f} s ({count / seconds:.1f}/s), "
                f"first token {1000 * first:.0f} ms"
            )
        reference = results["transformers"][2]
        for name in same:
            same[name] &= results[name][2] == reference

    def rate(name: str) -> float:
        return sum(r[3] for r in runs[name]) / sum(r[0] for r in runs[name])

    def first_ms(name: str) -> float:
        return round(1000 * statistics.median(r[1] for r in runs[name]), 1)

    backend_rate, engine_rate, base_rate = rate("backend"), rate("engine"), rate("transformers")
    print(f"same text as transformers: engine {same['engine']}, backend {same['backend']}")
    print(
        json.dumps(
            {
                "backend_tokens_per_s": round(backend_rate, 1),
                "engine_tokens_per_s": round(engine_rate, 1),
                "transformers_tokens_per_s": round(base_rate, 1),
                "speedup_vs_transformers": round(backend_rate / base_rate, 2),
                "backend_over_engine": round(backend_rate / engine_rate, 3),
                "ttft_ms_backend": first_ms("backend"),
                "ttft_ms_engine": first_ms("engine"),
                "ttft_ms_transformers": first_ms("transformers"),
                "same_text_as_transformers": same["backend"] and same["engine"],
                "precision": "fp32",
                "prompts": len(prompts),
                "new_tokens": sum(r[3] for r in runs["backend"]),
            }
        )
    )


if __name__ == "__main__":
    main()
