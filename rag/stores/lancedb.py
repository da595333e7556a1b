"""LanceDB: the embedded default vector store (a directory under ``TUNEGRAPH_HOME/indexes``).

Each namespace is one table with ``id, text, vector`` and the filter columns, a native full-text
(BM25) index on ``text``, and a state file ``<name>.state.json`` beside it that records the
committed table version and the bookkeeping of ingest (content hashes of files).

Atomicity: LanceDB commits every write as a new table version. Readers open the version named in
the state file, and a transaction rewrites that file (atomically, with ``os.replace``) only after
all its writes succeeded. A transaction that dies half-way leaves newer, uncommitted versions
behind; the next transaction restores the committed version before writing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rag.filters import METADATA_FIELDS, Filter, to_sql
from rag.stores.base import Document, Hit, VectorStore

_COLUMNS = ["id", "text", *METADATA_FIELDS]
# Below this many rows an exact scan is fast enough (~30 ms at 100k x 384 on 2 cores); above it
# the commit builds an IVF-HNSW index (~12 s for 100k) and searches refine with exact distances.
ANN_MIN_ROWS = 50_000
NPROBES, REFINE_FACTOR = 20, 4


class LanceDBStore(VectorStore):
    def __init__(self, path: Path, name: str, dim: int) -> None:
        import lancedb

        self.path, self.name, self.dim = Path(path), name, dim
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = lancedb.connect(str(self.path))
        self._state_file = self.path / f"{name}.state.json"
        self._writer = None  # the table being written inside a transaction
        self._pending: dict[str, Any] | None = None
        self._reader: tuple[int, Any] | None = None  # (version, table checked out at it)
        self._has_ann = False

    # ---- committed state -------------------------------------------------------------------

    def _committed(self) -> dict[str, Any]:
        try:
            return json.loads(self._state_file.read_text("utf-8"))
        except FileNotFoundError:
            return {"version": None, "dim": self.dim, "state": {}}

    def state(self) -> dict[str, Any]:
        source = self._pending if self._pending is not None else self._committed()
        return dict(source["state"])

    def set_state(self, state: dict[str, Any]) -> None:
        if self._pending is None:
            raise RuntimeError("set_state() must be called inside a transaction")
        self._pending["state"] = dict(state)

    # ---- writes ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._writer is not None:  # nested: the outer transaction commits
            yield
            return
        committed = self._committed()
        if committed.get("dim", self.dim) != self.dim:
            raise ValueError(
                f"index {self.path / self.name} holds {committed['dim']}-dim vectors, but the "
                f"embedding model makes {self.dim}-dim ones; re-ingest into a new TUNEGRAPH_HOME "
                "or delete the index directory."
            )
        self._writer = self._open_for_write(committed["version"])
        self._pending = {**committed, "state": dict(committed["state"])}
        try:
            yield
            self._commit()
        finally:
            self._writer, self._pending = None, None

    def _open_for_write(self, version: int | None):
        import pyarrow as pa

        if self.name in self._db.list_tables().tables:
            table = self._db.open_table(self.name)
            if version is None:  # created by a run that never committed
                self._db.drop_table(self.name)
            else:
                if table.version != version:
                    table.restore(version)  # roll back what an interrupted run wrote
                return table
        schema = pa.schema(
            [
                pa.field("id", pa.string()),
                pa.field("text", pa.string()),
                pa.field("vector", pa.list_(pa.float32(), self.dim)),
                *(
                    pa.field(name, pa.int64() if kind is int else pa.string())
                    for name, kind in METADATA_FIELDS.items()
                ),
            ]
        )
        return self._db.create_table(self.name, schema=schema)

    def _commit(self) -> None:
        from lancedb.index import FTS, IvfHnswSq

        table = self._writer
        rows = table.count_rows()
        indexed = {i.index_type for i in table.list_indices()}
        if indexed:
            table.optimize()  # folds new rows into the existing indexes
        if rows and "FTS" not in indexed:
            table.create_index("text", config=FTS(with_position=False))
        if rows >= ANN_MIN_ROWS and not indexed - {"FTS"}:
            partitions = max(1, round(rows**0.5 / 4))
            table.create_index(
                "vector", config=IvfHnswSq(distance_type="cosine", num_partitions=partitions)
            )
        self._pending["version"] = table.version
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{self.name}.state.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self._pending, handle, indent=2, sort_keys=True)
        os.replace(tmp, self._state_file)

    def upsert(self, documents: Sequence[Document], vectors: np.ndarray) -> None:
        if len(documents) != len(vectors):
            raise ValueError(f"{len(documents)} documents but {len(vectors)} vectors")
        if not documents:
            return
        with self.transaction():
            rows = [
                {
                    "id": doc.id,
                    "text": doc.text,
                    "vector": vector.astype(np.float32),
                    **{
                        f: _metadata_value(doc.metadata, f, kind)
                        for f, kind in METADATA_FIELDS.items()
                    },
                }
                for doc, vector in zip(documents, vectors, strict=True)
            ]
            (
                self._writer.merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(rows)
            )

    def delete(self, ids: Sequence[str] = (), filter: Filter | None = None) -> None:
        clauses = []
        if ids:
            clauses.append(_ids_clause(ids))
        if filter:
            clauses.append(to_sql(filter))
        if not clauses:
            return
        with self.transaction():
            self._writer.delete(" OR ".join(f"({c})" for c in clauses))

    # ---- reads -------------------------------------------------------------------------------

    def _read_table(self):
        version = self._committed()["version"]
        if version is None:
            return None
        if self._reader is None or self._reader[0] != version:
            table = self._db.open_table(self.name)
            table.checkout(version)
            self._reader = (version, table)
            self._has_ann = any(i.index_type != "FTS" for i in table.list_indices())
        return self._reader[1]

    def count(self, filter: Filter | None = None) -> int:
        table = self._read_table()
        return 0 if table is None else table.count_rows(to_sql(filter))

    def documents(self, filter: Filter | None = None) -> list[Document]:
        table = self._read_table()
        rows = 0 if table is None else table.count_rows()
        if not rows:
            return []
        query = table.search().select(_COLUMNS)
        if where := to_sql(filter):
            query = query.where(where)
        rows = query.limit(rows).to_list()
        return [Document(r["id"], r["text"], _hit(r, 0.0).metadata) for r in rows]

    def dense_search(self, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[Hit]:
        table = self._read_table()
        if table is None:
            return []
        query = table.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector")
        query = query.metric("cosine").limit(k).select([*_COLUMNS, "_distance"])
        if self._has_ann:
            query = query.nprobes(NPROBES).refine_factor(REFINE_FACTOR)
        if where := to_sql(filter):
            query = query.where(where, prefilter=True)
        return [_hit(row, 1.0 - row["_distance"]) for row in query.to_list()]

    def keyword_search(self, query: str, k: int, filter: Filter | None = None) -> list[Hit]:
        table = self._read_table()
        if table is None or not query.strip():
            return []
        search = table.search(query, query_type="fts", fts_columns="text")
        search = search.limit(k).select([*_COLUMNS, "_score"])
        if where := to_sql(filter):
            search = search.where(where, prefilter=True)
        return [_hit(row, row["_score"]) for row in search.to_list()]


def _metadata_value(metadata: dict, field: str, kind: type) -> Any:
    value = metadata.get(field)
    if value is None or value == "":
        return None  # NULL: no date is not "date 0" for a range filter
    return int(value) if kind is int else str(value)


def _ids_clause(ids: Sequence[str]) -> str:
    return "id IN (" + ", ".join("'" + i.replace("'", "''") + "'" for i in ids) + ")"


def _hit(row: dict, score: float) -> Hit:
    metadata = {f: row[f] for f in METADATA_FIELDS if row[f] is not None}
    return Hit(row["id"], row["text"], float(score), metadata)
