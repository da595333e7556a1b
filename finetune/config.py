"""Recipe configs: dataclasses whose fields are the config, loaded from YAML plus ``a.b=value``
overrides. Unknown keys are rejected with the list of valid ones; every problem is reported at
once. Text and vision recipes share this plumbing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# The repository's configs/, installed as this package (pyproject.toml) so that the shipped
# recipes and demo profiles are found the same way in a checkout and after `pip install`.
SHIPPED_PACKAGE = "tunegraph_configs"


def shipped_configs() -> Path:
    """The folder of the YAML recipes and demo profiles shipped with tunegraph."""
    from importlib.resources import files

    try:
        root = files(SHIPPED_PACKAGE)
    except ModuleNotFoundError:
        raise ConfigError(
            f"the shipped configs (package {SHIPPED_PACKAGE}) are not installed: reinstall "
            "tunegraph (`pip install .`, or `make install` in a checkout)"
        ) from None
    return Path(str(root))  # pip installs unpacked: a real folder the recipes can read


def shipped_config_names(folder: str = "") -> list[str]:
    """The shipped configs under ``folder`` by their names under ``configs/``.

    >>> shipped_config_names("demo")
    ['demo/corpus.yaml', 'demo/full.yaml', 'demo/quick.yaml', 'demo/smoke.yaml']
    """
    root = shipped_configs()
    return sorted(path.relative_to(root).as_posix() for path in (root / folder).rglob("*.yaml"))


def shipped_config(name: str | Path) -> Path:
    """A config shipped with tunegraph by its name under ``configs/`` (which may lead the
    name); :class:`ConfigError` listing the shipped ones when there is none of that name.

    >>> shipped_config("vision/classify_quick.yaml").is_file()
    True
    >>> shipped_config("configs/text/smollm2_quick.yaml").name
    'smollm2_quick.yaml'
    """
    parts = Path(name).parts
    if parts[:1] == ("configs",):
        parts = parts[1:]
    root = shipped_configs().resolve()
    path = root.joinpath(*parts).resolve()
    if parts and path.is_relative_to(root) and path.is_file():
        return path
    raise ConfigError(
        f"{name}: tunegraph ships no such config; it ships {', '.join(shipped_config_names())}"
    )


def find_config(path: str | Path) -> Path:
    """A config file a user names: ``path`` itself (relative to the current directory) when it
    exists, else the shipped config of that name, so that ``configs/text/smollm2_quick.yaml``
    works from a checkout (its own, possibly edited, copy) and from anywhere else."""
    given = Path(path)
    if given.is_file():
        return given
    if not given.is_absolute():
        with contextlib.suppress(ConfigError):
            return shipped_config(given)
    raise ConfigError(
        f"{path}: no such file, nor a config tunegraph ships (configs/"
        + ", configs/".join(shipped_config_names())
        + "); give the path of your YAML file"
    )


class ConfigError(ValueError):
    """A config file or override that cannot be applied; names the key and the valid ones."""


def load_config(cls: type[T], path: Path | None = None, overrides: Sequence[str] = ()) -> T:
    """``cls`` from a YAML file (optional) with dotted ``key=value`` overrides applied on top.

    ``load_config(TextRecipeConfig, Path("configs/text/smollm2_quick.yaml"), ["train.lr=1e-4"])``
    """
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file.") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc}).") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping of keys to values.")
        data = loaded
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: write KEY=VALUE, e.g. train.lr=1e-4")
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        target[parts[-1]] = yaml.safe_load(raw) if raw else ""
    problems: list[str] = []
    config = _build(cls, data, "", problems)
    if problems:
        raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))
    return config


def _build(
    cls: type, data: dict[str, Any], prefix: str, problems: list[str], base: Any = None
) -> Any:
    """``cls`` from ``data``; fields ``data`` leaves out come from ``base`` (the section's own
    default, which may differ from the class defaults) or the class defaults."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            problems.append(f"unknown key {prefix}{key}; valid keys here: {', '.join(names)}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if base is not None:
                values[f.name] = getattr(base, f.name)
            continue
        kind, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                problems.append(f"{prefix}{f.name} must be a section (a mapping)")
                continue
            default = None
            if base is not None:
                default = getattr(base, f.name)
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            values[f.name] = _build(kind, value, f"{prefix}{f.name}.", problems, default)
        else:
            try:
                values[f.name] = _coerce(value, kind)
            except (TypeError, ValueError) as exc:
                problems.append(f"{prefix}{f.name}={value!r}: {exc}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        problems.append(f"{prefix.rstrip('.') or 'config'}: {exc}")
        return None


def _coerce(value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        if isinstance(value, str):  # a=1,2 on the command line
            import yaml

            value = [yaml.safe_load(v.strip()) for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list")
        (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
        return tuple(_coerce(v, item) for v in value)
    if origin is typing.Literal:
        if value not in typing.get_args(kind):
            raise ValueError(f"use one of {', '.join(map(str, typing.get_args(kind)))}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected a whole number")
        return value
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as text
            try:
                return float(value)
            except ValueError:
                raise ValueError("expected a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError("expected text")
        return value
    if kind is Path:
        if not isinstance(value, str):
            raise ValueError("expected a path")
        return Path(value)
    raise TypeError(f"unsupported config type {kind}")


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config (paths as strings), for manifests."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))
