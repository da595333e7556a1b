"""The engine's ceiling on this machine: how many tokens/s SmolLM2-135M (fp32, the served
precision, or ``--precision``) can read and write at all, and what that allows the comparison.

Baseline, measured in the same run: batch 1. Measured: prefill (reading a prompt) at a few
prompt lengths, batch 1 and 4; decode (writing, 64 new tokens, greedy) through the engine's own
loop at batch 1, 4, 8, 16 and 32; then tunegraph's backend serving the same number of
concurrent clients with ``max_batch`` equal to it (its batcher, grammar-free greedy decoding in
Python), 1 and 8 clients, to show what the batcher keeps of the engine's rate.

With ``--report`` (a ``report.json`` of ``tunegraph compare``), the tokens each call read and
wrote, per approach and chat mode, turn into the least time those calls can take at the
measured rates (prompt tokens at the best prefill rate, new tokens at the best decode rate,
i.e. perfect batching and nothing else running), and the least time the whole test split
(``--photos``, ``--questions`` per chat mode: issue 23's minimum by default; the demo's test split
holds 120 photos and 399 questions) needs. Calls whose tokens the report does not know are
left out and named.

    python benchmarks/engine_throughput.py [--quick] [--precision fp32|int8|int4]
        [--report .tunegraph/runs/demo/report.json] [--photos 120] [--questions 200]

Last line: {"prefill_tokens_per_s": {...}, "decode_tokens_per_s": {...},
"backend_tokens_per_s": {...}, "batch1_decode_tokens_per_s", "best_decode_tokens_per_s",
"best_over_batch1", "budget_min_s" (with --report), ...}
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime_genai as og

from agents.backends.base import ChatRequest
from agents.backends.onnx_genai import OnnxGenAIBackend
from api import composition
from api.settings import Settings

MODEL = "smollm2-135m-instruct"
QUESTION = "Explain how a car's engine cooling system works, part by part."
NEW_TOKENS = 64


def prefill_rate(model, length: int, batch: int) -> float:
    """Prompt tokens/s of one prefill of ``batch`` random prompts of ``length`` tokens."""
    ids = np.random.RandomState(0).randint(100, 40000, size=(batch, length)).astype(np.int32)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=length + 8, batch_size=batch)
    generator = og.Generator(model, params)
    started = time.perf_counter()
    generator.append_tokens(ids)
    generator.get_logits()
    return batch * length / (time.perf_counter() - started)


def decode_rate(model, prompt: list[int], batch: int, tokens: int) -> float:
    """New tokens/s of the engine's own greedy loop, ``batch`` copies of ``prompt`` (the
    prefill is not timed)."""
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=len(prompt) + tokens, batch_size=batch, do_sample=False, min_length=0
    )
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([prompt] * batch, dtype=np.int32))
    steps = 0
    started = time.perf_counter()
    while steps < tokens and not generator.is_done():
        generator.generate_next_token()
        steps += 1
    return batch * steps / (time.perf_counter() - started)


def backend_rate(backend: OnnxGenAIBackend, clients: int, tokens: int) -> float:
    """New tokens/s of ``clients`` concurrent requests through the backend (each asks for up
    to ``tokens`` new tokens; the rate counts those written; the backend batches up to 8)."""

    def one(_: int) -> int:
        request = ChatRequest(messages=[{"role": "user", "content": QUESTION}], max_tokens=tokens)
        usage = [event.usage for event in backend.stream(request) if event.usage]
        return usage[-1].output_tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        written = sum(pool.map(one, range(clients)))
    return written / (time.perf_counter() - started)


def split_budget(report: dict, prefill: float, decode: float, photos: int, questions: int):
    """Per approach/mode: the calls' mean tokens read and written in ``report`` and the least
    seconds per call at the ceiling; the least seconds for the whole split."""
    rows, total = {}, 0.0
    for kind, key, count in (("assessment", "assessment", photos), ("chat", "chat", questions)):
        for name, entry in (report.get("costs", {}).get(key) or {}).items():
            tokens_in = entry.get("input_tokens_per_call")
            tokens_out = entry.get("output_tokens_per_call")
            if tokens_in is None or tokens_out is None:
                print(f"{kind} {name}: the report does not know its tokens; left out")
                continue
            seconds = tokens_in / prefill + tokens_out / decode
            rows[f"{kind} {name}"] = {
                "input_tokens_per_call": tokens_in,
                "output_tokens_per_call": tokens_out,
                "min_s_per_call": round(seconds, 2),
                "items": count,
                "min_s": round(seconds * count, 1),
            }
            total += seconds * count
    return rows, round(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer prompt lengths (~2 min)")
    parser.add_argument("--report", type=Path, help="a compare report.json to budget")
    parser.add_argument(
        "--precision", default="fp32", choices=("fp32", "int8", "int4"), help="the base's build"
    )
    parser.add_argument("--photos", type=int, default=120, help="test photos to budget")
    parser.add_argument(
        "--questions", type=int, default=200, help="questions per chat mode to budget"
    )
    args = parser.parse_args()

    settings = Settings.from_env()
    store = composition.model_store(settings)
    source = store.checkpoint_dir(MODEL)
    backend = OnnxGenAIBackend.from_checkpoint(
        source,
        MODEL,
        settings.models_dir / "onnx",
        precision=args.precision,
        log=print,
        max_batch=8,
    )
    model = backend.model  # the same build, stepped through the engine's own API
    tokenizer = backend.tokenizer
    prompt = tokenizer(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
        )
    )["input_ids"]
    decode_rate(model, prompt, 1, 4)  # the engine's first-call set-up, untimed

    shapes = (
        [(128, 1), (512, 1), (512, 4)]
        if args.quick
        else [(64, 1), (128, 1), (256, 1), (512, 1), (1024, 1), (512, 4)]
    )
    prefill = {}
    for length, batch in shapes:
        prefill[f"{length}x{batch}"] = rate = round(prefill_rate(model, length, batch), 1)
        print(f"prefill {length} tokens x {batch}: {rate} tokens/s", flush=True)
    decode = {}
    for batch in (1, 4, 8, 16, 32):
        decode[batch] = rate = round(decode_rate(model, prompt, batch, NEW_TOKENS), 1)
        print(f"decode batch {batch}: {rate} new tokens/s", flush=True)
    served = {}
    for clients in (1, 8):
        served[clients] = rate = round(backend_rate(backend, clients, NEW_TOKENS), 1)
        print(f"backend, {clients} concurrent clients: {rate} new tokens/s", flush=True)

    best_prefill, best_decode = max(prefill.values()), max(decode.values())
    result = {
        "prefill_tokens_per_s": prefill,
        "decode_tokens_per_s": decode,
        "backend_tokens_per_s": served,
        "batch1_decode_tokens_per_s": decode[1],
        "best_decode_tokens_per_s": best_decode,
        "best_over_batch1": round(best_decode / decode[1], 2),
        "best_prefill_tokens_per_s": best_prefill,
        "new_tokens": NEW_TOKENS,
        "precision": args.precision,
    }
    if args.report:
        report = json.loads(args.report.read_text("utf-8"))
        rows, total = split_budget(report, best_prefill, best_decode, args.photos, args.questions)
        for name, row in rows.items():
            print(
                f"{name:>28}: {row['input_tokens_per_call']:>7} in, "
                f"{row['output_tokens_per_call']:>6} out -> >= {row['min_s_per_call']} s a call, "
                f">= {row['min_s']} s for {row['items']}"
            )
        print(
            f"{args.photos} photos and {args.questions} questions per mode need >= {total} s of "
            "the SmolLM2 network alone (the text model and the VLM's decoder)"
        )
        result.update(budget=rows, budget_min_s=total)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
