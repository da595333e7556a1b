"""precision: auto picks bf16 only where the hardware computes it natively."""

from __future__ import annotations

import pytest
import torch

from finetune.config import ConfigError, load_config
from finetune.recipes.text_lora import TextRecipeConfig
from finetune.trainer import autocast, effective_precision, native_bf16, precision_note

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["native", "emulated"])
def cpu_bf16(request, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: request.param)
    return request.param


def test_auto_is_bf16_only_where_it_is_native(cpu_bf16):
    assert native_bf16(CPU) is cpu_bf16
    assert effective_precision("auto", CPU) == ("bf16" if cpu_bf16 else "fp32")
    assert effective_precision("fp32", CPU) == "fp32"
    assert effective_precision("bf16", CPU) == "bf16"  # asked for explicitly: kept
    x = torch.ones(2, 2)
    with autocast("auto", CPU):
        dtype = torch.nn.functional.linear(x, x).dtype
    assert dtype == (torch.bfloat16 if cpu_bf16 else torch.float32)


def test_the_cli_note_says_what_runs_and_warns_of_emulated_bf16(cpu_bf16):
    auto = precision_note("auto", CPU)
    assert auto.startswith("precision bf16" if cpu_bf16 else "precision fp32")
    assert precision_note("fp32", CPU) == ""
    slow = precision_note("bf16", CPU)
    assert (slow == "") is cpu_bf16
    if not cpu_bf16:
        assert "slower" in slow and "train.precision=auto" in slow


def test_the_quick_profiles_choose_automatically():
    config = load_config(TextRecipeConfig, "configs/text/smollm2_quick.yaml", [])
    assert config.train.precision == "auto"
    with pytest.raises(ConfigError, match="precision"):
        load_config(TextRecipeConfig, None, ["train.precision=fp16"])
