"""One contract for every VectorStore: LanceDB on disk and Pinecone (the real SDK on a local fake)."""

from __future__ import annotations

import numpy as np
import pytest

from rag.retrieval import Retriever
from rag.stores.base import Document
from rag.stores.lancedb import LanceDBStore
from rag.stores.pinecone import PineconeStore
from tests.rag.fakes import DIM, HashEmbedder, vector

DOCS = [
    Document("spec-1", "Brake pad minimum thickness: 2.5 mm", {"kind": "SPEC", "source": "a.pdf"}),
    Document("spec-2", "Coolant capacity: 5.6 L", {"kind": "SPEC", "source": "a.pdf"}),
    Document("wire-1", "Connector EM-C3 pin 2 signal brown", {"kind": "WIRING", "source": "b.pdf"}),
    Document(
        "claim-1",
        "Hail damage dent on the hood",
        {"kind": "CLAIM", "vin": "HMW7GXJ24SN59Y9ZK", "part": "hood", "date": 20240131},
    ),
    Document(
        "claim-2",
        "Keyed scratch on the front door",
        {"kind": "CLAIM", "vin": "HMWAAAAAA0SBBBBBB", "part": "front_door", "date": 20250601},
    ),
]


@pytest.fixture(params=["lancedb", "pinecone"])
def store(request, tmp_path):
    if request.param == "lancedb":
        return LanceDBStore(tmp_path / "lancedb", "manuals", DIM)
    fake = request.getfixturevalue("fake_pinecone")
    return PineconeStore(
        fake.client(),
        "tunegraph",
        "manuals",
        DIM,
        tmp_path / "pinecone-state.json",
        sleep=lambda s: None,
    )


def fill(store, docs=DOCS):
    store.upsert(docs, np.stack([vector(d.text) for d in docs]))


def test_upsert_is_idempotent_and_replaces_by_id(store):
    fill(store)
    fill(store)
    assert store.count() == len(DOCS)
    changed = Document("spec-2", "Coolant capacity: 6.1 L", {"kind": "SPEC", "source": "a.pdf"})
    fill(store, [changed])
    assert store.count() == len(DOCS)
    hit = store.dense_search(vector(changed.text), 1)[0]
    assert (hit.id, hit.text) == ("spec-2", "Coolant capacity: 6.1 L")


def test_dense_search_ranks_the_exact_vector_first(store):
    fill(store)
    hits = store.dense_search(vector(DOCS[2].text), 3)
    assert hits[0].id == "wire-1"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].metadata == {"kind": "WIRING", "source": "b.pdf"}


def test_keyword_search_finds_rare_terms(store):
    fill(store)
    assert store.keyword_search("coolant", 3)[0].id == "spec-2"
    assert store.keyword_search("hail hood", 3)[0].id == "claim-1"
    assert store.keyword_search("zeppelin", 3) == []


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({"kind": "SPEC"}, {"spec-1", "spec-2"}),
        ({"kind": {"$in": ["WIRING", "CLAIM"]}}, {"wire-1", "claim-1", "claim-2"}),
        ({"date": {"$gte": 20240101, "$lte": 20241231}}, {"claim-1"}),
        ({"vin": "HMWAAAAAA0SBBBBBB"}, {"claim-2"}),
        ({"kind": "CLAIM", "part": {"$ne": "hood"}}, {"claim-2"}),
        ({"source": "a.pdf", "kind": "WIRING"}, set()),
        ({"date": {"$lt": 20250101}}, {"claim-1"}),  # records without a date never match
        ({"part": {"$nin": ["hood"]}}, {"spec-1", "spec-2", "wire-1", "claim-2"}),
        ({"part": {"$ne": "front_door"}}, {"spec-1", "spec-2", "wire-1", "claim-1"}),
    ],
)
def test_filters_apply_to_dense_keyword_and_count(store, filter, expected):
    fill(store)
    assert {h.id for h in store.dense_search(vector("anything"), 10, filter)} == expected
    assert store.count(filter) == len(expected)
    keyword = {h.id for h in store.keyword_search("capacity pin hail scratch brake", 10, filter)}
    assert keyword <= expected


def test_keyword_search_applies_filters(store):
    fill(store)
    assert [h.id for h in store.keyword_search("capacity", 5, {"kind": "SPEC"})] == ["spec-2"]
    assert store.keyword_search("capacity", 5, {"kind": "WIRING"}) == []


def test_delete_by_id_and_by_filter(store):
    fill(store)
    store.delete(ids=["spec-1"])
    assert store.count() == len(DOCS) - 1
    store.delete(filter={"kind": "CLAIM"})
    assert {h.id for h in store.dense_search(vector("x"), 10)} == {"spec-2", "wire-1"}


def test_a_failed_transaction_changes_nothing(store):
    fill(store)
    with store.transaction():
        store.set_state({"files": {"a.pdf": "hash-1"}})
    with pytest.raises(KeyboardInterrupt), store.transaction():
        store.delete(filter={"kind": "SPEC"})
        fill(store, [Document("new", "new text", {"kind": "SPEC"})])
        store.set_state({"files": {"a.pdf": "hash-2"}})
        raise KeyboardInterrupt
    assert store.count() == len(DOCS)
    assert store.state() == {"files": {"a.pdf": "hash-1"}}
    fill(store, [Document("after", "after text", {"kind": "SPEC"})])  # and the store still works
    assert store.count() == len(DOCS) + 1


def test_hybrid_retrieval_runs_on_the_store(store):
    fill(store)
    hits = Retriever(HashEmbedder(), store).search("What is connector EM-C3 pin 2?", k=3)
    assert hits[0].id == "wire-1"
    assert len({h.id for h in hits}) == len(hits)


def test_documents_lists_what_is_committed_or_says_it_cannot(store):
    if isinstance(store, PineconeStore):
        with pytest.raises(NotImplementedError, match=r"give the manual's files instead"):
            store.documents()
        return
    assert store.documents() == []  # nothing committed yet
    fill(store)
    assert sorted(d.id for d in store.documents({"kind": "SPEC"})) == ["spec-1", "spec-2"]
    wire = next(d for d in store.documents() if d.id == "wire-1")
    assert wire == Document(wire.id, DOCS[2].text, {"kind": "WIRING", "source": "b.pdf"})


def test_a_fault_code_named_in_the_question_puts_its_entry_first(store):
    docs = [
        Document(
            "v1", "The Vireo 1.6T has a timing chain. Vireo engine notes.", {"kind": "EXPLANATION"}
        ),
        Document("v2", "Vireo 1.6T service: Vireo oil and Vireo filters.", {"kind": "EXPLANATION"}),
        Document("v3", "Vireo 1.6T lamps and Vireo bulbs.", {"kind": "EXPLANATION"}),
        Document("p1", "P0612 - Fuel injector control module", {"kind": "TROUBLESHOOTING"}),
    ]
    fill(store, docs)
    retriever = Retriever(HashEmbedder(), store)
    hits = retriever.search("The Vireo 1.6T has P0612 stored; what are the likely causes?", k=2)
    assert hits[0].id == "p1"
    # support: a fault code that no passage holds means no support at all
    assert retriever.support("What does P0999 mean?", [docs[3].text]) == 0.0
    assert retriever.support("What does P0612 mean?", [docs[3].text]) > 0.0
    assert retriever.support("anything", []) == 0.0


def test_pinecone_retries_on_top_of_the_sdk_and_gives_up_cleanly(fake_pinecone, tmp_path):
    sleeps = []
    store = PineconeStore(
        fake_pinecone.client(), "tg", "ns", DIM, tmp_path / "state.json", sleep=sleeps.append
    )
    fake_pinecone.fail_next("upsert", times=5, status=503)  # the SDK itself retries 3 times
    fill(store)
    assert store.count() == len(DOCS) and sleeps == [0.5]

    with store.transaction():
        store.set_state({"files": {"x": "1"}})
    fake_pinecone.fail_next("upsert", times=None, status=503)
    with pytest.raises(Exception, match=r"503|Service|unavailable"), store.transaction():
        fill(store, [Document("lost", "lost", {"kind": "SPEC"})])
        store.set_state({"files": {"x": "2"}})
    fake_pinecone.clear_failures()
    assert store.state() == {"files": {"x": "1"}}
    assert store.count() == len(DOCS)
