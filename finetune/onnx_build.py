"""ONNX Runtime GenAI builds of a local Hugging Face checkpoint and of its LoRA adapters.

The engine's model builder (``onnxruntime_genai.models.builder``) turns a safetensors checkpoint
into an ONNX graph in ~10-30 s on 2 cores. Builds are cached under ``cache_dir`` (the model
store's, ``TUNEGRAPH_HOME/models/onnx``) in a folder named by a hash of the source files (names,
sizes, modification times) and the build settings (precision, engine version, LoRA slots,
:data:`BUILD_FORMAT`): a changed checkpoint or a new engine gets a new build. Each build is
written to a temp folder and renamed into place once its manifest is written, so a partial
build is never loaded; a folder whose manifest is missing or whose files do not match it is
built again.

For adapters the base is built with LoRA slots: every linear layer of :data:`LORA_TARGETS`
gets a LoRA branch (``x @ A @ B``) whose weights are graph inputs with zero defaults, so the
graph without an adapter is the base model. An adapter is exported once to ONNX Runtime's
adapter format (A transposed, B scaled by ``alpha / r`` and transposed, named as the graph's
inputs) and chosen per request.

A decoder that reads embeddings (:func:`build_embeds_decoder`, for the composed vision-language
model: its visual tokens are not token ids) is built from a model in memory, keyed by a hash of
its weights, with the builder's ``exclude_embeds`` (the graph takes ``inputs_embeds``) and
``prune_lm_head`` (logits of the last position only).

Over 400 lines on purpose: the three builds, their cache (keys, manifests, publishing) and the
builder's workarounds make one build format, read together; each build says whether it was
made by the call or found in the cache (``built``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.trainer import DEFAULT_TARGETS

ENGINE = "onnxruntime-genai"
INSTALL_HINT = "pip install -e '.[engine]' (onnxruntime-genai, onnx, onnx-ir)"
BUILD_FORMAT = 1  # bump when what a build holds changes: older builds are then rebuilt
MANIFEST = "tunegraph-onnx.json"
ADAPTER_FILE = "adapter.onnx_adapter"
PRECISIONS = ("fp32", "int8", "int4")
LORA_TARGETS = DEFAULT_TARGETS  # the text recipe's default targets: every linear layer
_PEFT_KEY = re.compile(
    r"(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight"
)
_LAYER_LINE = re.compile(r"Reading layer (\d+)")

logger = logging.getLogger(__name__)
Log = Callable[[str], None]


class EngineUnavailable(RuntimeError):
    """The engine is not installed, or this model or adapter cannot be built for it; the
    message says why and what to change."""


@dataclass(frozen=True)
class OnnxBuild:
    """A complete build: its folder (``genai_config.json``, ``model.onnx``...), its precision,
    the names of its LoRA inputs (empty: no LoRA slots), and whether this call made it."""

    path: Path
    precision: str
    lora_inputs: frozenset[str]
    built: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class AdapterBuild:
    """An adapter's file in ONNX Runtime's format, and whether this call exported it."""

    path: Path
    built: bool = False


def engine_version() -> str | None:
    """The installed onnxruntime-genai version, or None when it is not installed."""
    try:
        return importlib.metadata.version(ENGINE)
    except importlib.metadata.PackageNotFoundError:
        return None


def require_engine() -> str:
    """The engine's version; :class:`EngineUnavailable` naming the extra when it is missing."""
    version = engine_version()
    if version is None:
        raise EngineUnavailable(f"{ENGINE} is not installed; install it with {INSTALL_HINT}")
    return version


def build_model(
    source: Path,
    cache_dir: Path,
    precision: str = "fp32",
    lora: bool = False,
    log: Log = logger.info,
) -> OnnxBuild:
    """The build of checkpoint folder ``source`` (made now unless a complete one is cached);
    ``lora``: with LoRA slots for adapters (fp32 only)."""
    version = require_engine()
    if precision not in PRECISIONS:
        raise EngineUnavailable(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if lora and precision != "fp32":
        raise EngineUnavailable(f"LoRA adapters need an fp32 build, not {precision}")
    source = Path(source).resolve()
    if not (source / "config.json").is_file():
        raise EngineUnavailable(f"{source} is not a Hugging Face checkpoint (no config.json)")
    settings = {
        "format": BUILD_FORMAT,
        "engine": version,
        "precision": precision,
        "lora_targets": list(LORA_TARGETS) if lora else [],
        "source": _fingerprint(source),
    }
    suffix = "-lora" if lora else ""
    target = cache_dir / f"{source.name}-{precision}{suffix}-{_digest(settings)}"
    built = (manifest := _complete(target)) is None
    if built:
        if target.exists():
            log(f"{target} is incomplete or damaged: building it again")

        def write(directory: Path) -> None:
            _run_builder(source, directory, target.name, precision, lora, log)
            inputs = _expose_lora_weights(directory / "model.onnx") if lora else []
            _write_manifest(directory, {**settings, "lora_inputs": inputs})

        _publish(target, write)
        manifest = _complete(target)
        assert manifest is not None, f"a fresh build in {target} is incomplete"
    return OnnxBuild(target, precision, frozenset(manifest["lora_inputs"]), built)


def build_embeds_decoder(
    causal_lm: Any, tokenizer: Any, cache_dir: Path, log: Log = logger.info
) -> Path:
    """The fp32 build of ``causal_lm`` (a transformers model in memory; LoRA merged into it
    already) whose graph takes ``inputs_embeds`` and returns the last position's logits; made
    now unless a complete one is cached."""
    settings = {
        "format": BUILD_FORMAT,
        "engine": require_engine(),
        "kind": "embeds-decoder",
        "config": causal_lm.config.to_diff_dict(),
        "weights": _weights_digest(causal_lm),
    }
    target = Path(cache_dir) / f"embeds-decoder-{_digest(settings)}"
    if _complete(target) is None:

        def write(directory: Path) -> None:
            scratch = Path(tempfile.mkdtemp(prefix=".source-", dir=directory.parent))
            try:
                causal_lm.save_pretrained(str(scratch))
                tokenizer.save_pretrained(str(scratch))
                extra = ["exclude_embeds=true", "prune_lm_head=true"]
                _run_builder(scratch, directory, target.name, "fp32", False, log, extra)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            _write_manifest(directory, settings)

        _publish(target, write)
    return target


def build_adapter(
    adapter_dir: Path, base: OnnxBuild, cache_dir: Path, log: Log = logger.info
) -> AdapterBuild:
    """The ONNX Runtime adapter file of the PEFT LoRA adapter in ``adapter_dir`` for ``base``
    (exported now unless cached); :class:`EngineUnavailable` when it cannot be applied."""
    adapter_dir = Path(adapter_dir).resolve()
    settings = {
        "format": BUILD_FORMAT,
        "engine": require_engine(),
        "base": base.path.name,
        "source": _fingerprint(adapter_dir),
    }
    target = cache_dir / "adapters" / f"{adapter_dir.name}-{_digest(settings)}"
    built = _complete(target) is None
    if built:
        log(f"exporting adapter {adapter_dir} for the ONNX engine")

        def write(directory: Path) -> None:
            _export_adapter(adapter_dir, base, directory / ADAPTER_FILE)
            _write_manifest(directory, settings)

        _publish(target, write)
    return AdapterBuild(target / ADAPTER_FILE, built)


# ---- the base model -----------------------------------------------------------------------------


def _run_builder(
    source: Path,
    out: Path,
    name: str,
    precision: str,
    lora: bool,
    log: Log,
    extra: Sequence[str] = (),
) -> None:
    layers = json.loads((source / "config.json").read_text("utf-8")).get("num_hidden_layers", 0)
    log(f"building the {precision} ONNX model {name} of {source} (~10-30 s)")
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
    try:
        command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source)]
        command += ["-o", str(out), "-p", precision, "-e", "cpu", "-c", str(scratch / "cache")]
        options = [*extra]
        if lora:
            options.append(f"adapter_path={_lora_template(source, scratch)}")
        if options:
            command += ["--extra_options", *options]
        env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
        lines: list[str] = []
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                found = _LAYER_LINE.match(line)
                # a few lines, not one per layer: reading the weights is most of the time
                if found and layers and (int(found[1]) + 1) % max(1, layers // 3) == 0:
                    log(f"  read layer {int(found[1]) + 1}/{layers}")
        (out / "build.log").write_text("".join(lines), "utf-8")
        if process.returncode != 0:
            tail = "".join(lines[-8:]).strip()
            raise EngineUnavailable(
                f"the ONNX model builder failed on {source} (exit {process.returncode}):\n{tail}"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"built in {time.monotonic() - started:.1f} s")


def _lora_template(source: Path, scratch: Path) -> Path:
    """A PEFT adapter on every :data:`LORA_TARGETS` layer with B = 0 (PEFT's initialisation):
    built with it, the graph has a LoRA branch per layer that adds nothing until an adapter's
    weights are fed."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(source), local_files_only=True)
    config = LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0, target_modules=list(LORA_TARGETS))
    path = scratch / "lora-template"
    get_peft_model(model, config).save_pretrained(str(path))
    return path


def _expose_lora_weights(model_path: Path) -> list[str]:
    """Make every LoRA weight of the graph an input whose default is the baked (zero) one, with
    the rank as a free dimension so adapters of any rank fit; returns their names. Each layer's
    rank is its own dimension: an adapter on some layers leaves the others at the default's."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    names = []
    for init in model.graph.initializer:
        if ".lora_A." in init.name or ".lora_B." in init.name:
            rows, cols = init.dims
            rank = init.name.split(".lora_")[0] + ".rank"
            shape = [rows, rank] if ".lora_A." in init.name else [rank, cols]
            model.graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, shape)
            )
            names.append(init.name)
    if not names:
        raise EngineUnavailable(f"the builder made no LoRA branches in {model_path.parent}")
    # the builder recorded the template's rank (1) in these shapes: ONNX Runtime would plan
    # its buffers by them, so they go, and it infers the shapes from the weights fed
    fixed_rank = [v for v in model.graph.value_info if v.name in names or "/lora_A/" in v.name]
    for value in fixed_rank:
        model.graph.value_info.remove(value)
    onnx.save(model, str(model_path))  # the weights stay in model.onnx.data, untouched
    return sorted(names)


# ---- adapters -----------------------------------------------------------------------------------


def _export_adapter(adapter_dir: Path, base: OnnxBuild, out: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text("utf-8"))
    scale = _lora_scale(adapter_dir, config)
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise EngineUnavailable(f"adapter {adapter_dir}: no adapter_model.safetensors")
    if not base.lora_inputs:
        raise EngineUnavailable(f"{base.path} was built without LoRA slots")
    params = {}
    for key, tensor in load_file(str(weights)).items():
        found = _PEFT_KEY.fullmatch(key)
        name = found and _onnx_name(*found.groups())
        if not name or name not in base.lora_inputs:
            raise EngineUnavailable(
                f"adapter {adapter_dir}: the ONNX engine has no LoRA slot for {key} (it takes "
                f"LoRA on {', '.join(LORA_TARGETS)} of the decoder layers); serve this adapter "
                "with TUNEGRAPH_ENGINE=transformers"
            )
        weight = tensor.float() * (scale if found[4] == "B" else 1.0)
        params[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(weight.T.numpy()))
    a_side = {n for n in params if ".lora_A." in n}
    b_side = {n.replace(".lora_B.", ".lora_A.") for n in params if ".lora_B." in n}
    if a_side != b_side:
        unpaired = sorted(a_side ^ b_side)[:3]
        raise EngineUnavailable(f"adapter {adapter_dir}: LoRA A and B do not pair up: {unpaired}")
    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters(params)
    adapter.export_adapter(str(out))


def _lora_scale(adapter_dir: Path, config: dict) -> float:
    unsupported = [
        key
        for key in ("use_dora", "modules_to_save", "rank_pattern", "alpha_pattern")
        if config.get(key)
    ]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise EngineUnavailable(
            f"adapter {adapter_dir}: the ONNX engine applies plain LoRA only, not "
            f"{', '.join(unsupported) or config.get('peft_type')}; serve it with "
            "TUNEGRAPH_ENGINE=transformers"
        )
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / (r**0.5 if config.get("use_rslora") else r)


def _onnx_name(layer: str, block: str, module: str, matrix: str) -> str:
    """The builder's name for a PEFT LoRA weight (``self_attn`` is ``attn`` there)."""
    block = "attn" if block == "self_attn" else block
    return f"model.layers.{layer}.{block}.{module}.lora_{matrix}.MatMul.weight"


# ---- the cache ----------------------------------------------------------------------------------


def _fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    """Names, sizes and modification times of a folder's files: cheap, and any rewrite shows."""
    return [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
        if p.is_file()
    ]


def _weights_digest(model: Any) -> str:
    """A hash of a torch model's parameters and buffers (names, shapes, dtypes and bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _write_manifest(directory: Path, settings: dict) -> None:
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    manifest = {**settings, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2), "utf-8")


def _complete(directory: Path) -> dict | None:
    """The manifest of a complete build in ``directory``: every file it lists is there with
    its size; None otherwise."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text("utf-8"))
        files = manifest["files"].items()
        sizes_match = all((directory / name).stat().st_size == size for name, size in files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no manifest, an unreadable one, or a listed file gone
    return manifest if sizes_match else None


def _publish(target: Path, write: Callable[[Path], None]) -> None:
    """``write`` into a temp folder beside ``target``, then rename it into place; a complete
    build that another process published meanwhile is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        if _complete(target) is None:
            shutil.rmtree(target, ignore_errors=True)
            try:
                os.replace(tmp, target)
            except OSError:
                if _complete(target) is None:  # not a finished build from another process
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
