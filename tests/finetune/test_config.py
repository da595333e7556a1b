from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from finetune.config import (
    ConfigError,
    find_config,
    load_config,
    shipped_config,
    to_dict,
)
from finetune.trainer import TrainArgs


@dataclass
class Section:
    lr: float = 1e-4
    steps: int = 10
    names: tuple[str, ...] = ("a",)


@dataclass
class Recipe:
    name: str = "x"
    out: Path | None = None
    # a section whose default differs from the class defaults
    train: Section = field(default_factory=lambda: Section(lr=1e-3))
    args: TrainArgs = field(default_factory=TrainArgs)


def test_yaml_then_dotted_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: from-yaml\ntrain:\n  steps: 5\n")
    config = load_config(Recipe, path, ["train.names=b,c", "out=/tmp/o", "args.lr=2e-4"])
    assert config.name == "from-yaml" and config.train.steps == 5
    assert config.train.names == ("b", "c") and config.out == Path("/tmp/o")
    assert config.args.lr == 2e-4
    assert to_dict(config)["out"] == "/tmp/o"


def test_a_partly_given_section_keeps_its_own_defaults():
    assert load_config(Recipe, None, ["train.steps=3"]).train.lr == 1e-3
    assert load_config(Recipe).train.lr == 1e-3


def test_every_problem_is_reported_at_once_with_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(Recipe, None, ["train.rate=1", "train.steps=many", "args.epochs=0"])
    message = str(caught.value)
    assert "unknown key train.rate; valid keys here: lr, steps, names" in message
    assert "train.steps='many': expected a whole number" in message
    assert "train.epochs=0 must be >= 1" in message
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(Recipe, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="write KEY=VALUE"):
        load_config(Recipe, None, ["justakey"])


def test_comma_lists_from_the_command_line_take_the_item_type():
    @dataclass
    class Widths:
        widths: tuple[int, ...] = (1,)

    assert load_config(Widths, None, ["widths=8,16"]).widths == (8, 16)
    assert load_config(Widths, None, ["widths=[4, 5]"]).widths == (4, 5)


def test_a_config_path_is_the_current_directorys_file_first_then_the_shipped_one(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # not a checkout: the name means the shipped file
    name = "configs/text/smollm2_quick.yaml"
    assert find_config(name) == shipped_config("text/smollm2_quick.yaml")
    own = tmp_path / name
    own.parent.mkdir(parents=True)
    own.write_text("name: mine\n")
    assert find_config(name) == Path(name)


def test_an_unknown_config_lists_the_shipped_ones_and_names_stay_inside_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"configs/text/smollm2_quick\.yaml.*your YAML file"):
        find_config("configs/text/smollm2.yaml")
    # configs/../pyproject.toml exists in a checkout, outside the shipped configs
    for name in ("configs/../pyproject.toml", "text", "configs"):
        with pytest.raises(ConfigError, match=r"ships no such config; it ships demo/corpus\.yaml"):
            shipped_config(name)


def test_the_text_short_form_is_the_quick_profile_and_fits_your_own_examples(tmp_path):
    from finetune.config import load_config, shipped_config
    from finetune.recipes import TEXT_QUICK_PROFILE, text_recipe
    from finetune.recipes.text_lora import TextRecipeConfig

    quick = load_config(TextRecipeConfig, shipped_config(TEXT_QUICK_PROFILE), [])
    assert text_recipe(None) == quick
    assert text_recipe(None, ["train.lr=1e-4"]).train.lr == 1e-4
    own = text_recipe(None, ["data.source=jsonl", "data.train_file=t.jsonl"])
    # your own chat examples carry no manual to paraphrase, refuse from or retrieve over
    assert (own.data.spec_paraphrases, own.data.unanswerable_share, own.data.raft_share) == (
        0,
        0,
        0,
    )
    assert own.train == quick.train and own.lora == quick.lora
    # the profile named is the short form
    named = text_recipe(shipped_config(TEXT_QUICK_PROFILE), ["data.source=jsonl"])
    assert named.data.raft_share == 0 and named.data.spec_paraphrases == 0
    # set on the command line, they stay (and the data builder says what they need)
    assert text_recipe(None, ["data.source=jsonl", "data.raft_share=0.2"]).data.raft_share == 0.2
    # a YAML given is read as it is
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("data:\n  source: jsonl\n  spec_paraphrases: 2\n")
    assert text_recipe(yaml_file).data.spec_paraphrases == 2
