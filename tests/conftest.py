"""Shared fixtures: one full-size demo corpus and one model store per test session."""

from __future__ import annotations

import os

import pytest

from finetune.model_store import ModelStore, ModelStoreConfig
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus

# The development and CI machines run PostgreSQL here (trust auth, database `test`): when it
# answers, the PostgreSQL variants of the tests run against it; elsewhere they skip and say so.
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _local_postgres() -> str | None:
    try:
        import psycopg
    except ModuleNotFoundError:  # the postgres extra is not installed
        return None
    try:
        with psycopg.connect(LOCAL_POSTGRES.replace("+psycopg", ""), connect_timeout=2):
            return LOCAL_POSTGRES
    except psycopg.Error:
        return None


if not os.environ.get("TUNEGRAPH_TEST_POSTGRES_URL") and (_url := _local_postgres()):
    os.environ["TUNEGRAPH_TEST_POSTGRES_URL"] = _url


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The default-size corpus (2,000 claims, 2,400 photos, 10 scans), generated once."""
    return generate_demo_corpus(tmp_path_factory.mktemp("home") / "demo", DemoCorpusConfig(seed=7))


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> ModelStore:
    """An offline store whose cache lives in a session temp dir (so the first load converts)."""
    home = tmp_path_factory.mktemp("models-home")
    return ModelStore(ModelStoreConfig(home / "models", home / "adapters", device="cpu"))
