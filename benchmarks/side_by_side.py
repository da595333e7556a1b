"""Text and damage-model training one after the other (each with all of PyTorch's threads, the
baseline) against side by side in two processes with the threads split, as `make demo` runs them.

Each run is the CLI command a user types, for a fixed number of steps of the quick profiles
(`tunegraph finetune text|vision --config ... train.max_steps=N --no-resume`), under the same
TUNEGRAPH_HOME (the demo corpus must be there: run `make demo` or `tunegraph demo --skip-models`
first). Throughputs are each run's own figure (tokens/s, images/s, which leave out loading and
evaluation). Side by side, each job's throughput is a share of its alone figure; the shares'
sum is the work done per unit of time against one after the other (above 1: side by side gets
more done).

    python benchmarks/side_by_side.py [--quick] [--text-steps N] [--damage-steps N]

Last line: {"combined": ..., "text_share": ..., "damage_share": ..., ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def command(kind: str, steps: int) -> list[str]:
    config = {"text": "text/smollm2_quick.yaml", "vision": "vision/damage_quick.yaml"}[kind]
    return [
        *(sys.executable, "-m", "api.cli.main", "finetune", kind),
        *("--config", str(CONFIGS / config), "--no-resume"),
        *(f"name=bench-side-{kind}", f"train.max_steps={steps}"),
    ]


def throughput(output: str) -> float:
    """The final "N tokens/s" or "N images/s" of a training command's output."""
    found = re.findall(r"([\d.]+) (?:tokens|images)/s", output)
    if not found:
        raise SystemExit(f"no throughput in the output:\n{output[-2000:]}")
    return float(found[-1])


def start(kind: str, steps: int, threads: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen(
        command(kind, steps), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )


def finish(process: subprocess.Popen) -> float:
    output, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"{process.args} failed:\n{output[-2000:]}")
    return throughput(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 text and 150 damage steps")
    parser.add_argument("--text-steps", type=int, default=None, help="[40]")
    parser.add_argument("--damage-steps", type=int, default=None, help="[300]")
    args = parser.parse_args()
    text_steps = args.text_steps or (20 if args.quick else 40)
    damage_steps = args.damage_steps or (150 if args.quick else 300)

    import torch

    threads = torch.get_num_threads()
    if threads < 2:
        raise SystemExit("side by side needs at least 2 threads")
    alone = {
        "text": finish(start("text", text_steps, None)),
        "vision": finish(start("vision", damage_steps, None)),
    }
    own = threads // 2
    text = start("text", text_steps, own)
    vision = start("vision", damage_steps, threads - own)
    side = {"text": finish(text), "vision": finish(vision)}
    shares = {kind: side[kind] / alone[kind] for kind in alone}
    print(
        f"alone ({threads} threads): text {alone['text']:.0f} tokens/s, damage model "
        f"{alone['vision']:.0f} images/s; side by side ({own} + {threads - own} threads): "
        f"{side['text']:.0f} tokens/s ({shares['text']:.2f}x), {side['vision']:.0f} images/s "
        f"({shares['vision']:.2f}x)"
    )
    print(
        json.dumps(
            {
                "combined": round(sum(shares.values()), 3),
                "text_share": round(shares["text"], 3),
                "damage_share": round(shares["vision"], 3),
                "alone_tokens_per_s": alone["text"],
                "alone_images_per_s": alone["vision"],
                "threads": threads,
            }
        )
    )


if __name__ == "__main__":
    main()
