"""Channels-last against channels-first convolutions for the damage model, in the precision
``precision: auto`` picks here: why the recipe trains channels-last.

One training step (forward and backward) of the damage model of
``configs/vision/damage_quick.yaml`` (the scratch ResNet) on a batch of 16 random 192x144
photos, with the model and the batch channels-first (PyTorch's default, the baseline) and
channels-last, taking turns.

    python benchmarks/memory_format.py [--quick] [--rounds N]

Last line: {"channels_last_over_first": ..., "first_ms": ..., "last_ms": ..., "precision": ...}:
the channels-last median over the channels-first median (below 1: channels-last is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds [30]")
    args = parser.parse_args()
    rounds = args.rounds or (10 if args.quick else 30)

    import copy

    import torch

    from finetune.config import load_config
    from finetune.recipes.image_classifier import ImageClassifierConfig, build_model, head_size
    from finetune.trainer import autocast, effective_precision

    config = load_config(ImageClassifierConfig, Path("configs/vision/damage_quick.yaml"))
    cpu = torch.device("cpu")
    precision = effective_precision(config.train.precision, cpu)
    torch.manual_seed(0)
    first, _ = build_model(config, head_size(config.task, []))
    last = copy.deepcopy(first).to(memory_format=torch.channels_last)
    pixels = torch.randn(config.train.batch_size, 3, config.image.height, config.image.width)
    models = {
        "first": (first, pixels),
        "last": (last, pixels.to(memory_format=torch.channels_last)),
    }

    def step(kind: str) -> float:
        model, batch = models[kind]
        started = time.perf_counter()
        with autocast(precision, cpu):
            logits = model(pixel_values=batch).logits
        logits.float().pow(2).mean().backward()
        model.zero_grad()
        return (time.perf_counter() - started) * 1000

    times: dict[str, list[float]] = {"first": [], "last": []}
    for round_ in range(rounds + 2):
        for kind in ("first", "last") if round_ % 2 else ("last", "first"):
            elapsed = step(kind)
            if round_ >= 2:  # warm-up
                times[kind].append(elapsed)
    first_ms, last_ms = statistics.median(times["first"]), statistics.median(times["last"])
    print(
        f"{rounds} rounds, {precision}: channels-first {first_ms:.1f} ms, "
        f"channels-last {last_ms:.1f} ms a step (batch {config.train.batch_size})"
    )
    print(
        json.dumps(
            {
                "channels_last_over_first": round(last_ms / first_ms, 3),
                "first_ms": round(first_ms, 1),
                "last_ms": round(last_ms, 1),
                "precision": precision,
            }
        )
    )


if __name__ == "__main__":
    main()
