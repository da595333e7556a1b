from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ingest.claims import read_claims
from ingest.records import ManualBlock
from rag.indexing import (
    blocks_retriever,
    index_claims,
    index_manuals,
    passage_search,
    stored_blocks,
)
from rag.retrieval import Retriever
from rag.stores.lancedb import LanceDBStore
from tests.rag.fakes import DIM, HashEmbedder

ROOT = Path(__file__).resolve().parents[2]
MANUAL = """1 Brakes
1.1 Specifications
Brake pad minimum thickness: {pad} mm
Wheel bolt torque: 120 Nm
1.2 Procedures
Front brake pads - replacement
1. Remove the front wheel.
2. Fit new pads.
"""


def _write(folder: Path, name: str, pad: str = "2.5") -> Path:
    path = folder / name
    path.write_text(MANUAL.format(pad=pad), "utf-8")
    return path


def test_reingest_is_incremental_idempotent_and_replaces_changed_files(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    _write(docs, "a.txt")
    _write(docs, "b.md")
    store, embedder = LanceDBStore(tmp_path / "index", "manuals", DIM), HashEmbedder()

    first = index_manuals([docs], store, embedder)
    assert sorted(first.ingested) == ["a.txt", "b.md"] and first.kinds == {
        "SPEC": 4,
        "PROCEDURE": 2,
    }
    assert store.count() == 6

    again = index_manuals([docs], store, embedder)
    assert again.ingested == [] and sorted(again.skipped) == ["a.txt", "b.md"]
    assert store.count() == 6

    _write(docs, "a.txt", pad="3.0")
    changed = index_manuals([docs], store, embedder)
    assert changed.ingested == ["a.txt"] and changed.skipped == ["b.md"]
    assert store.count() == 6
    texts = {h.text for h in store.keyword_search("brake pad thickness", 10, {"source": "a.txt"})}
    assert "Brake pad minimum thickness: 3.0 mm" in texts
    assert "Brake pad minimum thickness: 2.5 mm" not in texts

    forced = index_manuals([docs], store, embedder, force=True)
    assert sorted(forced.ingested) == ["a.txt", "b.md"] and store.count() == 6


def test_a_bad_file_is_reported_and_the_others_are_ingested(tmp_path):
    _write(tmp_path, "good.txt")
    (tmp_path / "bad.txt").write_bytes("Größe".encode("latin-1"))
    store = LanceDBStore(tmp_path / "index", "manuals", DIM)
    report = index_manuals([tmp_path / "good.txt", tmp_path / "bad.txt"], store, HashEmbedder())
    assert report.ingested == ["good.txt"]
    assert report.rejected[0]["file"].endswith("bad.txt")
    assert "not UTF-8" in report.rejected[0]["reason"]
    assert store.count() == 3


KILLED_INGEST = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from rag.indexing import index_manuals
from rag.stores.lancedb import LanceDBStore
from tests.rag.fakes import DIM, HashEmbedder

class SlowEmbedder(HashEmbedder):
    def embed(self, texts, progress=None):
        if self.calls == 1:  # the first file is already written: stop inside the second
            print("WRITTEN", flush=True)
            time.sleep(60)
        return super().embed(texts, progress)

store = LanceDBStore(Path({index!r}), "manuals", DIM)
index_manuals([Path(p) for p in {files!r}], store, SlowEmbedder(), force=True)
"""


def test_killing_ingest_midway_leaves_the_previous_index_usable(tmp_path):
    files = [_write(tmp_path, f"m{i}.txt", pad=f"{i}.5") for i in range(3)]
    index = tmp_path / "index"
    store = LanceDBStore(index, "manuals", DIM)
    index_manuals(files[:1], store, HashEmbedder())
    before = (store.count(), store.state())

    script = KILLED_INGEST.format(root=str(ROOT), index=str(index), files=[str(f) for f in files])
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "WRITTEN"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    reopened = LanceDBStore(index, "manuals", DIM)
    assert (reopened.count(), reopened.state()) == before
    assert reopened.keyword_search("brake pad", 5)  # searchable as before
    report = index_manuals(files, reopened, HashEmbedder())  # and the next ingest works
    assert sorted(report.ingested) == ["m1.txt", "m2.txt"] and reopened.count() == 9


def test_given_blocks_get_a_throwaway_index_that_goes_with_its_retriever():
    import gc

    blocks = [
        ManualBlock("b1", "van.md", 3, ("Brakes",), "SPEC", "Wheel bolt torque: 120 Nm"),
        ManualBlock("b2", "van.md", 4, ("Brakes",), "PROCEDURE", "1. Remove the front wheel."),
    ]
    retriever = blocks_retriever(HashEmbedder(), blocks)
    folder = Path(retriever.store.path)
    assert folder.is_dir() and retriever.store.count() == 2
    assert [h.id for h in retriever.search("Wheel bolt torque", 1, mode="bm25")] == ["b1"]
    del retriever  # and with it its store
    gc.collect()
    assert not folder.exists()
    search = passage_search(HashEmbedder(), blocks)
    assert search("Wheel bolt torque: 120 Nm", 2)[0] == ("b1", "Wheel bolt torque: 120 Nm")
    # read back from an index: no pages or sections there
    stored = stored_blocks(blocks_retriever(HashEmbedder(), blocks).store)
    assert sorted(stored, key=lambda b: b.id) == [
        ManualBlock(b.id, b.source, 0, (), b.kind, b.text) for b in blocks
    ]


def test_claims_are_searchable_by_vin_and_date(demo_corpus, tmp_path):
    claims = read_claims(demo_corpus.root / "claims" / "claims.csv").claims[:200]
    store = LanceDBStore(tmp_path / "index", "claims", DIM)
    assert index_claims(claims, store, HashEmbedder()) == 200
    vin = claims[0].vin
    same_vin = {c.claim_id for c in claims if c.vin == vin}
    hits = Retriever(HashEmbedder(), store).search("dent", 50, {"vin": vin}, mode="dense")
    assert {h.id for h in hits} == same_vin
    day = int(claims[0].incident_date.strftime("%Y%m%d"))
    assert store.count({"date": {"$lte": day}}) == sum(
        c.incident_date <= claims[0].incident_date for c in claims
    )


def test_a_different_file_with_the_same_name_is_refused_not_overwritten(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, second = (
        _write(tmp_path / "one", "manual.txt"),
        _write(tmp_path / "two", "manual.txt", "9.9"),
    )
    store = LanceDBStore(tmp_path / "index", "manuals", DIM)
    index_manuals([first], store, HashEmbedder())
    report = index_manuals([second], store, HashEmbedder())
    assert report.ingested == [] and "already in this index" in report.rejected[0]["reason"]
    texts = {h.text for h in store.keyword_search("brake pad thickness", 5, {"kind": "SPEC"})}
    assert texts == {"Brake pad minimum thickness: 2.5 mm"}
