"""The image-classifier recipe (damage model and classification) on tiny data, through the
recipe API and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from api.cli.main import main
from finetune.config import ConfigError, load_config, shipped_config, to_dict
from finetune.recipes import image_classifier, vision_lm, vision_recipe
from finetune.recipes.image_classifier import ImageClassifierConfig, run
from finetune.recipes.vision_lm import VisionLMConfig
from finetune.trainer import TrainingError
from finetune.vision_datasets import damage_examples, data_hash, decode
from finetune.vision_evaluation import evaluate_vision
from finetune.vision_models import DamageDetector, ImageClassifier, VisionModelError
from finetune.workspace import Workspace
from ingest.assessment import Damage
from ingest.classification import LabeledImage, write_classification_jsonl
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus
from ingest.images import image_bytes

TINY = [
    "image.width=64",
    "image.height=48",
    "scratch.widths=8,16",
    "scratch.depths=1,1",
    "train.batch_size=4",
    "train.lr=0.005",
    "train.save_every=3",
]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vision") / "demo"
    generate_demo_corpus(
        root, DemoCorpusConfig(seed=3, n_claims=60, n_images=24, n_scanned_pages=0)
    )
    return root


@pytest.fixture(scope="module")
def damage_data(tiny_corpus):
    train = decode(damage_examples("train", demo_dir=tiny_corpus)[0]).items
    val = decode(damage_examples("val", demo_dir=tiny_corpus)[0]).items
    return train, val


def _config(*extra: str) -> ImageClassifierConfig:
    return load_config(ImageClassifierConfig, None, [*TINY, *extra])


def test_damage_model_trains_saves_and_detects(damage_data, tiny_corpus, tmp_path):
    train, val = damage_data
    result = run(_config("train.epochs=2"), train, val, tmp_path, data_hash="h")
    model_dir = result.model_dir
    for name in ("config.json", "model.safetensors", "labels.json", "tunegraph-manifest.json"):
        assert (model_dir / name).is_file(), name
    manifest = json.loads((model_dir / "tunegraph-manifest.json").read_text())
    assert manifest["kind"] == "image-classifier-damage" and manifest["data_sha256"] == "h"
    assert manifest["metrics"]["train_examples"] == len(train)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum("eval_loss" in r for r in records) == 2
    assert all(r["images_per_s"] > 0 for r in records if "loss" in r)

    detector = DamageDetector.load(model_dir)
    photo = Image.open(train[0][1].path)
    found = detector.detect([image_bytes(photo), image_bytes(photo.convert("L"), "PNG")])
    assert found and all(isinstance(d, Damage) for d in found)
    assert len({(d.part, d.type) for d in found}) == len(found)  # one entry per pair
    for d in found:
        x, y, w, h = d.bbox
        assert 0 <= x <= x + w <= photo.width + 0.5 and 0 <= y <= y + h <= photo.height + 0.5


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: autocast, channels-last
def test_resume_continues_exactly(damage_data, tmp_path, precision):
    train, val = damage_data
    config = _config("train.max_steps=6", f"train.precision={precision}")
    straight = run(config, train, val, tmp_path / "a", data_hash="x")
    run(config, train, val, tmp_path / "b", data_hash="x", stop_after_steps=4)
    resumed = run(config, train, val, tmp_path / "b", data_hash="x")
    a = load_file(str(straight.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:  # augmentation, batch-norm statistics and the optimizer all replay
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_bad_settings_fail_clearly(damage_data, tmp_path):
    train, val = damage_data
    with pytest.raises(TrainingError, match="full precision"):
        run(_config("train.quantization=nf4"), train, val, tmp_path, data_hash="x")
    with pytest.raises(TrainingError, match=r"backbone='/no/such/model': no such folder"):
        run(_config("backbone=/no/such/model"), train, val, tmp_path, data_hash="x")
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(TrainingError, match="is not an image-classification model"):
        run(_config(f"backbone={tmp_path / 'not-a-model'}"), train, val, tmp_path, data_hash="x")
    with pytest.raises(VisionModelError, match=r"no labels\.json"):
        ImageClassifier.load(tmp_path)


def _colour_dataset(root: Path, n: int, seed: int) -> list[LabeledImage]:
    """Red and blue noisy squares: learnable in a few epochs."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        label = ("red", "blue")[i % 2]
        colour = (200, 30, 30) if label == "red" else (30, 30, 200)
        picture = Image.new("RGB", (40, 40), colour)
        picture.putpixel((rng.randrange(40), rng.randrange(40)), (255, 255, 255))
        path = root / "img" / f"{seed}-{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
        items.append(LabeledImage(str(path), label, str(path)))
    return items


def _short_form(runner: CliRunner, tmp_path: Path, *options: str):
    """`tunegraph finetune vision --task classify` on tmp_path's train.jsonl and val.jsonl."""
    train, val = str(tmp_path / "train.jsonl"), str(tmp_path / "val.jsonl")
    command = ["finetune", "vision", "--task", "classify", "--train", train, "--val", val]
    return runner.invoke(main, [*command, "--out", str(tmp_path / "clf"), *options])


def test_classification_short_form_end_to_end(tmp_path):
    classes = ["blue", "red"]
    for name, n, seed in (("train", 24, 1), ("val", 6, 2), ("test", 10, 3)):
        write_classification_jsonl(
            _colour_dataset(tmp_path, n, seed), tmp_path / f"{name}.jsonl", classes
        )
    with (tmp_path / "train.jsonl").open("a") as handle:  # a corrupt image is reported, not fatal
        (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG broken")
        handle.write(
            json.dumps(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "input_image", "image_url": {"url": "img/broken.png"}}
                            ],
                        },
                        {"role": "assistant", "content": "red"},
                    ]
                }
            )
            + "\n"
        )
    runner = CliRunner(env={"TUNEGRAPH_HOME": str(tmp_path / "home")})
    trained = _short_form(runner, tmp_path, "--json", *TINY, "train.epochs=4")
    assert trained.exit_code == 0, trained.output
    output = json.loads(trained.stdout)
    assert output["model"] == str(tmp_path / "clf") and output["train_examples"] == 24
    assert output["stop_summary"] and 1 <= output["epochs_run"] <= 4
    assert "broken.png" in output["rejected"][0]["reason"]
    evaluated = runner.invoke(
        main,
        [
            "eval",
            "vision",
            "--task",
            "classify",
            "--model",
            str(tmp_path / "clf"),
            "--test",
            str(tmp_path / "test.jsonl"),
            "--out",
            str(tmp_path / "report"),
            "--json",
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.stdout)
    assert scores["n"] == 10 and set(scores["per_class"]) == {"red", "blue"}
    assert scores["accuracy"] >= 0.9
    assert scores["model"]["confusion"]["labels"] == classes
    assert sum(map(sum, scores["model"]["confusion"]["matrix"])) == 10
    assert (tmp_path / "report" / "confusion-model.png").stat().st_size > 1000
    assert set(scores["model"]["latency_ms"]) >= {
        "mean",
        "p50",
        "p90",
        "p95",
        "p99",
        "min",
        "max",
        "std",
    }


def test_eval_damage_cli_reports_the_metrics(damage_data, tiny_corpus, tmp_path):
    train, val = damage_data
    model_dir = run(
        _config("train.epochs=1"), train, val, tmp_path / "run", data_hash="x"
    ).model_dir
    runner = CliRunner(env={"TUNEGRAPH_HOME": str(tmp_path)})
    result = runner.invoke(
        main,
        [
            "eval",
            "vision",
            "--task",
            "damage",
            "--model",
            str(model_dir),
            "--test",
            str(tiny_corpus / "damage" / "annotations" / "test.json"),
            "--images",
            str(tiny_corpus / "damage" / "images"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    for key in (
        "type_f1_micro",
        "type_f1_macro",
        "part_f1_micro",
        "severity_accuracy",
        "invalid_rate",
        "latency_ms",
    ):
        assert key in scores, key
    assert scores["invalid_rate"] == 0.0 and scores["n"] >= 1
    assert "cost_mae" not in scores  # the damage model states no cost; no price table adds one
    wrong = runner.invoke(
        main,
        [
            "eval",
            "vision",
            "--task",
            "classify",
            "--model",
            str(model_dir),
            "--test",
            str(tmp_path / "none.jsonl"),
        ],
    )
    assert wrong.exit_code == 1 and "no such file" in wrong.output


def test_every_shipped_vision_config_loads_into_the_recipe_config():
    root = Path(__file__).resolve().parents[2] / "configs" / "vision"
    configs = sorted(root.glob("*.yaml"))
    assert configs
    for path in configs:
        if "task: assess" in path.read_text():
            assert load_config(VisionLMConfig, path).task == "assess"
            continue
        config = load_config(ImageClassifierConfig, path)
        assert config.task in ("damage", "classify"), path


def _workspace(root: Path, demo_dir: Path, models=None) -> Workspace:
    return Workspace(
        demo_dir=demo_dir,
        runs_dir=root / "runs",
        adapters_dir=root / "adapters",
        vision_dir=root / "vision",
        models=models,
    )


def test_vision_recipe_picks_the_recipe_and_fills_its_config(tmp_path):
    config, main = vision_recipe(None, "damage", None, None, ["train.epochs=3"])
    assert main is image_classifier.main
    assert (config.task, config.name, config.train.epochs) == ("damage", "damage-model", 3)
    config, _ = vision_recipe(None, "classify", tmp_path / "t.jsonl", tmp_path / "v.jsonl")
    assert (config.name, config.data.source) == ("classifier", "jsonl")
    assert (config.data.train_file, config.data.val_file) == (
        tmp_path / "t.jsonl",
        tmp_path / "v.jsonl",
    )
    config, _ = vision_recipe(None, "classify", tmp_path / "a.json", None, ["name=mine"])
    assert (config.name, config.data.source) == ("mine", "coco")
    yaml_file = tmp_path / "vlm.yaml"
    yaml_file.write_text("task: assess\nname: my-vlm\n")
    config, main = vision_recipe(yaml_file, None, None, None, ["grid=3,1"])
    assert main is vision_lm.main
    assert isinstance(config, VisionLMConfig) and config.name == "my-vlm"
    assert config.grid == (3, 1)
    with pytest.raises(ConfigError, match="nope"):
        vision_recipe(None, "damage", None, None, ["nope=1"])


def test_each_short_form_trains_as_its_quick_profile(tmp_path):
    """`--task T` without `--config` resolves to the config `--config` T's quick profile does
    (issue 25: the short form trained one epoch, the profile ten)."""
    train, val = tmp_path / "t.jsonl", tmp_path / "v.jsonl"
    short, _ = vision_recipe(None, "classify", train, val)
    profile, _ = vision_recipe(
        shipped_config("vision/classify_quick.yaml"),
        None,
        overrides=[f"data.train_file={train}", f"data.val_file={val}"],
    )
    assert to_dict(short) == to_dict(profile)
    assert short.train.epochs > 1 and short.train.patience > 0  # stops on validation loss
    for task, name in (("damage", "damage_quick.yaml"), ("assess", "vlm_quick.yaml")):
        short, main = vision_recipe(None, task)
        profile, same = vision_recipe(shipped_config(f"vision/{name}"))
        assert to_dict(short) == to_dict(profile) and main is same, task
    assert to_dict(vision_recipe(None)[0]) == to_dict(vision_recipe(None, "damage")[0])
    with pytest.raises(ConfigError, match="task='segment': use one of damage, classify"):
        vision_recipe(None, "segment")


def test_the_short_form_prints_how_many_epochs_ran_and_why(tmp_path):
    for name, n, seed in (("train", 12, 1), ("val", 4, 2)):
        write_classification_jsonl(
            _colour_dataset(tmp_path, n, seed), tmp_path / f"{name}.jsonl", ["blue", "red"]
        )
    runner = CliRunner(env={"TUNEGRAPH_HOME": str(tmp_path / "home")})
    trained = _short_form(runner, tmp_path, *TINY, "train.epochs=3", "train.patience=1")
    assert trained.exit_code == 0, trained.output
    manifest = json.loads((tmp_path / "clf" / "tunegraph-manifest.json").read_text())
    metrics = manifest["metrics"]
    assert trained.stdout.splitlines()[-1] == metrics["stop_summary"]
    if metrics["stop_reason"] == "patience":  # which one depends on the losses of this CPU
        epochs = metrics["epochs_run"]
        assert metrics["stop_summary"].startswith(
            f"stopped after {epochs:g} of 3 epochs: validation loss did not improve for 1 epoch;"
        )
        assert epochs < 3 and metrics["best_epoch"] == epochs - 1
    else:
        assert metrics["stop_summary"].startswith("ran all 3 epochs")
        assert metrics["epochs_run"] == 3


def test_main_reads_the_workspace_trains_and_sums_up_the_run(damage_data, tiny_corpus, tmp_path):
    train, val = damage_data
    config, main = vision_recipe(None, "damage", None, None, [*TINY, "train.epochs=1"])
    lines: list[str] = []
    done = main(config, _workspace(tmp_path, tiny_corpus), log=lines.append)
    model_dir = tmp_path / "vision" / "damage-model"
    assert lines[0] == f"data: {len(train)} train / {len(val)} val images, 0 rejected"
    summary = done.summary()
    assert summary["model"] == str(model_dir) and summary["run_dir"] == str(
        tmp_path / "runs" / "damage-model"
    )
    assert summary["rejected"] == [] and summary["train_examples"] == len(train)
    assert summary["steps"] == -(-len(train) // 4) and done.headline.startswith(
        f"{summary['steps']} steps"
    )
    manifest = json.loads((model_dir / "tunegraph-manifest.json").read_text())
    examples, _ = damage_examples("train", demo_dir=tiny_corpus)
    assert manifest["data_sha256"] == data_hash(examples)
    assert manifest["metrics"]["eval_loss"] == summary["eval_loss"]
    assert (tmp_path / "runs" / "damage-model" / "metrics.jsonl").is_file()
    # out= puts the model elsewhere; log=None is silent
    moved = main(
        config, _workspace(tmp_path, tiny_corpus), out=tmp_path / "elsewhere", resume=False
    )
    assert moved.result.model_dir == tmp_path / "elsewhere"
    assert (tmp_path / "elsewhere" / "labels.json").is_file()


def test_evaluate_vision_writes_the_results_it_returns(damage_data, tiny_corpus, tmp_path):
    train, val = damage_data
    model_dir = run(
        _config("train.epochs=1"), train, val, tmp_path / "run", data_hash="x"
    ).model_dir
    result = evaluate_vision(
        "damage",
        model_dir,
        demo_dir=tiny_corpus,
        out=tmp_path / "report",
        load_causal_lm=None,
    )
    test, _ = damage_examples("test", demo_dir=tiny_corpus)
    assert result["n"] == len(test) and result["rejected"] == []
    assert result["model"] == ImageClassifier.load(model_dir).name
    assert json.loads((tmp_path / "report" / "results.json").read_text()) == result
    colours = tmp_path / "colours.jsonl"
    write_classification_jsonl(_colour_dataset(tmp_path, 2, 1), colours, ["blue", "red"])
    with pytest.raises(ValueError, match="is a 'damage' model; use --task damage"):
        evaluate_vision(
            "classify",
            model_dir,
            test_file=colours,
            demo_dir=tiny_corpus,
            out=tmp_path / "report",
            load_causal_lm=None,
        )
