"""The classification short form against the quick profile and the recipe's built-in defaults,
on a generated 10-class image set with a held-out test split.

The images (``signs10``): ten kinds of road-sign-like marks (:data:`CLASSES`), told apart by
shape and colour together, each drawn at a random size, place and tilt under a random light, on
a random two-colour striped background, with noise and blur; the pixels follow from ``--seed``
alone, so every run trains on the same files. Split per class: 60 train / 15 val / 25 test
(``--quick``: 20 / 5 / 10). Runs through the CLI, each model scored by ``tunegraph eval vision``
on the test split:

- ``short_form``: ``tunegraph finetune vision --task classify --train T --val V --out DIR``;
- ``quick_profile``: ``tunegraph finetune vision --config configs/vision/classify_quick.yaml
  data.train_file=T data.val_file=V`` (skipped with ``--quick``: the two configs are compared
  in-process instead, ``same_config``);
- ``defaults`` (the baseline): a YAML with only ``task: classify``, i.e. the recipe's built-in
  defaults (one epoch, 192x144), what the short form trained before it loaded the quick profile.

    python benchmarks/classify_short_form.py [--quick] [--out DIR] [--seed N]

Last line: {"short_form_accuracy": ..., "quick_profile_accuracy": ..., "defaults_accuracy": ...,
"short_form_epochs_run": ..., "short_form_stop": ..., "same_config": ..., "test_images": ...}.
Accuracy only: the training times of a shared machine say nothing (see the ``*_per_s`` of the
runs' summaries under ``--out`` for those).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
from pathlib import Path

# Ten kinds of road-sign-like marks, told apart by shape and colour together (as signs are):
# several share a colour, several share a shape. Name: (shape, fill RGB, rim RGB or None).
CLASSES = {
    "stop": ("octagon", (200, 30, 30), None),
    "yield": ("triangle_down", (235, 235, 235), (200, 30, 30)),
    "warning": ("triangle", (240, 200, 40), (20, 20, 20)),
    "no_entry": ("circle", (200, 30, 30), None),
    "speed_limit": ("circle", (235, 235, 235), (200, 30, 30)),
    "mandatory": ("circle", (30, 80, 190), None),
    "information": ("square", (30, 80, 190), None),
    "priority": ("diamond", (240, 200, 40), (235, 235, 235)),
    "guide": ("square", (30, 130, 60), None),
    "roadworks": ("triangle", (240, 130, 30), (20, 20, 20)),
}
SIZE = 112  # pixels per side of a generated image


def outline(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple]:
    """The corners of ``shape`` (radius ``r`` around (cx, cy), turned by ``turn`` radians)."""
    corners, offset = {
        "octagon": (8, math.pi / 8),
        "triangle": (3, -math.pi / 2),
        "triangle_down": (3, math.pi / 2),
        "square": (4, math.pi / 4),
        "diamond": (4, 0.0),
    }[shape]
    return [
        (
            cx + r * math.cos(turn + offset + 2 * math.pi * i / corners),
            cy + r * math.sin(turn + offset + 2 * math.pi * i / corners),
        )
        for i in range(corners)
    ]


def jitter(rgb: tuple[int, int, int], rng: random.Random, light: float) -> tuple[int, ...]:
    """``rgb`` under another light and camera: scaled, each channel nudged."""
    return tuple(max(0, min(255, round(c * light + rng.uniform(-25, 25)))) for c in rgb)


def make_image(label: str, rng: random.Random):
    """One photo-like image of class ``label``: a textured background in random colours, the
    sign at a random size, place and tilt under a random light, noise and blur on top."""
    from PIL import Image, ImageDraw, ImageFilter

    shape, fill, rim = CLASSES[label]
    back = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), back)
    draw = ImageDraw.Draw(image)
    other = tuple(rng.randrange(256) for _ in range(3))
    step = rng.randrange(8, 28)  # stripes of another colour: clutter the model must ignore
    for i in range(0, 2 * SIZE, step * 2):
        if rng.random() < 0.5:
            draw.line((i, 0, i - SIZE, SIZE), fill=other, width=max(1, step // 3))
    light = rng.uniform(0.7, 1.15)
    r = rng.uniform(0.2, 0.4) * SIZE
    cx, cy = rng.uniform(r, SIZE - r), rng.uniform(r, SIZE - r)
    turn = rng.uniform(-0.35, 0.35)  # a tilted sign or camera, up to 20 degrees
    layers = [(r, rim), (r * 0.78, fill)] if rim else [(r, fill)]
    for radius, colour in layers:
        colour = jitter(colour, rng, light)
        if shape == "circle":
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
        else:
            draw.polygon(outline(shape, cx, cy, radius, turn), fill=colour)
    noise = Image.effect_noise((SIZE, SIZE), rng.uniform(10, 40)).convert("RGB")
    image = Image.blend(image, noise, 0.15)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))


def generate(root: Path, counts: dict[str, int], seed: int) -> dict[str, Path]:
    """The images under ``root/images/SPLIT`` and one classification JSONL per split."""
    from ingest.classification import LabeledImage, write_classification_jsonl

    files = {}
    for split, per_class in counts.items():
        folder = root / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        items = []
        for label in CLASSES:
            rng = random.Random(f"{seed}-{split}-{label}")
            for i in range(per_class):
                path = folder / f"{label}-{i:03d}.png"
                make_image(label, rng).save(path)
                items.append(LabeledImage(str(path), label, str(path)))
        files[split] = root / f"{split}.jsonl"
        write_classification_jsonl(items, files[split], list(CLASSES))
    return files


def tunegraph(args: list[str], home: Path) -> dict:
    """Run ``tunegraph ARGS --json`` in a child process and return the JSON it printed."""
    import os

    env = {**os.environ, "TUNEGRAPH_HOME": str(home)}
    command = [sys.executable, "-m", "api.cli.main", *args, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout[done.stdout.index("{") :])


def same_config(files: dict[str, Path]) -> bool:
    """Whether the short form and ``--config`` the quick profile resolve to one config."""
    from finetune.config import shipped_config, to_dict
    from finetune.recipes import vision_recipe

    short, _ = vision_recipe(None, "classify", files["train"], files["val"])
    data = [f"data.train_file={files['train']}", f"data.val_file={files['val']}"]
    profile, _ = vision_recipe(shipped_config("vision/classify_quick.yaml"), overrides=data)
    return to_dict(short) == to_dict(profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20/5/10 images per class")
    parser.add_argument("--out", type=Path, default=None, help="where data and runs go [temp]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="classify-short-form-"))
    counts = {"train": 20, "val": 5, "test": 10} if args.quick else {
        "train": 60, "val": 15, "test": 25}  # fmt: skip
    files = generate(out / "signs10", counts, args.seed)
    print(f"data: {out / 'signs10'} ({counts} images per class, {len(CLASSES)} classes)")
    home = out / "home"
    defaults = out / "defaults.yaml"
    defaults.write_text("task: classify\nname: defaults\n")
    data = [f"data.train_file={files['train']}", f"data.val_file={files['val']}"]
    runs = {
        "short_form": ["--task", "classify", "--train", str(files["train"]), "--val",
                       str(files["val"])],
        "quick_profile": ["--config", "configs/vision/classify_quick.yaml", *data],
        "defaults": ["--config", str(defaults), "data.source=jsonl", *data],
    }  # fmt: skip
    figures: dict[str, object] = {"same_config": same_config(files)}
    if args.quick:
        del runs["quick_profile"]
    for name, options in runs.items():
        model = out / "models" / name
        trained = tunegraph(
            ["finetune", "vision", *options, "--out", str(model), "--no-resume"], home
        )
        scored = tunegraph(
            ["eval", "vision", "--task", "classify", "--model", str(model), "--test",
             str(files["test"]), "--out", str(out / "eval" / name)],
            home,
        )  # fmt: skip
        figures[f"{name}_accuracy"] = round(scored["accuracy"], 3)
        figures[f"{name}_epochs_run"] = trained["epochs_run"]
        print(
            f"{name}: test accuracy {scored['accuracy']:.3f} on {scored['n']} images; "
            f"{trained['stop_summary']}; {trained['steps']} steps"
        )
        if name == "short_form":
            figures["short_form_stop"] = trained["stop_summary"]
            figures["test_images"] = scored["n"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
