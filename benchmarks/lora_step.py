"""What a text LoRA training step costs with LoRA dropout and without.

One process, one model: the quick profile's (configs/text/smollm2_quick.yaml: SmolLM2-135M-
Instruct, LoRA r 16 in its last layers, bf16 autocast) on the same packed batches of 8 of the
profile's training examples (the demo's questions and the spec paraphrases). The two variants take
turns on each batch (so that drift in the machine's speed weighs on both alike), forward and
backward, and the median step time without dropout is compared with the baseline: LoRA dropout
0.05 (a usual PEFT setting, and the profile's before).

The demo corpus under TUNEGRAPH_HOME is used when it is there (`make demo`), else one is
generated in a temporary folder first (a few minutes).

    python benchmarks/lora_step.py [--quick] [--steps N]

Last line: {"dropout_step_ratio": ..., "baseline_step_ms": ..., "no_dropout_step_ms": ...}: the
median step without dropout over the baseline's (below 1: faster).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "text" / "smollm2_quick.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 batches per variant")
    parser.add_argument("--steps", type=int, default=None, help="batches per variant [40]")
    args = parser.parse_args()
    steps = args.steps or (12 if args.quick else 40)

    import torch
    from peft import get_peft_model

    from api import composition
    from api.settings import Settings
    from finetune.config import load_config
    from finetune.datasets import (
        build_dataset,
        chat_token_counter,
        demo_examples,
        read_blocks,
        spec_paraphrases,
    )
    from finetune.recipes.text_lora import (
        TextRecipeConfig,
        collate_packed,
        encode,
        label_loss_sum,
        row_spans,
    )
    from finetune.trainer import autocast
    from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus

    config = load_config(TextRecipeConfig, CONFIG, ["lora.dropout=0.05", "train.precision=bf16"])
    settings = Settings.from_env()
    model, tokenizer = composition.model_store(settings).load_causal_lm(config.base_model)
    with tempfile.TemporaryDirectory() as work:
        demo = settings.demo_dir
        if not (demo / "manual" / "blocks.jsonl").is_file():
            demo = generate_demo_corpus(Path(work) / "demo", DemoCorpusConfig()).root
        train, val = demo_examples(demo)
        blocks = read_blocks(demo / "manual" / "blocks.jsonl")
    extra = spec_paraphrases(blocks, config.data.spec_paraphrases, config.train.seed)
    report = build_dataset(
        train,
        count_tokens=chat_token_counter(tokenizer),
        val_examples=val,
        max_length=config.train.max_length,
        max_ratio=config.data.max_ratio,
        seed=config.train.seed,
        extra_train=extra,
    )
    data = [encode(e, tokenizer) for e in report.train]
    layers = config.lora.layers(model.config.num_hidden_layers)
    peft_model = get_peft_model(
        model, config.lora.peft_config(layers_to_transform=layers, task_type="CAUSAL_LM")
    )
    peft_model.train()
    dropouts = {
        name: module.lora_dropout["default"]
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_dropout")
    }
    modules = dict(peft_model.named_modules())

    def setup(dropout: bool) -> None:
        for name, layer in dropouts.items():
            modules[name].lora_dropout["default"] = layer if dropout else torch.nn.Identity()

    variants = {"baseline": True, "no_dropout": False}
    rng = random.Random(0)
    batches = [rng.sample(range(len(data)), config.train.batch_size) for _ in range(steps + 2)]
    times: dict[str, list[float]] = {name: [] for name in variants}
    tokens = 0
    device = torch.device("cpu")
    for number, batch in enumerate(batches):
        items = [data[i] for i in batch]
        rows = row_spans([len(ids) for ids, _ in items], config.train.max_length)
        input_ids, positions, labels, count = collate_packed(
            items, config.train.max_length, tokenizer.eos_token_id, rows
        )
        for name, dropout in variants.items():
            setup(dropout)
            started = time.perf_counter()
            with autocast(config.train.precision, device):
                loss = label_loss_sum(
                    peft_model, input_ids=input_ids, labels=labels, position_ids=positions
                )
            loss.backward()
            elapsed = time.perf_counter() - started
            peft_model.zero_grad(set_to_none=True)
            if number >= 2:  # the first two warm up
                times[name].append(elapsed)
        tokens += count if number >= 2 else 0
    setup(True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(
            f"{name:>22}: median step {value * 1000:7.1f} ms "
            f"({value / medians['baseline']:.3f} of the baseline)"
        )
    print(
        f"{steps} batches of {config.train.batch_size} examples ({tokens / steps:.0f} tokens each)"
    )
    print(
        json.dumps(
            {
                "dropout_step_ratio": round(medians["no_dropout"] / medians["baseline"], 3),
                "baseline_step_ms": round(medians["baseline"] * 1000, 1),
                "no_dropout_step_ms": round(medians["no_dropout"] * 1000, 1),
                "steps": steps,
            }
        )
    )


if __name__ == "__main__":
    main()
