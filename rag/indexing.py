"""Ingest pipelines: parse files, embed their chunks, and write them to a vector store.

One call is one store transaction, so an interrupted ingest leaves the previous index as it was.
Re-ingest is idempotent (block ids are stable and writes are upserts) and incremental: a file
whose content hash matches the one recorded in the store's state is skipped.

:func:`blocks_retriever` indexes given blocks in a throwaway index (what training data is built
over); :func:`stored_blocks` reads an index's manual blocks back.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.claims import Claim
from ingest.manuals import IMAGE_SUFFIXES, ManualError, collect_files, parse_manual
from ingest.records import BLOCK_KINDS, ManualBlock
from rag.embeddings import Embedder
from rag.stores.base import Document, VectorStore

if TYPE_CHECKING:
    from rag.claims_db import ClaimsDatabase
    from rag.retrieval import Retriever

Progress = Callable[[int], None]
NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_namespace(name: str) -> str:
    """An index namespace is 1-64 letters, digits, '_' or '-' (it names folders and tables).

    >>> check_namespace("manual_scans")
    'manual_scans'
    """
    if not NAMESPACE.fullmatch(name):
        raise ValueError(f"namespace {name!r}: use 1-64 letters, digits, '_' or '-'")
    return name


@dataclass
class IndexReport:
    ingested: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unchanged since the last ingest
    rejected: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    blocks: list[ManualBlock] = field(default_factory=list)  # what this run ingested

    def summary(self) -> dict[str, Any]:
        return {
            "ingested": len(self.ingested),
            "skipped_unchanged": len(self.skipped),
            "rejected": self.rejected,
            "chunks": self.chunks,
            "kinds": self.kinds,
            "files": self.ingested,
        }


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Bump when parsing or chunking changes: files ingested by another version are re-ingested.
INDEX_FORMAT = 2


def block_document(block: ManualBlock) -> Document:
    # The block text alone: prefixing the section path made every row of a spec table look alike
    # to the embedding model (hybrid recall@5 on the demo test questions fell from 0.96 to 0.92).
    return Document(block.id, block.text, {"kind": block.kind, "source": block.source})


def blocks_retriever(embedder: Embedder, blocks: Sequence[ManualBlock]) -> Retriever:
    """The serving retriever (hybrid search) over exactly ``blocks``: a throwaway LanceDB index
    in a temporary folder, removed once its store (held by the retriever) is garbage-collected."""
    import weakref

    from rag.retrieval import Retriever
    from rag.stores.lancedb import LanceDBStore

    folder = tempfile.TemporaryDirectory(prefix="tunegraph-blocks-")
    store = LanceDBStore(Path(folder.name), "blocks", embedder.dim)
    documents = [block_document(b) for b in blocks]
    with store.transaction():
        store.upsert(documents, embedder.embed([d.text for d in documents]))
    weakref.finalize(store, folder.cleanup)  # the folder lives as long as the store
    return Retriever(embedder, store)


def passage_search(
    embedder: Embedder, blocks: Sequence[ManualBlock]
) -> Callable[[str, int], list[tuple[str, str]]]:
    """Hybrid search, as serving does it, over exactly ``blocks`` (:func:`blocks_retriever`):
    a question and k in, the (id, text) of the k best blocks out. The passages RAFT training
    examples put before their questions."""
    found = blocks_retriever(embedder, blocks)

    def search(question: str, k: int) -> list[tuple[str, str]]:
        return [(hit.id, hit.text) for hit in found.search(question, k)]

    return search


def stored_blocks(store: VectorStore) -> list[ManualBlock]:
    """The manual blocks of an index (their pages and section paths are not in the index)."""
    return [
        ManualBlock(d.id, str(d.metadata.get("source", "")), 0, (), d.metadata["kind"], d.text)
        for d in store.documents()
        if d.metadata.get("kind") in BLOCK_KINDS
    ]


def index_manuals(
    paths: Sequence[Path],
    store: VectorStore,
    embedder: Embedder,
    *,
    force: bool = False,
    on_file: Callable[[Path], None] | None = None,
    on_chunks: Progress | None = None,
) -> IndexReport:
    """Parse, embed and store manuals; directories are searched for supported files."""
    files = collect_files(paths)
    names: dict[str, Path] = {}
    for file in files:
        if file.name in names and names[file.name] != file:
            raise ManualError(
                f"two manuals are both called {file.name!r} ({names[file.name]} and {file}); "
                "the file name is the source id, so rename one."
            )
        names[file.name] = file
    report = IndexReport()
    with store.transaction():
        state = store.state()
        force = force or state.get("format") != INDEX_FORMAT
        hashes: dict[str, str] = dict(state.get("files", {}))
        origins: dict[str, str] = dict(state.get("paths", {}))
        for file in files:
            if on_file:
                on_file(file)
            origin = str(file.resolve())
            if origins.get(file.name, origin) != origin:
                report.rejected.append(
                    {
                        "file": str(file),
                        "reason": f"a different manual with the name {file.name!r} is already in "
                        f"this index (from {origins[file.name]}); rename the file or ingest it "
                        "with another --namespace",
                    }
                )
                continue
            try:
                digest = file_digest(file)
                if not force and hashes.get(file.name) == digest:
                    report.skipped.append(file.name)
                    continue
                blocks = parse_manual(file)
            except (ManualError, OSError) as exc:
                report.rejected.append({"file": str(file), "reason": str(exc)})
                continue
            blocks = _with_scan_page(blocks, file)
            documents = [block_document(b) for b in blocks]
            vectors = embedder.embed([d.text for d in documents], progress=on_chunks)
            store.delete(filter={"source": file.name})  # blocks the new version no longer has
            store.upsert(documents, vectors)
            hashes[file.name], origins[file.name] = digest, origin
            report.ingested.append(file.name)
            report.chunks += len(blocks)
            report.blocks += blocks
            for block in blocks:
                report.kinds[block.kind] = report.kinds.get(block.kind, 0) + 1
        store.set_state({**state, "files": hashes, "paths": origins, "format": INDEX_FORMAT})
    return report


def _with_scan_page(blocks: list[ManualBlock], file: Path) -> list[ManualBlock]:
    """A scanned page named like ``page_012.png`` is page 12 of its manual."""
    match = re.search(r"(\d+)$", file.stem)
    if file.suffix.lower() not in IMAGE_SUFFIXES or not match:
        return blocks
    page = int(match.group(1))
    return [ManualBlock(b.id, b.source, page, b.section, b.kind, b.text) for b in blocks]


def claim_document(claim: Claim) -> Document:
    text = (
        f"{claim.description} Part: {claim.part}. Damage: {claim.damage_type}, {claim.severity}. "
        f"Amount: {claim.amount:.2f} USD."
    )
    metadata = {
        "kind": "CLAIM",
        "source": claim.policy_id,
        "part": claim.part,
        "vin": claim.vin,
        "date": int(claim.incident_date.strftime("%Y%m%d")),
    }
    return Document(claim.claim_id, text, metadata)


def index_claims(
    claims: Sequence[Claim],
    store: VectorStore,
    embedder: Embedder,
    on_chunks: Progress | None = None,
) -> int:
    """Embed claim descriptions for similar-claim search (upsert by claim id)."""
    documents = [claim_document(c) for c in claims]
    with store.transaction():
        store.upsert(documents, embedder.embed([d.text for d in documents], progress=on_chunks))
    return len(documents)


def load_claims(
    claims: Sequence[Claim],
    database: ClaimsDatabase,
    store: Callable[[Embedder], VectorStore],
    embedder: Callable[[], Embedder],
    on_chunks: Progress | None = None,
) -> int:
    """Claims into the claims database, then into the similar-claims index. The database comes
    first: if it cannot be opened, nothing is written anywhere (and no embedding model is
    loaded: ``embedder()``, then ``store(embedder)``, are built only then)."""
    database.upsert(claims)
    model = embedder()
    return index_claims(claims, store(model), model, on_chunks)
