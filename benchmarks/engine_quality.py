"""Answer quality of the fine-tuned text model through the engine, by precision, against
transformers.

Baseline, in the same run on the same questions: transformers ``generate`` with the PEFT
adapter (fp32, greedy, batched as ``eval text`` batches it). Compared: the engine at fp32 with
the adapter loaded per request (what the server runs), and the engine at int8 and int4 on the
adapter merged into the base weights (the builder quantises a plain checkpoint; LoRA slots
need fp32, so a quantised build serves one adapter only). Questions: every SPEC and PROCEDURE
question of the demo's test split, without retrieval. SPEC: exact match of the value;
PROCEDURE: ROUGE-L. Needs the demo's adapter (``tunegraph demo``) and the engine extra.

    python benchmarks/engine_quality.py [--quick] [--adapter NAME]

Last line: {"transformers": {...}, "engine_fp32": {...}, "engine_int8": {...},
"engine_int4": {...}} with spec_exact_match, procedure_rouge_l, tokens_per_s each, and the
differences from transformers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from agents.backends.answerer import backend_answerer
from agents.backends.onnx_genai import OnnxGenAIBackend
from api import composition
from api.settings import Settings
from finetune.evaluation import prompt_messages, score, text_base, transformers_answerer
from finetune.metrics import known_numbers
from ingest.records import QAPair

KINDS = ("SPEC", "PROCEDURE")


def merged_checkpoint(store, base: str, adapter_dir: Path, out: Path) -> Path:
    """The base with the adapter's LoRA merged into its weights, saved as a checkpoint."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    model, tokenizer = store.load_causal_lm(base)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out)
    own = (adapter_dir / "tokenizer_config.json").exists()
    (AutoTokenizer.from_pretrained(str(adapter_dir)) if own else tokenizer).save_pretrained(out)
    return out


def run(name: str, answerer, conversations, adapter, tokens: int, items, known) -> dict:
    started = time.perf_counter()
    answers = answerer(conversations, adapter, tokens, lambda _n: None)
    seconds = time.perf_counter() - started
    scores = score(items, answers, known)
    per_kind = scores["per_kind"]
    result = {
        "spec_exact_match": per_kind.get("SPEC", {}).get("spec_exact_match"),
        "procedure_rouge_l": per_kind.get("PROCEDURE", {}).get("rouge_l"),
        "seconds": round(seconds, 1),
    }
    print(f"{name:>16}: {result}", flush=True)
    return result, [a.text for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 questions per kind")
    parser.add_argument("--adapter", default=None, help="[default: TUNEGRAPH_TEXT_ADAPTER]")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per answer at most")
    args = parser.parse_args()
    settings = Settings.from_env()
    store = composition.model_store(settings)
    adapter = args.adapter or settings.text_adapter
    adapter_dir = settings.adapters_dir / adapter
    if not (adapter_dir / "adapter_config.json").exists():
        raise SystemExit(f"no adapter {adapter!r} in {settings.adapters_dir}: run tunegraph demo")
    questions = settings.demo_dir / "manual" / "qa" / "test.jsonl"
    items = [QAPair(**json.loads(line)) for line in questions.read_text("utf-8").splitlines()]
    items = [q for q in items if q.kind in KINDS]
    if args.quick:
        items = [q for kind in KINDS for q in [i for i in items if i.kind == kind][:24]]
    blocks = settings.demo_dir / "manual" / "blocks.jsonl"
    known = known_numbers(
        [json.loads(line)["text"] for line in blocks.read_text("utf-8").splitlines()]
    )
    conversations = [prompt_messages(q) for q in items]
    counts = {kind: sum(q.kind == kind for q in items) for kind in KINDS}
    print(f"{len(items)} questions {counts}, adapter {adapter}")
    base = text_base(adapter_dir, settings.text_model)
    common = (conversations, adapter, args.tokens, items, known)

    results, texts = {}, {}
    reference = transformers_answerer(store, base, adapter_dir, batch_size=8)
    results["transformers"], texts["transformers"] = run("transformers", reference, *common)
    del reference
    served = composition.text_answerer(settings.replace(engine="onnx"), store, adapter)
    results["engine_fp32"], texts["engine_fp32"] = run("engine fp32", served, *common)
    del served
    with tempfile.TemporaryDirectory() as scratch:
        merged = merged_checkpoint(store, base, adapter_dir, Path(scratch) / "merged")
        for precision in ("int8", "int4"):
            backend = OnnxGenAIBackend.from_checkpoint(
                merged, adapter, Path(scratch) / "onnx", precision=precision, log=print
            )
            answerer = backend_answerer(backend, settings.max_batch_size)
            key = f"engine_{precision}"
            results[key], texts[key] = run(
                f"engine {precision}", answerer, conversations, None, args.tokens, items, known
            )
    reference_texts = texts["transformers"]
    for key, result in results.items():
        same = sum(a == b for a, b in zip(texts[key], reference_texts, strict=True))
        result["same_answer_as_transformers"] = round(same / len(items), 3)
        for metric in ("spec_exact_match", "procedure_rouge_l"):
            if result[metric] is not None and results["transformers"][metric] is not None:
                result[f"{metric}_diff"] = round(
                    result[metric] - results["transformers"][metric], 3
                )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
