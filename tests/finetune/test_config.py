from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from finetune.config import ConfigError, load_config, to_dict
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
