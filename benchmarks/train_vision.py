"""Training and inference throughput of the damage model (images/s) and of the vision-language
model (tokens/s).

Baselines, measured in the same run on the same synthetic photos, model and batch size:
- damage model, training: a plain PyTorch loop that decodes and resizes each JPEG from disk at
  every step (what a straightforward ``Dataset.__getitem__`` does), against the recipe, which
  decodes once and keeps a downsized copy in memory;
- damage model, inference: one photo per forward pass, against batches of 32;
- VLM, training: the usual forward (``labels=`` on the causal LM: logits for every position)
  against the recipe's loss (logits only where the answer is);
- VLM, inference: one pass per generated token, against appending the tokens the JSON grammar
  forces in the same pass.

    python benchmarks/train_vision.py [--quick]

Last line: {"images_per_s": ..., "baseline_images_per_s": ..., "speedup_vs_baseline": ...,
"inference_images_per_s": ..., "inference_batch1_images_per_s": ..., "vlm_tokens_per_s": ...,
"vlm_baseline_tokens_per_s": ..., "vlm_generate_tokens_per_s": ...,
"vlm_generate_baseline_tokens_per_s": ...}
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
        vlm = _vlm(result.model_dir, items, Path(tmp), 6 if args.quick else 20)

    print(
        f"training: recipe {recipe_with_decode:.1f} images/s (decode included) vs plain loop "
        f"{baseline:.1f} images/s\ninference: batch 32 {batched:.1f} images/s vs batch 1 "
        f"{single:.1f} images/s\nVLM training: recipe {vlm['train']:.1f} tokens/s vs full logits "
        f"{vlm['train_baseline']:.1f}\nVLM answers: grammar-forced tokens appended "
        f"{vlm['generate']:.1f} tokens/s vs one pass per token {vlm['generate_baseline']:.1f}"
    )
    print(
        json.dumps(
            {
                "images_per_s": round(recipe_with_decode, 1),
                "baseline_images_per_s": round(baseline, 1),
                "speedup_vs_baseline": round(recipe_with_decode / baseline, 2),
                "inference_images_per_s": round(batched, 1),
                "inference_batch1_images_per_s": round(single, 1),
                "vlm_tokens_per_s": round(vlm["train"], 1),
                "vlm_baseline_tokens_per_s": round(vlm["train_baseline"], 1),
                "vlm_generate_tokens_per_s": round(vlm["generate"], 1),
                "vlm_generate_baseline_tokens_per_s": round(vlm["generate_baseline"], 1),
            }
        )
    )


def _vlm(encoder_dir: Path, items, tmp: Path, steps: int) -> dict[str, float]:
    """The VLM recipe (SmolLM2 decoder, the damage model just trained as encoder) for a few
    instruct steps, the same steps the usual way, and answers with and without fast-forward."""
    from api.composition import model_store
    from api.settings import Settings
    from finetune.constrained import json_grammar, ll_tokenizer
    from finetune.recipes.vision_lm import VisionLMConfig
    from finetune.recipes.vision_lm import run as train_vlm
    from finetune.trainer import autocast
    from finetune.vision_data import answer_text
    from finetune.vision_lm import ComposedVLM, ImageEncoder, answer_schema, generate

    store = model_store(Settings.from_env())
    config = load_config(
        VisionLMConfig,
        Path("configs/vision/vlm_quick.yaml"),
        ["align.max_steps=1", f"train.max_steps={steps}", "train.batch_size=8"],
    )
    decoder, tokenizer = store.load_causal_lm(config.base_model)
    pairs = items[: steps * 8]
    result = train_vlm(
        config, decoder, tokenizer, encoder_dir, pairs, [], tmp / "vlm", data_hash="bench"
    )
    recipe = result.metrics["tokens_per_s"]

    # baseline: the same batches through the causal LM's own loss (logits at every position)
    encoder = ImageEncoder.load(encoder_dir, config.grid)
    decoder, tokenizer = store.load_causal_lm(config.base_model)
    from peft import get_peft_model

    vlm = ComposedVLM(
        get_peft_model(decoder, config.lora.peft_config(task_type="CAUSAL_LM")),
        tokenizer,
        encoder.dim,
        encoder.cells,
    )
    features = encoder.features([p for p, _ in pairs])
    prompt = vlm.prompt(config.instruction)
    optimizer = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-3)
    tokens, started = 0, time.perf_counter()
    for step in range(steps):
        rows = range(step * 8, step * 8 + 8)
        answers = [vlm.answer_ids(answer_text(pairs[i][1])) for i in rows]
        with autocast(config.train.precision, torch.device("cpu")):
            embeds, attention, labels = vlm.inputs(features[list(rows)], prompt, answers)
            loss = vlm.causal_lm(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(attention.sum())
    baseline = tokens / (time.perf_counter() - started)

    vlm.eval()
    ll_tok = ll_tokenizer(tokenizer, tokenizer.eos_token_id)
    lark = json_grammar(answer_schema())
    rates = {}
    for fast in (True, False):
        started = time.perf_counter()
        out = generate(vlm, features[:8], prompt, lark, ll_tok, fast_forward=fast)
        rates[fast] = sum(a.tokens for a in out) / (time.perf_counter() - started)
    return {
        "train": recipe,
        "train_baseline": baseline,
        "generate": rates[True],
        "generate_baseline": rates[False],
    }


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
