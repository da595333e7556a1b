"""tunegraph installed the way a user (and the Docker image) installs it, run outside the checkout.

Issue #25: ``pip install .`` (not ``-e``) must serve and run the demo from any directory, which
fails if code reads files next to its sources instead of package data. The checkout holds an
editable install, so these tests build the wheel as the Dockerfile does (its wheel stage's COPY
lines and ``pip wheel`` command, on a copy of those files), install it with ``pip install
--no-deps --target`` (the dependencies are this environment's, already installed: installing
torch again would take minutes) and run the installed ``tunegraph`` script from a temporary
directory with only that folder ahead of the environment's packages. Not run here: the image's
dependency install and base image (no Docker engine).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_layout import PACKAGES, ROOT, dockerfile_stages


@dataclass(frozen=True)
class Installed:
    wheel: Path
    site: Path  # what `pip install --target` wrote: the packages, and bin/tunegraph
    cwd: Path  # an empty folder outside the checkout
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.site / "bin" / "tunegraph"), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str) -> Any:
        """What ``code`` prints as JSON, run by this environment's Python on the install."""
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=self.cwd, env=self.env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def _build_wheel(src: Path, wheels: Path) -> Path:
    """The Dockerfile's wheel stage on ``src``: its COPY lines, then its ``pip wheel`` command."""
    stage = dockerfile_stages()[0]
    for line in stage:
        if line.startswith("COPY "):
            *sources, target = shlex.split(line)[1:]
            for source in sources:
                origin, dest = ROOT / source, src / target
                if origin.is_dir():
                    shutil.copytree(
                        origin, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
                    )
                else:
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, dest / origin.name)
    (command,) = [shlex.split(line)[1:] for line in stage if line.startswith("RUN ")]
    assert command[:2] == ["pip", "wheel"] and "/wheels" in command, command
    command = [str(wheels) if arg == "/wheels" else arg for arg in command]
    # this environment's setuptools instead of a fresh one from the index
    subprocess.run(
        [sys.executable, "-m", *command, "--no-build-isolation", "--quiet"], cwd=src, check=True
    )
    (wheel,) = wheels.glob("tunegraph-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    wheel = _build_wheel(root / "src", root / "wheels")
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", site, wheel],
        check=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEGRAPH_", "PYTHON"))}
    env.update(PYTHONPATH=str(site), TUNEGRAPH_HOME=str(root / "home"))
    (root / "cwd").mkdir()
    return Installed(wheel, site, root / "cwd", env)


def _files(folder: Path) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_wheel_holds_every_file_of_the_packages_and_the_shipped_configs(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for package in PACKAGES:
        missing = {f"{package}/{name}" for name in _files(ROOT / package)} - names
        assert not missing, f"not in the wheel (pyproject.toml, package-data): {sorted(missing)}"
    shipped = {f"tunegraph_configs/{name}" for name in _files(ROOT / "configs")}
    assert shipped - names == set() and "tunegraph_configs/demo/smoke.yaml" in shipped


def test_the_installed_package_runs_from_its_own_folder(installed):
    # every module of every package (not the Alembic scripts or the CLI's __main__), imported:
    # none may come from the checkout (the venv's editable install would otherwise fill in
    # whatever the wheel lacks)
    code = (
        "import json, importlib, pkgutil, sys, api, finetune.config as c\n"
        "for package in ('agents', 'api', 'finetune', 'ingest', 'rag', 'tunegraph_configs'):\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        if 'migrations' not in info.name and '__main__' not in info.name:\n"
        "            importlib.import_module(info.name)\n"
        "files = sorted(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] in\n"
        "    ('agents', 'api', 'finetune', 'ingest', 'rag', 'tunegraph_configs'))\n"
        "print(json.dumps([files, str(c.shipped_configs()), c.shipped_config_names()]))"
    )
    files, configs, names = installed.python(code)
    outside = [f for f in files if not Path(f).is_relative_to(installed.site)]
    assert len(files) > 100 and not outside, f"imported from the checkout: {outside[:5]}"
    assert Path(configs) == installed.site / "tunegraph_configs"
    assert names == sorted(name for name in _files(ROOT / "configs") if name.endswith(".yaml"))

    result = installed.run("--help")
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "serve" in result.stdout


def test_config_names_work_outside_the_checkout_and_a_wrong_one_lists_the_shipped(installed):
    """``configs/...`` as typed in the checkout names the shipped file anywhere else."""
    result = installed.run("finetune", "text", "--config", "configs/text/no_such.yaml")
    assert result.returncode == 2
    assert "configs/text/smollm2_quick.yaml" in result.stderr, result.stderr
    # the shipped recipe is found and read (an unknown key stops it before any training)
    result = installed.run("finetune", "text", "--config", "configs/text/smollm2_quick.yaml", "x=1")
    assert result.returncode == 2 and "unknown key x; valid keys here:" in result.stderr
    result = installed.run("demo", "--profile", "smoke", "--skip-models")  # stage 1
    assert result.returncode == 0, result.stderr
    assert "claims: 300 rows" in result.stdout  # the size configs/demo/smoke.yaml sets


# What the demo's training stages do with each profile's recipes before they train: resolve the
# shipped file, hand the vision ones to the second process by path, load each with its overrides.
RECIPES = """
import json
from pathlib import Path
from api.cli.demo import PROFILE_NAMES, load_profile, recipe, vision_params
from finetune.config import load_config
from finetune.recipes import vision_recipe
from finetune.recipes.text_lora import TextRecipeConfig
paths = []
for name in PROFILE_NAMES:
    profile = load_profile(name)
    paths.append(str(recipe(profile.text_config)))
    load_config(TextRecipeConfig, Path(paths[-1]), profile.text)
    for config, overrides in ((profile.damage_config, profile.damage), (profile.vlm_config, profile.vlm)):
        params = vision_params(config, overrides)
        paths.append(params["config"])
        vision_recipe(Path(params["config"]), overrides=params["overrides"])
print(json.dumps(paths))
"""


def test_every_demo_profiles_recipes_load_from_the_installed_package(installed):
    paths = installed.python(RECIPES)
    assert len(paths) == 9
    assert all(Path(path).is_relative_to(installed.site / "tunegraph_configs") for path in paths)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_images_command_serves_from_the_installed_package(installed, tmp_path):
    """The Dockerfile's CMD (``tunegraph serve``) answers /healthz and serves the web pages
    (templates and scripts are package data); stopped with SIGTERM as ``docker stop`` does."""
    (cmd,) = [line for line in dockerfile_stages()[-1] if line.startswith("CMD ")]
    program, *args = json.loads(cmd.removeprefix("CMD "))
    port = _free_port()
    env = {**installed.env, "TUNEGRAPH_HOST": "127.0.0.1", "TUNEGRAPH_PORT": str(port)}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(installed.site / "bin" / program), *args],
            cwd=installed.cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: gunicorn's worker stops with it
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log.read_text("utf-8", errors="replace")
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text("utf-8", errors="replace")
                time.sleep(0.5)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        page = httpx.get(base + "/", follow_redirects=True, timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', page.text)
        assert assets, page.text
        for asset in assets:
            assert httpx.get(base + asset, timeout=10).status_code == 200, asset
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, log.read_text("utf-8", errors="replace")


@pytest.mark.real_model
@pytest.mark.skipif(
    bool(os.environ.get("TUNEGRAPH_SKIP_INSTALLED_DEMO")),
    reason="TUNEGRAPH_SKIP_INSTALLED_DEMO is set (the whole smoke demo from the installed "
    "package takes ~3 minutes on a quiet 2-core CPU)",
)
def test_the_smoke_demo_runs_from_the_installed_package(installed):
    """All seven stages, the vision training in its second process included (~3 min on a quiet
    2-core CPU, in `make test`; TUNEGRAPH_SKIP_INSTALLED_DEMO=1 skips it)."""
    result = installed.run("demo", "--profile", "smoke", timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(
        (Path(installed.env["TUNEGRAPH_HOME"]) / "runs/demo/report.json").read_text()
    )
    assert set(report["assessment_scores"]) == {"finetuned", "agentic"}
    assert len(report["chat_scores"]) == 5
    assert "Report: " in result.stdout
