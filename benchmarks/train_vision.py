"""Training and inference throughput of the damage model (images/s).

Baselines, measured in the same run on the same synthetic photos, model and batch size:
- training: a plain PyTorch loop that decodes and resizes each JPEG from disk at every step (what
  a straightforward ``Dataset.__getitem__`` does), against the recipe, which decodes once and
  keeps a downsized copy in memory;
- inference: one photo per forward pass, against batches of 32.

    python benchmarks/train_vision.py [--quick]

Last line: {"images_per_s": ..., "baseline_images_per_s": ..., "speedup_vs_baseline": ...,
"inference_images_per_s": ..., "inference_batch1_images_per_s": ..., "vlm_tokens_per_s": null}
(the vision-language model's figure arrives with that model).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from finetune.config import load_config
from finetune.recipes.image_classifier import (
    ImageClassifierConfig,
    build_model,
    damage_loss,
    head_size,
    run,
)
from finetune.vision_data import DamageLabels, image_tensor
from finetune.vision_datasets import damage_examples, decode
from finetune.vision_models import ImageClassifier
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus
from ingest.images import load_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer photos and steps (< 3 min)")
    args = parser.parse_args()
    n_images, steps = (300, 40) if args.quick else (1200, 150)
    config = load_config(ImageClassifierConfig, Path("configs/vision/damage_quick.yaml"))
    config.train.max_steps = steps
    config.train.save_every = steps  # one checkpoint, as in a real run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        generate_demo_corpus(root, DemoCorpusConfig(seed=11, n_claims=60, n_images=n_images))
        examples, _ = damage_examples("train", demo_dir=root)

        baseline = _plain_loop(config, examples, steps)
        started = time.perf_counter()
        items = decode(examples).items  # the recipe's decode is part of its cost
        decode_s = time.perf_counter() - started
        result = run(config, items, [], Path(tmp) / "run", data_hash="bench")
        recipe = result.metrics["images_per_s"]
        # amortise the one-time decode over the run's images
        seen = result.metrics["train_images"]
        recipe_with_decode = seen / (seen / recipe + decode_s)

        classifier = ImageClassifier.load(result.model_dir)
        pictures = [p for p, _ in items[:96]]
        batched = _inference(lambda: classifier.damages(pictures), len(pictures))
        single = _inference(lambda: [classifier.damages([p]) for p in pictures], len(pictures))

    print(
        f"training: recipe {recipe_with_decode:.1f} images/s (decode included) vs plain loop "
        f"{baseline:.1f} images/s\ninference: batch 32 {batched:.1f} images/s vs batch 1 "
        f"{single:.1f} images/s"
    )
    print(
        json.dumps(
            {
                "images_per_s": round(recipe_with_decode, 1),
                "baseline_images_per_s": round(baseline, 1),
                "speedup_vs_baseline": round(recipe_with_decode / baseline, 2),
                "inference_images_per_s": round(batched, 1),
                "inference_batch1_images_per_s": round(single, 1),
                "vlm_tokens_per_s": None,
            }
        )
    )


def _plain_loop(config: ImageClassifierConfig, examples, steps: int) -> float:
    """The same model, loss, optimizer and batch size; every photo decoded from disk per step."""
    torch.manual_seed(0)
    model, preprocessing = build_model(config, head_size("damage", []))
    size = (preprocessing["width"], preprocessing["height"])
    labels = DamageLabels()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    rng = random.Random(0)
    model.train()
    seen = 0
    started = time.perf_counter()
    for _ in range(steps):
        batch = rng.sample(examples, config.train.batch_size)
        pixels = torch.stack([image_tensor(load_image(e.path), size, rng)[0] for e in batch])
        targets = [labels.targets(e) for e in batch]
        stacked = {k: torch.tensor([t[k] for t in targets]) for k in targets[0]}
        optimizer.zero_grad()
        damage_loss(model(pixel_values=pixels).logits, stacked).backward()
        optimizer.step()
        seen += len(batch)
    return seen / (time.perf_counter() - started)


def _inference(call, count: int) -> float:
    call()  # warm-up
    started = time.perf_counter()
    call()
    return count / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
