from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import Settings, SettingsError


def test_defaults_put_everything_under_one_home():
    settings = Settings.from_env({})
    assert settings.home == Path(".tunegraph")
    assert settings.models_dir == Path(".tunegraph/models")
    assert settings.demo_dir == Path(".tunegraph/demo")
    assert settings.allow_network is False
    assert settings.effective_database_url.endswith("/.tunegraph/tunegraph.db")


def test_every_field_is_overridable_from_env():
    env = {
        "TUNEGRAPH_HOME": "/data/tg",
        "TUNEGRAPH_ALLOW_NETWORK": "yes",
        "TUNEGRAPH_TEXT_MODEL": "meta-llama/Llama-3.1-8B-Instruct",
        "TUNEGRAPH_EMBEDDING_MODEL": "/models/e5",
        "TUNEGRAPH_DEVICE": "cuda",
        "TUNEGRAPH_DEMO_SEED": "9",
        "TUNEGRAPH_DATABASE_URL": "postgresql://db/tg",
        "TUNEGRAPH_VECTOR_STORE": "pinecone",
        "TUNEGRAPH_PINECONE_API_KEY": "pc-secret",
        "TUNEGRAPH_PINECONE_INDEX": "fleet",
        "TUNEGRAPH_PINECONE_HOST": "http://localhost:5080",
        "TUNEGRAPH_API_KEYS": "k1, k2",
        "TUNEGRAPH_HOST": "0.0.0.0",
        "TUNEGRAPH_PORT": "9000",
        "TUNEGRAPH_LOG_LEVEL": "DEBUG",
        "TUNEGRAPH_TEXT_ADAPTER": "fleet-lora",
        "TUNEGRAPH_LLM_BASE_URL": "http://gpu-host:8000/v1",
        "TUNEGRAPH_LLM_MODEL": "meta-llama/Llama-3.1-8B-Instruct",
        "TUNEGRAPH_LLM_API_KEY": "vllm-secret",
        "TUNEGRAPH_JUDGE_API_KEY": "judge-secret",
        "TUNEGRAPH_ENGINE": "transformers",
        "TUNEGRAPH_MAX_REQUEST_BYTES": "1000000",
        "TUNEGRAPH_MAX_IMAGE_BYTES": "200000",
        "TUNEGRAPH_MAX_IMAGES": "4",
        "TUNEGRAPH_MAX_IMAGE_PIXELS": "1000000",
        "TUNEGRAPH_MAX_PROMPT_CHARS": "4000",
        "TUNEGRAPH_MAX_TOKENS_LIMIT": "256",
        "TUNEGRAPH_GENERATION_TIMEOUT_S": "30",
        "TUNEGRAPH_RATE_LIMIT_PER_MINUTE": "0",
        "TUNEGRAPH_RATE_LIMIT_BURST": "5",
        "TUNEGRAPH_JOB_WORKERS": "2",
        "TUNEGRAPH_ADMIN_KEYS": "k-admin",
        "TUNEGRAPH_INPUT_ROOTS": "/srv/manuals,/srv/claims",
        "TUNEGRAPH_MAX_WAITING_REQUESTS": "4",
        "TUNEGRAPH_MAX_BATCH_SIZE": "2",
        "TUNEGRAPH_MIN_SUPPORT": "0.5",
        "TUNEGRAPH_AUTH_FAILURES_PER_MINUTE": "5",
        "TUNEGRAPH_METRICS_REQUIRE_KEY": "yes",
        "TUNEGRAPH_RATE_LIMIT_STORAGE": "redis://:secret@cache:6379/0",
        "TUNEGRAPH_JOB_QUEUE": "amqp://guest:guest@broker//",
        "TUNEGRAPH_JOB_QUEUE_NAME": "fleet-jobs",
        "TUNEGRAPH_JOB_STALE_AFTER_S": "30",
        "TUNEGRAPH_CPU_PER_HOUR": "0.05",
        "TUNEGRAPH_GPU_PER_HOUR": "",
    }
    settings = Settings.from_env(env)
    assert settings.cpu_per_hour == 0.05 and settings.gpu_per_hour is None  # empty: the default
    assert settings.home == Path("/data/tg") and settings.models_dir == Path("/data/tg/models")
    assert settings.allow_network is True and settings.device == "cuda"
    assert settings.demo_seed == 9 and settings.port == 9000
    assert settings.api_keys == ("k1", "k2")
    assert settings.all_keys == ("k1", "k2", "k-admin")
    assert settings.input_roots == ("/srv/manuals", "/srv/claims")
    assert settings.max_batch_size == 2 and settings.min_support == 0.5
    assert settings.effective_database_url == "postgresql://db/tg"
    rows = {r["name"]: r for r in settings.describe(env)}
    assert set(rows) == {k.removeprefix("TUNEGRAPH_").lower() for k in env}
    assert all(r["source"] == "env" for r in rows.values())
    assert rows["api_keys"]["value"] == "<2 set>"  # secrets never printed
    assert rows["pinecone_api_key"]["value"] == "<set>"
    assert rows["llm_api_key"]["value"] == "<set>"
    assert settings.llm_base_url == "http://gpu-host:8000/v1"
    assert settings.engine == "transformers"
    assert settings.vector_store == "pinecone" and settings.pinecone_index == "fleet"


def test_all_invalid_values_are_reported_at_once():
    env = {"TUNEGRAPH_PORT": "http", "TUNEGRAPH_DEVICE": "tpu", "TUNEGRAPH_ALLOW_NETWORK": "maybe"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    for name in env:
        assert name in message
    assert "use one of auto, cpu, cuda" in message


def test_the_engine_is_one_of_three():
    assert Settings.from_env({}).engine == "auto"
    with pytest.raises(SettingsError, match=r"TUNEGRAPH_ENGINE='vllm': use one of auto, onnx, "):
        Settings.from_env({"TUNEGRAPH_ENGINE": "vllm"})


def test_the_llm_server_url_must_be_http():
    with pytest.raises(SettingsError, match=r"TUNEGRAPH_LLM_BASE_URL='gpu-host:8000'.*http://"):
        Settings.from_env({"TUNEGRAPH_LLM_BASE_URL": "gpu-host:8000"})


def test_hourly_prices_are_numbers_of_zero_or_more():
    with pytest.raises(SettingsError, match=r"TUNEGRAPH_GPU_PER_HOUR=-2.0: use 0 or more"):
        Settings.from_env({"TUNEGRAPH_GPU_PER_HOUR": "-2"})
    with pytest.raises(SettingsError, match=r"TUNEGRAPH_CPU_PER_HOUR='cheap': use a number"):
        Settings.from_env({"TUNEGRAPH_CPU_PER_HOUR": "cheap"})


def test_pinecone_needs_its_key():
    with pytest.raises(SettingsError, match="TUNEGRAPH_PINECONE_API_KEY"):
        Settings.from_env({"TUNEGRAPH_VECTOR_STORE": "pinecone"})
    with pytest.raises(SettingsError, match="use one of lancedb, pinecone"):
        Settings.from_env({"TUNEGRAPH_VECTOR_STORE": "faiss"})


def test_api_limits_must_be_positive_and_round_trip_through_env():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"TUNEGRAPH_MAX_IMAGES": "0", "TUNEGRAPH_RATE_LIMIT_PER_MINUTE": "-1"})
    assert "TUNEGRAPH_MAX_IMAGES=0: use a number above 0" in str(caught.value)
    assert "TUNEGRAPH_RATE_LIMIT_PER_MINUTE=-1" in str(caught.value)
    settings = Settings(
        home=Path("/data/tg"), api_keys=("a", "b"), allow_network=True, max_images=3
    )
    assert Settings.from_env(settings.to_env()) == settings


def test_the_request_limit_follows_the_image_limits_by_default():
    settings = Settings.from_env({})
    assert settings.max_request_bytes == 8 * 10 * 2**20 + 16 * 2**20  # 8 images + headroom
    smaller = Settings.from_env({"TUNEGRAPH_MAX_IMAGES": "2", "TUNEGRAPH_MAX_IMAGE_BYTES": "1000"})
    assert smaller.max_request_bytes == 2_000 + 16 * 2**20
    explicit = Settings.from_env({"TUNEGRAPH_MAX_REQUEST_BYTES": "5000"})
    assert explicit.max_request_bytes == 5_000
    # replace() derives it again; an explicit value stays
    assert Settings().replace(max_images=2).max_request_bytes == 2 * 10 * 2**20 + 16 * 2**20
    assert explicit.replace(max_images=2).max_request_bytes == 5_000
    # the derived value travels to child processes as a plain number
    assert Settings.from_env(settings.to_env()).max_request_bytes == settings.max_request_bytes
    with pytest.raises(SettingsError, match="TUNEGRAPH_MAX_REQUEST_BYTES=-1"):
        Settings.from_env({"TUNEGRAPH_MAX_REQUEST_BYTES": "-1"})


def test_the_pixel_limit_cannot_exceed_the_decoders():
    from ingest.images import MAX_PIXELS

    assert Settings().max_image_pixels <= MAX_PIXELS
    with pytest.raises(SettingsError, match=f"TUNEGRAPH_MAX_IMAGE_PIXELS=.*at most {MAX_PIXELS}"):
        Settings.from_env({"TUNEGRAPH_MAX_IMAGE_PIXELS": str(MAX_PIXELS + 1)})
