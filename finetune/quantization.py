"""QLoRA's quantised base: load a model's linear layers through bitsandbytes, 4-bit NF4 or 8-bit.

``train.quantization`` picks it: ``nf4`` (4-bit NormalFloat with double quantisation: the
QLoRA paper's setting), ``int8`` (LLM.int8) or ``none``. bitsandbytes runs these on CUDA and on
CPUs too (0.50.2 measured here: NF4 ``Linear4bit`` and int8 ``Linear8bitLt`` forward, backward
and optimizer steps under LoRA). Only the base is quantised; LoRA's weights and the
optimizer state stay in float32, so the adapter saved after training loads on the
full-precision base, and merging always happens on a full-precision copy
(``finetune/export.py``), never on the 4-bit weights.

bitsandbytes is the ``qlora`` extra (``pip install 'tunegraph[qlora]'``); without it, or on a
device it cannot quantise on, :func:`load_kwargs` raises :class:`QuantizationError` naming the
extra and the setting to change.
"""

from __future__ import annotations

import logging
import typing
from typing import Any

from finetune.trainer import Quantization, TrainingError, native_bf16

QUANTIZATIONS: tuple[str, ...] = typing.get_args(Quantization)
INSTALL_HINT = "pip install 'tunegraph[qlora]'"


class QuantizationError(TrainingError):
    """The base cannot be loaded quantised here; the message names the extra or setting."""


class _KnownNoise(logging.Filter):
    """Drops two bitsandbytes log lines that are no news to a tunegraph user: at import, that
    its optional hub kernel for CPUs is missing (fetching it needs the network; its own CPU
    kernel runs instead), and on every int8 matmul, that float32 inputs are cast to float16
    (LLM.int8 always computes so; ``prepare_model_for_kbit_training`` keeps activations float32
    on purpose) — one line per layer per step otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(("Failed to load CPU gemm_4bit_forward", "MatMul8bitLt:"))


# before bitsandbytes is imported (the first line comes at import)
for _name in ("bitsandbytes.backends.cpu.ops", "bitsandbytes.autograd._functions"):
    logging.getLogger(_name).addFilter(_KnownNoise())


def _import_bitsandbytes(quantization: str, setting: str) -> Any:
    try:
        import bitsandbytes
    except ImportError:
        raise QuantizationError(
            f"{setting}={quantization} loads the base through bitsandbytes, which is not "
            f"installed: {INSTALL_HINT}, or set {setting}=none (LoRA on the full-precision base)"
        ) from None
    return bitsandbytes


def compute_dtype(device: Any) -> Any:
    """The dtype a 4-bit layer de-quantises its weights to for each matmul: bfloat16 where
    ``device`` computes it natively (GPUs since Ampere, CPUs with AVX512-BF16/AMX), else float16
    on a CUDA GPU and float32 on a CPU (which emulates both half types slowly)."""
    import torch

    if native_bf16(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.float32


def _probe(bitsandbytes: Any, quantization: str, device: Any) -> None:
    """Quantise a small tensor on ``device`` the way loading will: fails here, with the
    library's reason, where bitsandbytes has no kernel for the device."""
    import torch

    functional = bitsandbytes.functional
    sample = torch.ones((64, 64), device=device, dtype=compute_dtype(device))
    if quantization == "nf4":
        functional.quantize_4bit(sample, quant_type="nf4", compress_statistics=True)
    else:
        functional.int8_vectorwise_quant(sample.half())


def load_kwargs(
    quantization: str, device: Any, *, setting: str = "train.quantization"
) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments that load a model's linear layers quantised on
    ``device`` (a ``torch.device`` or its name): ``{}`` for ``none``. Raises
    :class:`QuantizationError` (naming ``setting``) when bitsandbytes is missing or cannot
    quantise on this device."""
    import torch

    if quantization == "none":
        return {}
    if quantization not in QUANTIZATIONS:
        raise QuantizationError(
            f"{setting}={quantization!r}: use one of {', '.join(QUANTIZATIONS)}"
        )
    device = torch.device(device)
    bitsandbytes = _import_bitsandbytes(quantization, setting)
    try:
        _probe(bitsandbytes, quantization, device)
    except (RuntimeError, NotImplementedError, OSError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QuantizationError(
            f"{setting}={quantization}: bitsandbytes {bitsandbytes.__version__} cannot quantise "
            f"on this {device.type.upper()} ({reason}); run on a CUDA GPU, reinstall it with "
            f"{INSTALL_HINT}, or set {setting}=none"
        ) from None
    from transformers import BitsAndBytesConfig

    # bitsandbytes quantises as the weights arrive on their device: all of them on this one
    index = device.index if device.index is not None else 0
    kwargs: dict[str, Any] = {"device_map": {"": index if device.type == "cuda" else device.type}}
    if quantization == "int8":
        return {**kwargs, "quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    dtype = compute_dtype(device)
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,  # the quantisation constants quantised too
        bnb_4bit_compute_dtype=dtype,
    )
    # A 4-bit weight de-quantises to the dtype it was loaded in: loaded in the compute dtype,
    # no matmul casts it again (faster steps, measured on this CPU); the norms and embeddings
    # go back to float32 in prepare_for_training.
    return {**kwargs, "quantization_config": config, "dtype": dtype}


def quantization_of(model: Any) -> str:
    """``nf4``, ``int8`` or ``none``: how ``model``'s linear layers were loaded."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "is_loaded_in_4bit", False):
        return "nf4"
    return "int8" if getattr(base, "is_loaded_in_8bit", False) else "none"


def quantization_note(model: Any, quantization: str) -> str:
    """One line for the CLI: how the base loaded, and what it takes in memory."""
    layer = next(
        (m for m in model.modules() if hasattr(m, "compute_dtype") and m.compute_dtype), None
    )
    computes = f", matmuls in {str(layer.compute_dtype).removeprefix('torch.')}" if layer else ""
    return (
        f"QLoRA: the base's linear layers loaded {quantization} through bitsandbytes{computes}; "
        f"the model takes {model.get_memory_footprint() / 2**20:.0f} MiB"
    )


def require_quantization(model: Any, quantization: str, *, loader: str) -> None:
    """Check that ``model`` was loaded the way ``train.quantization`` says (a recipe's ``run``
    gets its model from the caller); ``loader``: the call that loads it right."""
    loaded = quantization_of(model)
    if loaded != quantization:
        raise TrainingError(
            f"train.quantization={quantization}, but the model was loaded with "
            f"quantization={loaded}; load it with {loader}, or set train.quantization={loaded}"
        )


def prepare_for_training(model: Any) -> Any:
    """PEFT's ``prepare_model_for_kbit_training``: every base weight frozen, norms and
    embeddings in float32, and gradient checkpointing (QLoRA's other memory saving: activations
    are recomputed in the backward pass). Non-reentrant checkpointing needs no gradient on the
    inputs, so inputs_embeds (the composed VLM, the frozen-layer cache) train the same way."""
    from peft import prepare_model_for_kbit_training

    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            # On a CPU with AVX512-BF16, bitsandbytes (0.50.2) repacks a 4-bit weight for a
            # faster kernel the first time the layer runs in eval mode without gradients, and
            # uses that kernel from then on — which has no backward: every step after the first
            # evaluation would lose the gradient through the frozen layers (tests/finetune/
            # test_qlora.py). Training keeps the layout it can differentiate through.
            module.support_avx512bf16_for_cpu = False
    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
