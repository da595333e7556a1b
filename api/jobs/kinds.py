"""The job kinds the API offers: each runs a ``tunegraph`` command in a child process.

``ingest-manuals``, ``ingest-claims``, ``ingest-coco``, ``finetune-text``, ``finetune-vision``
and ``compare`` take the command's arguments as JSON parameters (see :data:`COMMANDS`), run it
with ``--json`` under the app's settings, stream its progress and log lines into the job, and
return its JSON summary as the job's result (a ``compare`` job's ``out`` is the folder of its
report, served by ``GET /v1/jobs/<id>/report``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.comparison import PROGRESS_UNIT, CompareOptions
from api.jobs.manager import JobCancelled, JobKind
from api.jobs.worker import PROGRESS_PREFIX
from api.settings import Settings

STOP_GRACE_S = 10  # after SIGTERM, a cancelled command gets this long before SIGKILL
_ERROR_LINES = 5  # stderr lines quoted when a command fails


@dataclass(frozen=True)
class Param:
    """One job parameter: its JSON type and how it goes on the command line: as argument(s)
    (no flag), after ``flag`` (once per item of a list), or, for a boolean, as the bare
    ``flag`` when the value equals ``switch``."""

    type: type
    required: bool = False
    flag: str | None = None
    switch: bool | None = None


@dataclass(frozen=True)
class Command:
    """A CLI command as a job kind; ``unit`` names the progress bar that measures the job;
    ``check`` refuses bad values (``ValueError``) at submission, before a job is queued."""

    words: tuple[str, ...]
    params: dict[str, Param]
    unit: str | None = None
    check: Callable[[dict[str, Any]], None] | None = None


def _check_compare(params: dict[str, Any]) -> None:
    """What ``tunegraph compare`` would refuse: a bad name, negative counts, no prices file."""
    try:
        CompareOptions(
            **{k: params[k] for k in ("name", "images", "questions", "seed") if k in params}
        )
    except ValueError as exc:
        raise ValueError(f"bad parameter(s) of compare: {exc}") from None
    if "prices" in params and not Path(params["prices"]).is_file():
        raise ValueError(f"parameter 'prices' of compare: no file {params['prices']}")


_RESUME = Param(bool, flag="--no-resume", switch=False)
COMMANDS = {
    "ingest-manuals": Command(
        ("ingest", "manuals"),
        {"paths": Param(list, required=True), "namespace": Param(str, flag="--namespace"),
         "force": Param(bool, flag="--force", switch=True)},
    ),
    "ingest-claims": Command(
        ("ingest", "claims"),
        {"file": Param(str, required=True), "map": Param(list, flag="--map"),
         "date_format": Param(str, flag="--date-format")},
        unit="claim",
    ),
    "ingest-coco": Command(
        ("ingest", "coco"),
        {"annotations": Param(str, required=True), "images": Param(str, flag="--images"),
         "name": Param(str, flag="--name")},
    ),
    "finetune-text": Command(
        ("finetune", "text"),
        {"config": Param(str, flag="--config"), "overrides": Param(list), "resume": _RESUME},
        unit="step",
    ),
    "finetune-vision": Command(
        ("finetune", "vision"),
        {"config": Param(str, flag="--config"), "task": Param(str, flag="--task"),
         "train": Param(str, flag="--train"), "val": Param(str, flag="--val"),
         "out": Param(str, flag="--out"), "overrides": Param(list), "resume": _RESUME},
        unit="step",
    ),
    "compare": Command(
        ("compare",),
        {"name": Param(str, flag="--name"), "images": Param(int, flag="--images"),
         "questions": Param(int, flag="--questions"), "prices": Param(str, flag="--prices"),
         "seed": Param(int, flag="--seed")},
        unit=PROGRESS_UNIT,
        check=_check_compare,
    ),
}  # fmt: skip


def arguments(kind: str, params: dict[str, Any]) -> list[str]:
    """The command line for a job's parameters; ``ValueError`` names any bad parameter.

    >>> arguments("ingest-claims", {"file": "claims.csv", "map": ["vin=VIN"]})
    ['ingest', 'claims', '--map', 'vin=VIN', '--json', '--', 'claims.csv']
    """
    command = COMMANDS[kind]
    unknown = sorted(set(params) - set(command.params))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {kind}; use "
            + ", ".join(command.params)
        )
    options, positionals = [], []
    for name, param in command.params.items():
        if name not in params:
            if param.required:
                raise ValueError(f"{kind} needs the parameter {name!r}")
            continue
        value = params[name]
        if (
            not isinstance(value, param.type)
            or (param.type is list and not all(isinstance(v, str) for v in value))
            or (param.type is int and isinstance(value, bool))  # True is an int to Python
        ):
            wanted = "a list of strings" if param.type is list else param.type.__name__
            raise ValueError(f"parameter {name!r} of {kind} must be {wanted}")
        if param.switch is not None:
            options += [param.flag] if value == param.switch else []
            continue
        for item in value if isinstance(value, list) else [value]:
            if param.flag:
                options += [param.flag, str(item)]
            else:
                positionals.append(str(item))
    if command.check is not None:
        command.check(params)
    # `--` ends the options: a positional value such as "--help" stays a value
    return [*command.words, *options, "--json", "--", *positionals]


def last_json_object(text: str) -> dict[str, Any]:
    """The last top-level JSON object in a command's output (its summary, printed with
    ``indent=2`` after whatever else the command printed); ``ValueError`` when there is none.

    >>> last_json_object('loaded {1} model\\n{"a": 1}\\n{\\n  "b": {\\n    "c": 2\\n  }\\n}\\n')
    {'b': {'c': 2}}
    """
    decoder = json.JSONDecoder()
    # a top-level object starts a line; nested ones are indented
    for match in reversed(list(re.finditer(r"^\{", text, re.MULTILINE))):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object in the output")


@dataclass(frozen=True)
class CliJob:
    """A job kind that runs one ``tunegraph`` command in a child process."""

    kind: str
    settings: Settings

    def check(self, params: dict[str, Any]) -> None:
        arguments(self.kind, params)

    def __call__(
        self,
        params: dict[str, Any],
        progress: Callable[[float], None],
        log: Callable[[str], None],
        cancel: threading.Event,
    ) -> dict[str, Any]:
        unit = COMMANDS[self.kind].unit
        argv = [sys.executable, "-m", "api.jobs.worker", *arguments(self.kind, params)]
        log("$ tunegraph " + " ".join(argv[3:]))
        child = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.settings.to_env()},
        )
        tail: deque[str] = deque(maxlen=_ERROR_LINES)
        out: list[str] = []

        def read_stderr() -> None:
            for line in child.stderr:
                line = line.rstrip("\n")
                if line.startswith(PROGRESS_PREFIX):
                    bar_unit, _, fraction = line.removeprefix(PROGRESS_PREFIX).partition(" ")
                    if bar_unit == unit:
                        progress(float(fraction))
                elif line.strip():
                    tail.append(line)
                    log(line)

        readers = [
            threading.Thread(target=read_stderr, daemon=True),
            threading.Thread(target=lambda: out.append(child.stdout.read()), daemon=True),
        ]
        for reader in readers:
            reader.start()
        while child.poll() is None:
            if cancel.wait(0.2):
                child.terminate()
                try:
                    child.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                log("cancelled: the command was stopped")
                raise JobCancelled
        for reader in readers:
            reader.join()
        if child.returncode != 0:
            raise RuntimeError(
                f"`tunegraph {' '.join(argv[3:5])}` exited with code {child.returncode}: "
                + (" | ".join(tail) or "".join(out)[:500] or "no output")
            )
        try:
            return last_json_object("".join(out))
        except ValueError:
            raise RuntimeError(
                f"`tunegraph {' '.join(argv[3:5])}` printed no JSON summary"
            ) from None


def default_kinds(settings: Settings) -> dict[str, JobKind]:
    """Every job kind the CLI can run today, bound to ``settings``."""
    return {kind: CliJob(kind, settings) for kind in COMMANDS}
