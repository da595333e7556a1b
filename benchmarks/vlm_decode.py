"""Decode speed (tokens/s) of the composed vision-language model's answers: its decoder on the
ONNX engine (``finetune/vision_lm/engine.py``) against the torch loop, both with the grammar's
forced tokens appended in the same pass.

Baseline, measured in the same run on the same inputs, taking turns: ``generate`` with the
decoder in torch (fp32, batched as the assessor calls it: all photos of a request in one
batch). The model: SmolLM2-135M-Instruct with the quick recipe's LoRA (r=16 on every linear
layer of the last 8 layers, random non-zero weights, so the engine's build must merge them), a
random projector and random 5-cell features with tags — random weights, real sizes: the
decoder's cost per token is that of a trained model's. The answers are greedy and fp32 on both
sides: ``same_text`` is the share of photos whose answers are identical.

    python benchmarks/vlm_decode.py [--quick] [--photos 8] [--rounds 2]

Last line: {"tokens_per_s": ..., "baseline_tokens_per_s": ..., "speedup": ...,
"cpu_speedup": ..., "same_text": ..., "photos": ..., "tokens": ..., "build_s": ...}
(``cpu_speedup``: the ratio of process CPU seconds, steadier than wall time on a shared
machine.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from api import composition
from api.settings import Settings
from finetune.constrained import json_grammar, ll_tokenizer
from finetune.trainer import DEFAULT_TARGETS
from finetune.vision_lm import ComposedVLM, answer_schema, generate
from finetune.vision_lm.engine import engine_decoder

TAGS = [
    "minor dent on hood",
    "severe scratch on front_bumper; moderate crack on windshield",
    "no damage",
    "moderate dent on rear_door_left",
    "severe glass_shatter on windshield",
    "minor scratch on trunk; minor dent on trunk",
    "moderate lamp_broken on headlight_left",
    "minor scratch on hood",
]


def composed_vlm(photos: int, feature_dim: int = 600, seed: int = 0):
    """The real-sized composed model with random LoRA and projector, and random inputs."""
    from peft import LoraConfig, get_peft_model

    store = composition.model_store(Settings.from_env())
    base, tokenizer = store.load_causal_lm("smollm2-135m-instruct")
    torch.manual_seed(seed)
    layers = base.config.num_hidden_layers
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=list(DEFAULT_TARGETS),
        layers_to_transform=list(range(layers - 8, layers)),
    )
    decoder = get_peft_model(base, lora)
    for name, weight in decoder.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.002)
    vlm = ComposedVLM(decoder, tokenizer, feature_dim, cells=5).eval()
    features = torch.randn(photos, 5, feature_dim)
    tags = [vlm.tag_ids(TAGS[i % len(TAGS)]) for i in range(photos)]
    return vlm, features, tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 photos, 1 round (<= 5 min)")
    parser.add_argument("--photos", type=int, default=8, help="photos answered in one call")
    parser.add_argument("--rounds", type=int, default=2, help="turns taken by each path")
    args = parser.parse_args()
    photos, rounds = (4, 1) if args.quick else (args.photos, args.rounds)

    vlm, features, tags = composed_vlm(photos)
    prompt = vlm.prompt("Assess the damage in this photo. Answer in JSON.")
    ll_tok = ll_tokenizer(vlm.tokenizer, vlm.eos_id)
    lark = json_grammar(answer_schema())
    with tempfile.TemporaryDirectory() as cache:  # random weights: not worth keeping
        started = time.perf_counter()
        engine = engine_decoder(vlm, Path(cache), log=print)
        build_s = time.perf_counter() - started
        if engine is None:
            raise SystemExit("the engine is not available: pip install -e '.[engine]'")

        def run(on_engine: bool) -> tuple[list, float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            out = generate(
                vlm, features, prompt, lark, ll_tok, tags=tags, engine=engine if on_engine else None
            )
            return out, time.perf_counter() - wall, time.process_time() - cpu

        generate(vlm, features[:1], prompt, lark, ll_tok, max_new_tokens=8, engine=engine)
        totals = {False: [0, 0.0, 0.0], True: [0, 0.0, 0.0]}
        answers = {}
        for turn in range(rounds):
            for on_engine in (False, True):
                out, wall, cpu = run(on_engine)
                answers[on_engine] = out
                total = totals[on_engine]
                total[0] += sum(a.tokens for a in out)
                total[1] += wall
                total[2] += cpu
                name = "engine" if on_engine else "torch"
                print(f"round {turn + 1} {name}: {total[0] / total[1]:.1f} tokens/s so far")
    same = sum(a.text == b.text for a, b in zip(answers[False], answers[True], strict=True))
    (tokens, wall, cpu), (base_tokens, base_wall, base_cpu) = totals[True], totals[False]
    result = {
        "tokens_per_s": round(tokens / wall, 1),
        "baseline_tokens_per_s": round(base_tokens / base_wall, 1),
        "speedup": round((tokens / wall) / (base_tokens / base_wall), 2),
        "cpu_speedup": round((tokens / cpu) / (base_tokens / base_cpu), 2),
        "same_text": round(same / photos, 3),
        "photos": photos,
        "tokens": tokens // rounds,
        "build_s": round(build_s, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
