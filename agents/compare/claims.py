"""The held-out claims the fraud comparison runs on, and the claims history the tools may see
meanwhile.

The demo corpus has no claims split, so the comparison makes one the way claims arrive: the
latest tenth of the claims by incident date (:data:`TEST_FRACTION`) are the test claims, and
every tool sees the claims database without them (:func:`without_claims`), so that neither a
test claim's own row, its amount nor its fraud label can answer for it. What the tools still
see is the history before them, the way a claims handler would.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Collection
from pathlib import Path
from typing import Any

from agents.compare.records import ALL, ClaimCase, CompareError, Size

TEST_FRACTION = 0.1  # the latest claims by incident date
CLAIMS = Path("claims") / "claims.csv"  # in the demo corpus


def held_out_claims(demo_dir: Path, n: Size, seed: int = 0) -> list[ClaimCase]:
    """``n`` of the demo's test claims (:data:`TEST_FRACTION`, the latest by incident date)
    with their photos and fraud labels, drawn at random with ``seed`` and the fraud share kept
    (``"all"``: every test claim), in claim order."""
    if n == 0:
        return []
    split = _split(demo_dir)
    if n != ALL and n < len(split):
        split = _keep_share(split, n, seed)
    patterns = _patterns(demo_dir / CLAIMS)
    return [
        ClaimCase(
            id=c.claim_id,
            images=tuple(_photo(demo_dir, p) for p in c.photo_paths),
            claim={
                "policy_id": c.policy_id,
                "vin": c.vin,
                "incident_date": c.incident_date.isoformat(),
                "description": c.description,
                "claimed_amount": c.amount,
            },
            fraud=bool(c.fraud),
            pattern=patterns.get(c.claim_id, ""),
        )
        for c in sorted(split, key=lambda c: c.claim_id)
    ]


def held_out_claim_ids(demo_dir: Path) -> list[str]:
    """Every test claim's id (what the tools must not see, however many are compared)."""
    return [c.claim_id for c in _split(demo_dir)]


def _split(demo_dir: Path) -> list[Any]:
    from ingest.claims import ClaimsError, read_claims

    path = demo_dir / CLAIMS
    if not path.is_file():
        raise CompareError(f"{path} does not exist: generate the demo corpus with `tunegraph demo`")
    try:
        claims = read_claims(path).claims
    except ClaimsError as exc:
        raise CompareError(f"{path}: {exc}") from None
    latest = sorted(claims, key=lambda c: (c.incident_date, c.claim_id))
    return latest[len(latest) - round(len(latest) * TEST_FRACTION) :]


def _keep_share(claims: list[Any], n: int, seed: int) -> list[Any]:
    """``n`` of ``claims`` at random, as many fraudulent ones as their share says (one at
    least when there are any)."""
    rng = random.Random(seed)
    fraud = [c for c in claims if c.fraud]
    honest = [c for c in claims if not c.fraud]
    k = min(len(fraud), max(1 if fraud else 0, round(n * len(fraud) / len(claims))))
    return rng.sample(fraud, k) + rng.sample(honest, min(len(honest), n - k))


def _patterns(path: Path) -> dict[str, str]:
    """The demo's ``fraud_pattern`` column (the claims reader leaves it out)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["claim_id"]: row.get("fraud_pattern") or "" for row in csv.DictReader(handle)}


def _photo(demo_dir: Path, relative: str) -> bytes:
    photo = demo_dir / relative
    if not photo.resolve().is_relative_to(demo_dir.resolve()):
        raise CompareError(f"{relative!r} (a test claim's photo) is outside {demo_dir}")
    if not photo.is_file():
        raise CompareError(f"{photo} (a test claim's photo) does not exist: regenerate the corpus")
    return photo.read_bytes()


def without_claims(database: Any, hidden: Collection[str], folder: Path) -> Any:
    """A copy of the claims ``database`` without the ``hidden`` claims, in an SQLite file in
    ``folder`` (a file, not memory: the agentic graph reads it from several threads)."""
    from sqlalchemy import select

    from rag.claims_db import ClaimRow, ClaimsDatabase

    if not isinstance(database, ClaimsDatabase):
        raise CompareError(
            f"the claims database is a {type(database).__name__}, which the comparison cannot "
            "copy without its test claims; use a ClaimsDatabase (TUNEGRAPH_DATABASE_URL)"
        )
    table = ClaimRow.__table__
    with database.engine.connect() as source:
        held = source.execute(
            select(table.c.claim_id).where(table.c.claim_id.in_(list(hidden)))
        ).all()
        if len(held) != len(set(hidden)):
            raise CompareError(
                f"the claims database holds {len(held)} of the corpus's {len(set(hidden))} test "
                "claims: it was ingested from another corpus, so hiding them cannot be checked; "
                "re-ingest it: tunegraph ingest claims TUNEGRAPH_HOME/demo/claims/claims.csv"
            )
        query = select(table).where(table.c.claim_id.not_in(list(hidden)))
        rows = [dict(row._mapping) for row in source.execute(query)]
    folder.mkdir(parents=True, exist_ok=True)
    copy = ClaimsDatabase(f"sqlite:///{folder / 'claims-without-test.sqlite'}")
    with copy.engine.begin() as target:  # the rows as stored, in one statement
        if rows:
            target.execute(table.insert(), rows)
    return copy
