"""`tunegraph models build` makes the engine builds the server loads (the text model and the
served adapter, more adapters on request), reuses complete ones, builds damaged ones again, and
says what to do when the engine is missing or cannot take the model."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from api import composition
from api.cli.main import main
from api.settings import Settings
from finetune import onnx_build
from finetune.artifact import Manifest
from tests.agents.fakes import fake_engine_builds

SMOLLM2 = "smollm2-135m-instruct"  # the tiny model's tokenizer and chat template


def build(*args: str):
    return CliRunner().invoke(main, ["models", "build", *args])


def states(output: str) -> dict[str, str]:
    """Each item's line: ``text model NAME (fp32...)`` or ``adapter NAME`` -> built | cached."""
    lines = [
        line for line in output.splitlines() if " in the cache in " in line or ": built in " in line
    ]
    return {
        line.split(":")[0].split(" (")[0]: "built" if ": built in " in line else "cached"
        for line in lines
    }


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def engine():
    pytest.importorskip("onnxruntime_genai", reason="the engine extra is not installed")


@pytest.fixture(scope="module")
def tiny_dir(model_store, tmp_path_factory):
    """A 2-layer random-weight Llama with SmolLM2's tokenizer, as a local checkpoint."""
    from transformers import AutoTokenizer

    from tests.finetune.test_text_lora import save_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(str(model_store.checkpoint_dir(SMOLLM2)))
    return save_tiny_model(tokenizer, tmp_path_factory.mktemp("tiny"))


def save_adapter(tiny_dir, folder, base: str | None = None) -> None:
    """A LoRA adapter of the tiny model in ``folder``; ``base``: the base its manifest names."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    get_peft_model(model, config).save_pretrained(str(folder))
    if base is not None:
        Manifest("text-lora", base).write(folder)


@pytest.mark.real_model
def test_builds_what_the_server_loads_once(engine, tiny_dir, home, monkeypatch, caplog):
    monkeypatch.setenv("TUNEGRAPH_TEXT_MODEL", str(tiny_dir))
    for name in ("manual-lora", "extra"):  # manual-lora: the served adapter (the default)
        save_adapter(tiny_dir, home / "adapters" / name)
    save_adapter(tiny_dir, home / "adapters" / "other-base", base="another-model")
    base = f"text model {tiny_dir}"

    first = build()
    assert first.exit_code == 0, first.output
    assert states(first.output) == {base: "built", "adapter manual-lora": "built"}
    assert "LoRA slots" in first.output and "building the fp32 ONNX model" in first.output
    again = build("--adapter", "extra")
    assert again.exit_code == 0, again.output
    assert states(again.output) == {
        base: "cached",
        "adapter manual-lora": "cached",
        "adapter extra": "built",
    }
    every = build("--all-adapters")
    assert every.exit_code == 0, every.output
    assert set(states(every.output).values()) == {"cached"} and len(states(every.output)) == 3
    assert "skipped: adapter 'other-base' was trained on 'another-model'" in every.output

    # the server's first request builds nothing: it finds the same builds
    monkeypatch.setattr(onnx_build, "_run_builder", lambda *args: pytest.fail("built again"))
    monkeypatch.setattr(
        logging.getLogger("tunegraph.api.composition"), "handlers", [caplog.handler]
    )
    settings = Settings.from_env()
    backend = composition.local_backend(
        settings, composition.model_store(settings), *composition.served_text_model(settings)
    )
    assert str(backend.build.path) in first.output and sorted(backend.adapters()) == ["manual-lora"]
    assert "exporting adapter" not in caplog.text


def test_a_damaged_build_is_built_again(engine, home, monkeypatch):
    checkpoint = home / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    monkeypatch.setenv("TUNEGRAPH_TEXT_MODEL", str(checkpoint))
    runs = fake_engine_builds(monkeypatch)
    label = f"text model {checkpoint}"
    assert states(build().output) == {label: "built"}
    assert states(build().output) == {label: "cached"} and len(runs) == 1
    (folder,) = (home / "models" / "onnx").iterdir()
    (folder / "model.onnx.data").write_bytes(b"cut")  # a partial write
    result = build()
    assert states(result.output) == {label: "built"} and len(runs) == 2
    assert "is incomplete or damaged: building it again" in result.output
    assert (folder / "model.onnx.data").read_bytes() == b"weights" * 100


def test_a_missing_engine_names_the_extra_and_the_fallback(home, monkeypatch):
    monkeypatch.setattr(onnx_build, "engine_version", lambda: None)  # as if not installed
    result = build()
    assert result.exit_code == 1
    assert "onnxruntime-genai is not installed" in result.output
    assert "pip install -e '.[engine]'" in result.output
    assert "runs the text model on transformers" in result.output
    assert not (home / "models" / "onnx").exists()


def test_an_unknown_adapter_is_a_usage_error_naming_the_adapters(home):
    (home / "adapters" / "manual-lora").mkdir(parents=True)
    (home / "adapters" / "manual-lora" / "adapter_config.json").write_text("{}")
    result = build("--adapter", "nope")
    assert result.exit_code == 2
    assert "no adapter 'nope'" in result.output and "(adapters: manual-lora)" in result.output


def test_a_base_that_is_not_a_local_checkpoint(engine, home, monkeypatch):
    gguf = home / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("TUNEGRAPH_TEXT_MODEL", str(gguf))
    result = build()
    assert result.exit_code == 1
    assert "is not a local checkpoint folder" in result.output
    assert "the server runs it on transformers" in result.output


def test_a_model_the_engine_cannot_build_names_the_fallback(engine, home, monkeypatch):
    checkpoint = home / "odd"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"architectures": ["OddLM"]}))
    monkeypatch.setenv("TUNEGRAPH_TEXT_MODEL", str(checkpoint))

    def failing_builder(source, out, name, precision, lora, log):
        # what _run_builder raises when the builder exits non-zero (tried: ~25 s a run)
        raise onnx_build.EngineUnavailable(
            f"the ONNX model builder failed on {source} (exit 1):\nNotImplementedError: OddLM"
        )

    monkeypatch.setattr(onnx_build, "_run_builder", failing_builder)
    result = build()
    assert result.exit_code == 1, result.output
    assert "the ONNX model builder failed" in result.output and "OddLM" in result.output
    assert "runs the text model on transformers instead" in result.output
    assert [p.name for p in (home / "models" / "onnx").iterdir()] == []  # nothing half-built
