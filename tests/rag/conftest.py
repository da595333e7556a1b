"""Fixtures for the Pinecone vector-store tests: a local fake of the Pinecone REST API."""

from __future__ import annotations

import pytest

from tests.rag.fake_pinecone import FakePinecone, reset_sdk_throttle_state


@pytest.fixture
def fake_pinecone(monkeypatch):
    """A started :class:`FakePinecone`; ``.host`` is its control-plane URL.

    Also yields the controls: ``fail_next(endpoint, times, status=...)``, ``calls`` (a
    ``Counter`` per endpoint, SDK retries included), ``requests``, ``vectors(index, ns)``
    and ``client()`` for a real ``pinecone.Pinecone`` pointed at it.
    """
    for name in ("PINECONE_CONTROLLER_HOST", "PINECONE_ADDITIONAL_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    reset_sdk_throttle_state()
    with FakePinecone() as fake:
        yield fake
    reset_sdk_throttle_state()
