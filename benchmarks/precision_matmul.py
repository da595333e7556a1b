"""What bf16 autocast costs on this machine against fp32: the reason for ``precision: auto``.

SmolLM2-135M's MLP matmuls (576 -> 1536, a packed batch of 512 tokens), forward and backward,
in fp32 (the baseline) and under ``torch.autocast(bfloat16)``, taking turns. On a CPU with
native bfloat16 (AVX512-BF16/AMX) bf16 is the faster one; on an AVX2-only CPU PyTorch
emulates it.

    python benchmarks/precision_matmul.py [--quick] [--rounds N]

Last line: {"bf16_over_fp32": ..., "fp32_ms": ..., "bf16_ms": ..., "native_bf16": ...,
"auto": ...}: the bf16 median over the fp32 median (above 1: bf16 is slower), and what
``precision: auto`` picks here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds [40]")
    args = parser.parse_args()
    rounds = args.rounds or (10 if args.quick else 40)

    import torch

    from finetune.trainer import autocast, effective_precision, native_bf16

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    tokens = torch.randn(512, 576)
    up = torch.nn.Linear(576, 1536)
    down = torch.nn.Linear(1536, 576)

    def step(precision: str) -> float:
        started = time.perf_counter()
        with autocast(precision, cpu):
            out = down(torch.nn.functional.silu(up(tokens)))
        out.float().sum().backward()
        up.zero_grad(), down.zero_grad()
        return (time.perf_counter() - started) * 1000

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for round_ in range(rounds + 2):
        for precision in ("fp32", "bf16") if round_ % 2 else ("bf16", "fp32"):
            elapsed = step(precision)
            if round_ >= 2:  # warm-up
                times[precision].append(elapsed)
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    native = native_bf16(cpu)
    print(
        f"{rounds} rounds: fp32 {fp32:.1f} ms, bf16 autocast {bf16:.1f} ms "
        f"(native bf16 here: {native}; precision auto -> {effective_precision('auto', cpu)})"
    )
    print(
        json.dumps(
            {
                "bf16_over_fp32": round(bf16 / fp32, 2),
                "fp32_ms": round(fp32, 2),
                "bf16_ms": round(bf16, 2),
                "native_bf16": native,
                "auto": effective_precision("auto", cpu),
            }
        )
    )


if __name__ == "__main__":
    main()
