"""Decode speed of the embedded SmolLM2: transformers against the ONNX Runtime GenAI engine.

Baseline, measured in the same run on the same prompts: transformers eager (``generate``,
fp32, greedy). Compared: the engine through its own API (an ``og.Generator`` stepping with
``generate_next_token``) and tunegraph's :class:`OnnxGenAIBackend` in-process (a ChatRequest
in, streamed events out), both on the fp32 build. Batch 1, up to 128 new tokens, greedy; the
three take turns on each prompt. Tokens/s counts new tokens over the whole call (prompt
included); time to first token is to the first new token (the backend: its first event).
The answers' texts are compared too: fp32 greedy decoding should give the same text.

Then the served path, on the same backend: the API's ``/v1/chat/completions`` (mode ``base``,
streamed, over a local HTTP server in this process: werkzeug's threaded server, the HTTP and
JSON work of gunicorn's threads without its process) against the backend called in-process
with the same messages (the ``base`` mode's system prompt and question); HTTP overhead is the
extra time per answer. Last, throughput: the same answers from one client after another, then
from four clients at once (the backend batches them), in-process and over HTTP.

    python benchmarks/decode.py [--quick] [--tokens N]

Uses the model cache under TUNEGRAPH_HOME (the first run converts the GGUF and builds the
engine's model, ~1 minute). Needs the engine extra: pip install -e '.[engine]'.

Last line: {"backend_tokens_per_s", "engine_tokens_per_s", "transformers_tokens_per_s",
"speedup_vs_transformers", "backend_over_engine", "http_overhead_pct",
"four_clients_over_one", "http_four_clients_over_one", "http_p50_s_64_tokens", ...}
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import onnxruntime_genai as og
import torch
from werkzeug.serving import make_server

from agents.backends.base import ChatRequest
from agents.backends.onnx_genai import OnnxGenAIBackend
from agents.chat_model import LocalChatModel
from agents.context import AgentContext
from agents.prompts import manual_question
from api import composition
from api.server.app import create_app
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


def run_backend(
    backend, prompt: str, tokens: int, messages: list | None = None
) -> tuple[float, float, str, int]:
    """(seconds, seconds to the first event, text, new tokens) of one streamed ChatRequest."""
    messages = messages or [{"role": "user", "content": prompt}]
    request = ChatRequest(messages=messages, max_tokens=tokens)
    started = time.perf_counter()
    first, text, usage = None, "", None
    for event in backend.stream(request):
        first = first or time.perf_counter() - started
        text += event.text
        usage = event.usage or usage
    return time.perf_counter() - started, first, text, usage.output_tokens


def run_http(url: str, prompt: str, tokens: int) -> tuple[float, float, str, int]:
    """(seconds, seconds to the first text chunk, text, new tokens) of one streamed answer of
    the API's ``base`` mode."""
    body = {
        "model": "base",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first, text, count = None, "", 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    first = first or time.perf_counter() - started
                    text += choice["delta"]["content"]
            count = (chunk.get("usage") or {}).get("completion_tokens", count)
    return time.perf_counter() - started, first, text, count


def serve(backend, home: Path) -> tuple[str, object]:
    """The API on a free local port, its chat model ``backend``: (url, server)."""
    settings = Settings.from_env().replace(
        home=home, api_keys=(), admin_keys=(), log_level="WARNING"
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    context = AgentContext(llm=LocalChatModel(backend=backend))
    app = create_app(settings=settings, context_factory=lambda _settings: context)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def throughput(call, prompts: list[str], clients: int) -> float:
    """New tokens per second of all ``prompts`` answered by ``call``, ``clients`` at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        counts = [result[3] for result in pool.map(call, prompts)]
    return sum(counts) / (time.perf_counter() - started)


def served(backend, prompts: list[str], tokens: int) -> dict:
    """HTTP against in-process per answer, 64-token answers over HTTP, and the throughput of
    one client and of four."""
    with tempfile.TemporaryDirectory() as home:
        url, server = serve(backend, Path(home))
        try:
            run_http(url, prompts[0], 4)  # the app's first-request set-up, untimed
            inproc, http = [], []
            for prompt in prompts:
                messages = manual_question(prompt)
                inproc.append(run_backend(backend, prompt, tokens, messages))
                http.append(run_http(url, prompt, tokens))
                if http[-1][2] != inproc[-1][2]:
                    print("  note: the HTTP answer differs from the in-process one")
            short = [run_http(url, prompt, 64)[0] for prompt in prompts]
            load = prompts * 2  # eight answers (four in --quick)
            one = throughput(lambda p: run_backend(backend, p, tokens), load, 1)
            four = throughput(lambda p: run_backend(backend, p, tokens), load, 4)
            http_one = throughput(lambda p: run_http(url, p, tokens), load, 1)
            http_four = throughput(lambda p: run_http(url, p, tokens), load, 4)
        finally:
            server.shutdown()
    seconds = sum(r[0] for r in inproc)
    overhead = (sum(r[0] for r in http) - seconds) / seconds
    print(
        f"HTTP: {100 * overhead:+.1f}% time per answer over in-process; 64-token answers "
        f"p50 {statistics.median(short):.2f} s"
    )
    print(
        f"throughput: in-process {one:.1f} tok/s (1 client), {four:.1f} (4 clients, batched); "
        f"HTTP {http_one:.1f} / {http_four:.1f}; batches run: {list(backend._batcher.batches)[-12:]}"
    )
    return {
        "http_overhead_pct": round(100 * overhead, 1),
        "http_p50_s_64_tokens": round(statistics.median(short), 3),
        "one_client_tokens_per_s": round(one, 1),
        "four_clients_tokens_per_s": round(four, 1),
        "four_clients_over_one": round(four / one, 2),
        "http_four_clients_over_one": round(http_four / http_one, 2),
    }


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
    del model  # transformers' copy of the weights is not needed any more
    serving = served(backend, prompts, args.tokens)
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
                **serving,
                "precision": "fp32",
                "prompts": len(prompts),
                "new_tokens": sum(r[3] for r in runs["backend"]),
            }
        )
    )


if __name__ == "__main__":
    main()
