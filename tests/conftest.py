"""Shared fixtures: one full-size demo corpus and one model store per test session."""

from __future__ import annotations

import pytest

from finetune.model_store import ModelStore, ModelStoreConfig
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The default-size corpus (2,000 claims, 2,400 photos, 10 scans), generated once."""
    return generate_demo_corpus(tmp_path_factory.mktemp("home") / "demo", DemoCorpusConfig(seed=7))


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> ModelStore:
    """An offline store whose cache lives in a session temp dir (so the first load converts)."""
    home = tmp_path_factory.mktemp("models-home")
    return ModelStore(ModelStoreConfig(home / "models", home / "adapters", device="cpu"))
