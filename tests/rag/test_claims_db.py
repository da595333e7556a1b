from __future__ import annotations

import os
from dataclasses import replace
from datetime import date

import numpy as np
import pytest
from sqlalchemy import text

from ingest.claims import read_claims
from rag.claims_db import ClaimsDatabase, DatabaseError, similar_claims
from rag.indexing import claim_document, index_claims
from rag.retrieval import Retriever
from rag.stores.lancedb import LanceDBStore
from tests.rag.fakes import DIM, HashEmbedder


@pytest.fixture(scope="module")
def claims(demo_corpus):
    return read_claims(demo_corpus.root / "claims" / "claims.csv").claims


POSTGRES_URL = os.environ.get("TUNEGRAPH_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path, claims):
    """SQLite always; PostgreSQL when TUNEGRAPH_TEST_POSTGRES_URL names a scratch database."""
    if request.param == "sqlite":
        database = ClaimsDatabase(f"sqlite:///{tmp_path / 'claims.db'}")
    elif POSTGRES_URL:
        database = ClaimsDatabase(POSTGRES_URL)
        with database.engine.begin() as connection:
            connection.execute(text("DELETE FROM claims"))
    else:
        pytest.skip(
            "no PostgreSQL answered on 127.0.0.1:5432 and TUNEGRAPH_TEST_POSTGRES_URL is not set"
        )
    database.upsert(claims)
    return database


def test_unusable_urls_say_what_to_change(tmp_path):
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("hello, this is not SQLite" * 100)
    with pytest.raises(DatabaseError, match="TUNEGRAPH_DATABASE_URL"):
        ClaimsDatabase(f"sqlite:///{not_a_database}")
    with pytest.raises(DatabaseError, match="TUNEGRAPH_DATABASE_URL"):
        ClaimsDatabase("notadialect://x")
    with pytest.raises(DatabaseError, match="TUNEGRAPH_DATABASE_URL"):
        ClaimsDatabase("postgresql+nosuchdriver://u@localhost/db")
    with pytest.raises(DatabaseError, match="tunegraph\\[postgres\\]"):
        ClaimsDatabase("postgresql+psycopg2://u@localhost/db")  # psycopg2 is not installed


def test_upsert_replaces_by_claim_id(database, claims):
    assert database.count() == len(claims)
    database.upsert([replace(claims[0], amount=1.0)])
    assert database.count() == len(claims)
    assert database.get([claims[0].claim_id])[0].amount == 1.0


def test_history_by_vin_policy_and_window(database, claims):
    vin = max({c.vin for c in claims}, key=lambda v: sum(c.vin == v for c in claims))
    expected = sorted(
        (c for c in claims if c.vin == vin), key=lambda c: (c.incident_date, c.claim_id)
    )
    assert database.history(vin=vin.lower()) == expected
    middle = expected[len(expected) // 2].incident_date
    assert database.history(vin=vin, start=middle) == [
        c for c in expected if c.incident_date >= middle
    ]
    policy = claims[0].policy_id
    window = database.history(policy_id=policy, start=date(2021, 1, 1), end=date(2022, 12, 31))
    assert all(c.policy_id == policy and c.incident_date.year in (2021, 2022) for c in window)
    with pytest.raises(ValueError, match="vin or a policy_id"):
        database.history()


def test_photo_candidates_are_the_latest_claims_with_photos_of_a_part_and_damage(database, claims):
    expected = sorted(
        (c for c in claims if (c.part, c.damage_type) == ("hood", "dent") and c.photo_paths),
        key=lambda c: (-c.incident_date.toordinal(), c.claim_id),
    )
    assert len(expected) > 5
    assert database.photo_candidates("hood", "dent", limit=5) == [
        {"claim_id": c.claim_id, "policy_id": c.policy_id, "photo_paths": list(c.photo_paths)}
        for c in expected[:5]
    ]
    assert len(database.photo_candidates("hood", "dent")) == min(len(expected), 200)
    assert database.photo_candidates("hood", "no-such-damage") == []
    cut = expected[len(expected) // 2].incident_date  # only earlier claims can be reused from
    earlier = database.photo_candidates("hood", "dent", before=cut)
    assert (
        earlier
        == [
            {"claim_id": c.claim_id, "policy_id": c.policy_id, "photo_paths": list(c.photo_paths)}
            for c in expected
            if c.incident_date < cut
        ][:200]
    )
    assert earlier and len(earlier) < len(expected)


def _honest_quartiles(claims, keep) -> tuple[int, float, float, float]:
    amounts = [c.amount for c in claims if keep(c) and not c.fraud]
    return len(amounts), *(round(float(np.quantile(amounts, q)), 2) for q in (0.25, 0.5, 0.75))


def test_cost_distribution_gives_the_quartiles_of_honest_claims(database, claims):
    stats = database.cost_distribution("hood", "dent", "moderate")
    expected = _honest_quartiles(
        claims, lambda c: (c.part, c.damage_type, c.severity) == ("hood", "dent", "moderate")
    )
    assert (stats.count, stats.p25, stats.p50, stats.p75) == pytest.approx(expected, abs=0.011)
    assert stats.count > 5
    assert database.cost_distribution("hood", "tire_flat", "minor").count == 0
    # None matches any value: every severe repair, or a part x type at any severity
    severe = database.cost_distribution(None, None, "severe")
    assert (severe.count, severe.p25, severe.p50, severe.p75) == pytest.approx(
        _honest_quartiles(claims, lambda c: c.severity == "severe"), abs=0.011
    )
    hood = database.cost_distribution("hood", "dent", None)
    assert (
        hood.count
        == _honest_quartiles(claims, lambda c: (c.part, c.damage_type) == ("hood", "dent"))[0]
    )


def test_similar_claims_come_back_with_scores_and_exclude_the_vin(database, claims, tmp_path):
    store = LanceDBStore(tmp_path / "index", "claims", DIM)
    index_claims(claims[:300], store, HashEmbedder())
    retriever = Retriever(HashEmbedder(), store)
    query = claims[5]
    results = similar_claims(database, retriever, claim_document(query).text, k=3)
    assert results[0][0] == query and results[0][1] == pytest.approx(1.0, abs=1e-4)
    others = similar_claims(
        database, retriever, claim_document(query).text, 5, exclude_vin=query.vin
    )
    assert others and all(c.vin != query.vin for c, _ in others)


def test_the_claims_table_is_made_and_stamped_by_its_migrations(tmp_path, claims):
    """A new database is made by the Alembic scripts; one made by `create_all` before them is
    stamped at the revision it matches and keeps its rows."""
    import sqlite3

    from rag.claims_db import VERSION_TABLE, ClaimRow

    new = tmp_path / "new.db"
    ClaimsDatabase(f"sqlite:///{new}").upsert(claims[:3])
    with sqlite3.connect(new) as db:
        assert db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0002",)]
    old = tmp_path / "old.db"
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{old}")
    ClaimRow.metadata.create_all(engine)  # what start-up did before migrations
    engine.dispose()
    ClaimsDatabase(f"sqlite:///{old}").upsert(claims[:2])
    database = ClaimsDatabase(f"sqlite:///{old}")
    assert database.count() == 2
    with sqlite3.connect(old) as db:
        assert db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0002",)]


def test_a_0001_table_gains_unmapped_and_keeps_its_rows(tmp_path, claims):
    """Claims written before values outside the vocabulary were kept read back with none; a
    claim's values as written round-trip."""
    import sqlite3

    from rag.claims_db import VERSION_TABLE

    path = tmp_path / "v1.db"
    ClaimsDatabase(f"sqlite:///{path}")  # made at the newest revision; taken back to 0001:
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE {VERSION_TABLE} SET version_num = '0001'")
        db.execute("ALTER TABLE claims DROP COLUMN unmapped")
        db.execute(
            "INSERT INTO claims (claim_id, policy_id, vin, incident_date, description, part, "
            "damage_type, severity, amount, photo_paths) VALUES ('OLD', 'P', "
            "'1HGCM82633A004352', '2024-01-02', 'd', 'hood', 'dent', 'minor', 10.0, '[]')"
        )
    database = ClaimsDatabase(f"sqlite:///{path}")  # ... and again from 0001
    assert database.get(["OLD"])[0].unmapped == {}
    kept = replace(claims[0], severity="catastrophic", unmapped={"severity": "catastrophic"})
    database.upsert([kept])
    assert database.get([kept.claim_id]) == [kept]
    with sqlite3.connect(path) as db:
        assert db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0002",)]
