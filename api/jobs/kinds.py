"""The job kinds the API offers: each runs a function of :mod:`api.jobs.worker` in a child
process, the same library work as the ``tunegraph`` command it is named after.

``ingest-manuals``, ``ingest-claims``, ``ingest-coco``, ``finetune-text``, ``finetune-vision``
and ``compare`` take that command's options as JSON parameters (see :data:`KINDS`), checked at
submission; the job streams the child's progress and log lines and returns the command's
``--json`` summary as its result (a ``compare`` job's ``out`` is the folder of its report,
served by ``GET /v1/jobs/<id>/report``).

Every file a job names is confined (:mod:`api.jobs.confine`): relative paths start in the
owner's upload folder, and the child process runs there; a parameter, override or config entry
outside the folders jobs may use is refused at submission, and checked again when it runs.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from api.jobs.child import BarEvent, ChildFailed, ChildProcess, ChildStopped
from api.jobs.confine import Roots, check_overrides
from api.jobs.manager import JOB_OWNER, JobCancelled, JobKind
from api.jobs.worker import OWNER_ENV
from api.settings import Settings

INT_RANGE = (-(2**63), 2**63 - 1)  # what the libraries below take as a whole number


@dataclass(frozen=True)
class Param:
    """One job parameter: its JSON type, whether the job needs it, and whether it names a
    file the job reads (``read``, ``config``) or a folder it writes (``write``)."""

    type: type
    required: bool = False
    path: Literal["read", "write", "config"] | None = None


@dataclass(frozen=True)
class Kind:
    """A job kind: the command it matches, its parameters, the worker function it runs, the
    unit of the progress bar that measures it, and ``check``, which refuses bad values
    (``ValueError``) at submission, before a job is queued."""

    command: str
    params: dict[str, Param]
    function: str
    unit: str | None = None
    # (resolved params, params as given: for messages, which never show the server's paths)
    check: Callable[[dict[str, Any], dict[str, Any]], None] | None = None


# a compare job's images / questions / claims are counts; one at least the test split's size
# compares the whole split (the command's "all")
_COMPARE_OPTIONS = ("name", "images", "questions", "claims", "concurrency", "seed")


def _check_compare(params: dict[str, Any], given: dict[str, Any]) -> None:
    """What ``tunegraph compare`` would refuse: a bad name, negative counts, a concurrency
    below 1, no prices file."""
    from agents.compare import CompareOptions

    try:
        CompareOptions(
            **{
                k: params[k]
                for k in (*_COMPARE_OPTIONS, "cpu_per_hour", "gpu_per_hour")
                if k in params
            }
        )
    except ValueError as exc:
        raise ValueError(f"bad parameter(s) of compare: {exc}") from None
    if "prices" in params and not Path(params["prices"]).is_file():
        raise ValueError(f"parameter 'prices' of compare: no file {given['prices']}")


def _check_manuals(params: dict[str, Any], given: dict[str, Any]) -> None:
    """What ``tunegraph ingest manuals`` refuses before it reads anything: no path, a path
    that does not exist, a namespace that cannot name an index."""
    from rag.indexing import check_namespace

    if not params["paths"]:
        raise ValueError("parameter 'paths' of ingest-manuals: name at least one file or folder")
    pairs = zip(given["paths"], params["paths"], strict=True)
    missing = [raw for raw, path in pairs if not Path(path).exists()]
    if missing:
        raise ValueError(
            f"parameter 'paths' of ingest-manuals: no such file or folder {missing[0]}"
        )
    if "namespace" in params:
        try:
            check_namespace(params["namespace"])
        except ValueError as exc:
            raise ValueError(f"parameter 'namespace' of ingest-manuals: {exc}") from None


def _check_coco(params: dict[str, Any], given: dict[str, Any]) -> None:
    from ingest.coco import CocoError, dataset_file

    if "images" in params and Path(params["images"]).is_file():
        raise ValueError(
            f"parameter 'images' of ingest-coco: {given['images']} is a file, not a folder"
        )
    if "name" in params:
        try:
            dataset_file(Path("datasets"), params["name"])
        except CocoError as exc:
            raise ValueError(f"parameter 'name' of ingest-coco: {exc}") from None


def _check_claims(params: dict[str, Any], given: dict[str, Any]) -> None:
    """What ``tunegraph ingest claims`` refuses before it reads a row: a bad value map."""
    from ingest.claims import ValueMapError, parse_value_maps

    file = params.get("values_file")
    if file is not None and not Path(file).is_file():
        raise ValueError(
            f"parameter 'values_file' of ingest-claims: no file {given['values_file']}"
        )
    try:
        parse_value_maps(params.get("values", []), Path(file) if file else None)
    except ValueMapError as exc:
        # the file's name as given, never the server's path to it
        message = str(exc).replace(str(file), str(given.get("values_file"))) if file else str(exc)
        raise ValueError(f"bad value map(s) of ingest-claims: {message}") from None


VISION_TASKS = ("damage", "classify", "assess")


def _check_vision(params: dict[str, Any], given: dict[str, Any]) -> None:
    if "task" in params and params["task"] not in VISION_TASKS:
        raise ValueError(
            f"parameter 'task' of finetune-vision: {params['task']!r} is not one of "
            + ", ".join(VISION_TASKS)
        )


_WORKER = "api.jobs.worker:"
KINDS = {
    "ingest-manuals": Kind(
        "ingest manuals",
        {"paths": Param(list, required=True, path="read"), "namespace": Param(str),
         "force": Param(bool)},
        _WORKER + "ingest_manuals",
        check=_check_manuals,
    ),
    "ingest-claims": Kind(
        "ingest claims",
        {"file": Param(str, required=True, path="read"), "map": Param(list),
         "date_format": Param(str), "values": Param(list),
         "values_file": Param(str, path="read"), "strict": Param(bool)},
        _WORKER + "ingest_claims",
        unit="claim",
        check=_check_claims,
    ),
    "ingest-coco": Kind(
        "ingest coco",
        {"annotations": Param(str, required=True, path="read"), "images": Param(str, path="read"),
         "name": Param(str)},
        _WORKER + "ingest_coco",
        check=_check_coco,
    ),
    "finetune-text": Kind(
        "finetune text",
        {"config": Param(str, path="config"), "overrides": Param(list), "resume": Param(bool)},
        _WORKER + "finetune_text",
        unit="step",
    ),
    "finetune-vision": Kind(
        "finetune vision",
        {"config": Param(str, path="config"), "task": Param(str),
         "train": Param(str, path="read"), "val": Param(str, path="read"),
         "out": Param(str, path="write"), "overrides": Param(list), "resume": Param(bool)},
        _WORKER + "finetune_vision",
        unit="step",
        check=_check_vision,
    ),
    "compare": Kind(
        "compare",
        {"name": Param(str), "images": Param(int), "questions": Param(int),
         "prices": Param(str, path="read"), "seed": Param(int),
         "cpu_per_hour": Param(float), "gpu_per_hour": Param(float),
         "claims": Param(int), "concurrency": Param(int)},
        _WORKER + "compare",
        unit="comparison",
        check=_check_compare,
    ),
}  # fmt: skip


def validate(kind: str, params: dict[str, Any], roots: Roots) -> dict[str, Any]:
    """``params`` with each file resolved within ``roots``; ``ValueError`` naming any unknown,
    missing, mistyped or out-of-range parameter of ``kind``, or a file outside ``roots``.

    >>> roots = Roots(Path("/srv/tg"), "local")
    >>> validate("ingest-claims", {"file": "claims.csv", "map": ["vin=VIN"]}, roots)["file"]
    '/srv/tg/uploads/local/claims.csv'
    >>> validate("ingest-claims", {"file": 3}, roots)
    Traceback (most recent call last):
    ...
    ValueError: parameter 'file' of ingest-claims must be str
    """
    spec = KINDS[kind]
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {kind}; use " + ", ".join(spec.params)
        )
    for name, param in spec.params.items():
        if name not in params:
            if param.required:
                raise ValueError(f"{kind} needs the parameter {name!r}")
            continue
        value = params[name]
        accepted = (int, float) if param.type is float else param.type  # JSON's 1 is a number
        if (
            not isinstance(value, accepted)
            or (param.type is list and not all(isinstance(v, str) for v in value))
            or (param.type in (int, float) and isinstance(value, bool))  # True is an int
            or (param.type is float and not math.isfinite(value))
        ):
            wanted = {list: "a list of strings", float: "a number"}.get(
                param.type, param.type.__name__
            )
            raise ValueError(f"parameter {name!r} of {kind} must be {wanted}")
        if param.type is int and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ValueError(f"parameter {name!r} of {kind} must be between -2**63 and 2**63-1")
    resolved = _resolve_paths(kind, params, roots)
    if spec.check is not None:
        spec.check(resolved, params)
    return resolved


def _resolve_paths(kind: str, params: dict[str, Any], roots: Roots) -> dict[str, Any]:
    resolved = dict(params)
    for name, param in KINDS[kind].params.items():
        if name not in params:
            continue
        label = f"parameter {name!r} of {kind}"
        if param.path == "read":
            values = params[name] if param.type is list else [params[name]]
            paths = [str(roots.readable(value, label)) for value in values]
            resolved[name] = paths if param.type is list else paths[0]
        elif param.path == "config":
            resolved[name] = str(roots.config_file(params[name], label))
        elif param.path == "write":  # the only folder a job names to write: a vision model's
            resolved[name] = str(roots.output(params[name], label, "vision"))
    if "overrides" in params:
        check_overrides(params["overrides"], roots, f"parameter 'overrides' of {kind}:")
    return resolved


@dataclass(frozen=True)
class WorkerJob:
    """A job kind whose work runs in a child process under the app's settings; ``function``
    (``module:name``) replaces the kind's worker function (an embedder's, or a test's)."""

    kind: str
    settings: Settings
    function: str | None = None

    def roots(self) -> Roots:
        """The folders of the job being checked or run (its owner's: :data:`JOB_OWNER`)."""
        return Roots.of(self.settings, JOB_OWNER.get())

    def check(self, params: dict[str, Any]) -> None:
        validate(self.kind, params, self.roots())

    def __call__(
        self,
        params: dict[str, Any],
        progress: Callable[[float], None],
        log: Callable[[str], None],
        cancel: threading.Event,
    ) -> dict[str, Any]:
        spec = KINDS[self.kind]
        log(f"$ tunegraph {spec.command} {json.dumps(params, sort_keys=True)}")
        roots = self.roots()
        resolved = validate(self.kind, params, roots)  # again: the files may have changed
        roots.uploads.mkdir(parents=True, exist_ok=True)
        # Files read resolve the same in the child, which runs in the upload folder, and stay
        # as given, so that its messages show the caller's names; a shipped config and an
        # output folder start elsewhere.
        given = {
            name: resolved[name] if spec.params[name].path in ("config", "write") else value
            for name, value in params.items()
        }

        def moved(event: BarEvent) -> None:
            if event.unit == spec.unit and event.fraction is not None:
                progress(event.fraction)

        child = ChildProcess(
            self.function or spec.function,
            given,
            env={  # the work needs no API key: a child never holds one
                **self.settings.replace(home=roots.home, api_keys=(), admin_keys=()).to_env(),
                OWNER_ENV: roots.owner,
            },
            on_progress=moved,
            on_log=log,
            cwd=roots.uploads,
        )
        try:
            return child.wait(cancel)
        except ChildStopped:
            log("cancelled: the command was stopped")
            raise JobCancelled from None
        except ChildFailed as exc:
            raise JobFailed(
                f"`tunegraph {spec.command}` exited with code {exc.code}: {exc}"
            ) from None


class JobFailed(RuntimeError):
    """The job's work raised; the message names the command and the error."""


def default_kinds(settings: Settings) -> dict[str, JobKind]:
    """Every job kind, bound to ``settings``."""
    return {kind: WorkerJob(kind, settings) for kind in KINDS}
