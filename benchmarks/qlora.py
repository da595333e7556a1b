"""QLoRA (NF4 base) against LoRA on a full-precision base: peak memory, tokens/s, footprint.

The text recipe itself (``finetune.recipes.text_lora.run``) trains SmolLM2-135M-Instruct for the
same optimizer steps on the same examples in each variant, LoRA r 16 on every linear layer:

- ``lora_fp32``: the base in float32, no autocast (the CPU default);
- ``lora_bf16``: the base loaded in bfloat16, bf16 autocast (the baseline QLoRA is measured
  against: what a GPU user would otherwise train on);
- ``qlora_nf4``: ``train.quantization=nf4`` — the base's linear layers 4-bit NF4 through
  bitsandbytes (double quantisation, matmuls in ``finetune.quantization.compute_dtype``), with
  gradient checkpointing, as the recipe runs QLoRA (part of its memory saving and of its cost);
  ``precision: auto``;
- ``qlora_int8`` with ``--int8``.

Each variant runs in its own process, one after the other (``--rounds`` times, alternating order,
median taken), so that its memory is its own. Peak memory on a CPU: the process's resident set
size, sampled every 5 ms in a thread, at its highest during training (``peak_mb``) and during
loading (``load_peak_mb``), less what it was just before the model loaded — so weights, LoRA
and optimizer state, activations, and for the load whatever it held on the way (freed memory is
handed back to the OS between the two with glibc's ``malloc_trim``; tracemalloc
does not see PyTorch's allocations, PyTorch keeps no CPU memory statistics, and ``ru_maxrss``
starts at the parent's peak after a fork). On CUDA: ``torch.cuda.max_memory_allocated``, the
same two phases. Footprint: ``model.get_memory_footprint()`` after loading. tokens/s: the
examples' tokens over the wall time of the steps after ``--warmup`` untimed ones (the first
steps of each shape build oneDNN's CPU kernels and vary by seconds); ``cpu_tokens_per_s``: the
same tokens over the process's CPU seconds, steadier than wall time on a shared machine;
``tokens_per_s_with_warmup``: the recipe's own figure over all steps.

The examples are synthetic spec questions and answers (fixed, 66-86 tokens each with the chat
template): the figures depend on token counts, not on what the text says.

    python benchmarks/qlora.py [--quick] [--steps N] [--warmup N] [--batch-size N] [--rounds N]
                               [--int8]

Last line: {"peak_mb_ratio_vs_bf16": ..., "tokens_per_s_ratio_vs_bf16": ...,
"cpu_tokens_per_s_ratio_vs_bf16": ..., "footprint_ratio_vs_bf16": ..., and per variant
"<variant>_peak_mb", "_load_peak_mb", "_tokens_per_s", "_cpu_tokens_per_s", "_footprint_mb"
(qlora_nf4's as "qlora_..."), "steps", "warmup_steps", "device"}: ratios below 1 mean less
memory, or fewer tokens/s, than LoRA on the bf16 base.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
VARIANTS = ("lora_fp32", "lora_bf16", "qlora_nf4")
# what the base's matmuls compute in (qlora_nf4: finetune.quantization.compute_dtype)
MATMULS = {"lora_fp32": "float32", "lora_bf16": "bfloat16", "qlora_int8": "int8 (LLM.int8)"}


def _examples(count: int) -> list:
    from finetune.datasets import example

    parts = ("cylinder head", "wheel hub", "oil drain plug", "spark plug", "caliper bracket")
    return [
        example(
            "SPEC",
            f"What is the tightening torque of the {parts[i % 5]} bolts on engine variant {i}, "
            f"{'including the second pass ' * (i % 3)}in newton metres?",
            f"The {parts[i % 5]} bolts of variant {i} are tightened to {20 + i} Nm"
            f"{', then a further 90 degrees' * (i % 2)}.",
            f"b{i}",
        )
        for i in range(count)
    ]


class PeakMemory:
    """The most memory this process held since :meth:`reset`, in MiB: on a CPU its resident
    set, sampled every 5 ms by a thread; on CUDA, PyTorch's allocator statistics."""

    def __init__(self, device) -> None:
        import psutil

        self.device = device
        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._rss())

    def now(self) -> float:
        import torch

        if self.device.type == "cuda":
            return torch.cuda.memory_allocated() / 2**20
        return self._rss() / 2**20

    def reset(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self._peak = self._rss()

    def peak(self) -> float:
        import torch

        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return max(self._peak, self._rss()) / 2**20

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _release_freed_memory() -> None:
    """Hand what the load freed back to the OS (glibc keeps it otherwise, and the resident set
    would count it in training's peak); nothing where the C library has no malloc_trim."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class StepClock:
    """A progress bar for the recipe's loop that keeps the wall and CPU time of each step's end."""

    def __init__(self, **_: object) -> None:
        self.ends = [(time.perf_counter(), time.process_time())]

    def update(self, n: int = 1) -> None:
        self.ends.append((time.perf_counter(), time.process_time()))

    def set_postfix(self, **_: object) -> None:
        pass

    def close(self) -> None:
        pass


def child(variant: str, steps: int, warmup: int, batch_size: int, cache_dir: Path) -> dict:
    """One variant, in this process: load, train ``warmup + steps`` steps, measure (tokens/s
    over the last ``steps``: the first ones build the CPU kernels for their shapes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.model_store import ModelStore, ModelStoreConfig
    from finetune.quantization import compute_dtype
    from finetune.recipes.text_lora import TextRecipeConfig, encode, run
    from finetune.trainer import TrainArgs, batches

    store = ModelStore(ModelStoreConfig(cache_dir, cache_dir / "adapters"))
    device = torch.device(store.device)
    quantization = {"qlora_nf4": "nf4", "qlora_int8": "int8"}.get(variant, "none")
    precision = {"lora_fp32": "fp32", "lora_bf16": "bf16"}.get(variant, "auto")
    memory = PeakMemory(device)
    before = memory.now()
    memory.reset()
    if variant == "lora_bf16":  # the store loads float32: the same folder, in bfloat16
        folder = store.checkpoint_dir(MODEL)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(device)
    else:
        model, tokenizer = store.load_causal_lm(MODEL, quantization)
    footprint = model.get_memory_footprint() / 2**20
    load_peak = memory.peak() - before
    _release_freed_memory()
    memory.reset()
    args = TrainArgs(
        batch_size=batch_size,
        max_steps=warmup + steps,
        lr=1e-4,
        log_every=1,
        save_every=10_000,
        precision=precision,
        quantization=quantization,
    )
    config = TextRecipeConfig(train=args)
    config.lora.dropout = 0.0
    examples = _examples((warmup + steps) * batch_size)
    lengths = [len(encode(e, tokenizer)[0]) for e in examples]
    step_tokens = [
        sum(lengths[i] for i in b) for b in batches(len(examples), batch_size, args.seed, 0)
    ]
    clocks: list[StepClock] = []

    def progress(**kwargs: object) -> StepClock:
        clocks.append(StepClock(**kwargs))
        return clocks[-1]

    with tempfile.TemporaryDirectory() as out:
        result = run(
            config, model, tokenizer, examples, [], Path(out), data_hash="bench", progress=progress
        )
    train_peak = memory.peak() - before
    memory.close()
    (wall_start, cpu_start), (wall_end, cpu_end) = clocks[0].ends[warmup], clocks[0].ends[-1]
    tokens = sum(step_tokens[warmup:])
    return {
        "variant": variant,
        "peak_mb": round(train_peak, 1),
        "load_peak_mb": round(load_peak, 1),
        "footprint_mb": round(footprint, 1),
        "tokens_per_s": round(tokens / (wall_end - wall_start), 1),
        "cpu_tokens_per_s": round(tokens / (cpu_end - cpu_start), 1),
        "tokens_per_s_with_warmup": round(result.metrics["tokens_per_s"], 1),
        "train_loss": round(result.metrics["train_loss"], 4),
        "matmuls": MATMULS.get(variant) or str(compute_dtype(device)).removeprefix("torch."),
        "device": device.type,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 + 3 steps of 4 examples, one round")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps [12]")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first [2]")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per step [8]")
    parser.add_argument("--rounds", type=int, default=None, help="runs of each variant [2]")
    parser.add_argument("--int8", action="store_true", help="also qlora_int8")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (3 if args.quick else 12)
    batch_size = args.batch_size or (4 if args.quick else 8)
    rounds = args.rounds or (1 if args.quick else 2)
    if args.child:
        print(json.dumps(child(args.child, steps, args.warmup, batch_size, Path(args.cache))))
        return

    from api import composition
    from api.settings import Settings

    settings = Settings.from_env()
    store = composition.model_store(settings)
    store.checkpoint_dir(MODEL)  # converts the embedded GGUF once, before any variant runs
    variants = [*VARIANTS, "qlora_int8"] if args.int8 else list(VARIANTS)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for number in range(rounds):
        for variant in variants if number % 2 == 0 else variants[::-1]:
            command = [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--cache",
                str(store.config.cache_dir),
                "--steps",
                str(steps),
                "--warmup",
                str(args.warmup),
                "--batch-size",
                str(batch_size),
            ]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
            record = json.loads(done.stdout.strip().splitlines()[-1])
            runs[variant].append(record)
            print(
                f"{variant:>10}: peak +{record['peak_mb']:7.1f} MiB training, "
                f"+{record['load_peak_mb']:7.1f} MiB loading, footprint "
                f"{record['footprint_mb']:6.1f} MiB, {record['tokens_per_s']:6.1f} tokens/s "
                f"({record['cpu_tokens_per_s']:6.1f} per CPU second), "
                f"loss {record['train_loss']:.3f} (matmuls {record['matmuls']})",
                flush=True,
            )

    def median(variant: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[variant]), 1)

    headline = {
        "peak_mb_ratio_vs_bf16": round(
            median("qlora_nf4", "peak_mb") / median("lora_bf16", "peak_mb"), 3
        ),
        "tokens_per_s_ratio_vs_bf16": round(
            median("qlora_nf4", "tokens_per_s") / median("lora_bf16", "tokens_per_s"), 3
        ),
        "cpu_tokens_per_s_ratio_vs_bf16": round(
            median("qlora_nf4", "cpu_tokens_per_s") / median("lora_bf16", "cpu_tokens_per_s"), 3
        ),
        "footprint_ratio_vs_bf16": round(
            median("qlora_nf4", "footprint_mb") / median("lora_bf16", "footprint_mb"), 3
        ),
    }
    for variant in variants:
        name = "qlora" if variant == "qlora_nf4" else variant
        for key in ("peak_mb", "load_peak_mb", "tokens_per_s", "cpu_tokens_per_s", "footprint_mb"):
            headline[f"{name}_{key}"] = median(variant, key)
    device = runs["qlora_nf4"][0]["device"]
    memory = "max_memory_allocated" if device == "cuda" else "resident set growth, sampled"
    print(
        f"{args.warmup} + {steps} steps of {batch_size} examples, {rounds} round(s), {device}; "
        f"peak memory: {memory}"
    )
    print(json.dumps({**headline, "steps": steps, "warmup_steps": args.warmup, "device": device}))


if __name__ == "__main__":
    main()
