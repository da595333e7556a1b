"""The claims database: SQLAlchemy over SQLite by default, PostgreSQL by URL.

Holds the queries the agents need: a VIN's or policy's claims in a time window, and the cost
distribution (count, p25, p50, p75) of a part x damage x severity. Similar claims by description
come from the ``claims`` vector-store namespace (:func:`similar_claims`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import Boolean, Date, Float, String, Text, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.exc import DatabaseError as SQLAlchemyDatabaseError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ingest.claims import Claim
from rag.migrations import upgrade
from rag.retrieval import Retriever


class _Base(DeclarativeBase):
    pass


class ClaimRow(_Base):
    __tablename__ = "claims"

    claim_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    policy_id: Mapped[str] = mapped_column(String(64), index=True)
    vin: Mapped[str] = mapped_column(String(17), index=True)
    incident_date: Mapped[date] = mapped_column(Date, index=True)
    policy_start: Mapped[date | None] = mapped_column(Date, nullable=True)
    description: Mapped[str] = mapped_column(Text)
    part: Mapped[str] = mapped_column(String(64), index=True)
    damage_type: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    amount: Mapped[float] = mapped_column(Float)
    fraud: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    photo_paths: Mapped[str] = mapped_column(Text, default="[]")
    # {field: value as written} of the fields outside the vocabulary (Claim.unmapped)
    unmapped: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")

    def to_claim(self) -> Claim:
        return Claim(
            claim_id=self.claim_id,
            policy_id=self.policy_id,
            vin=self.vin,
            incident_date=self.incident_date,
            description=self.description,
            part=self.part,
            damage_type=self.damage_type,
            severity=self.severity,
            amount=self.amount,
            policy_start=self.policy_start,
            fraud=self.fraud,
            photo_paths=tuple(json.loads(self.photo_paths)),
            unmapped=json.loads(self.unmapped),
        )


@dataclass(frozen=True)
class CostStats:
    count: int
    p25: float | None
    p50: float | None
    p75: float | None


MIGRATIONS = Path(__file__).with_name("claims_migrations")  # Alembic's scripts (rag.migrations)
VERSION_TABLE = "tunegraph_claims_version"
# A table from before migrations is at the newest revision whose column it has.
_UNVERSIONED = (("unmapped", "0002"), ("claim_id", "0001"))


class DatabaseError(ValueError):
    """The claims database URL cannot be used; the message says what to change."""


class ClaimsDatabase:
    def __init__(self, url: str) -> None:
        try:
            self.engine: Engine = create_engine(url)
            upgrade(self.engine, MIGRATIONS, "claims", VERSION_TABLE, _UNVERSIONED)
        except ModuleNotFoundError as exc:
            raise DatabaseError(
                f"the database URL needs the driver {exc.name!r}; for PostgreSQL install "
                "`pip install 'tunegraph[postgres]'` and use postgresql+psycopg://..."
            ) from None
        except (ArgumentError, SQLAlchemyDatabaseError) as exc:
            raise DatabaseError(
                f"cannot open the claims database ({exc.__class__.__name__}: {exc.args[0]}); "
                "check TUNEGRAPH_DATABASE_URL"
            ) from None

    def upsert(self, claims: Sequence[Claim]) -> int:
        """Insert or replace claims by claim_id, all in one transaction."""
        with Session(self.engine) as session, session.begin():
            for claim in claims:
                session.merge(
                    ClaimRow(
                        **{
                            k: getattr(claim, k)
                            for k in Claim.__dataclass_fields__
                            if k not in ("photo_paths", "unmapped")
                        },
                        photo_paths=json.dumps(list(claim.photo_paths)),
                        unmapped=json.dumps(claim.unmapped, sort_keys=True),
                    )
                )
        return len(claims)

    def count(self) -> int:
        with Session(self.engine) as session:
            return len(session.scalars(select(ClaimRow.claim_id)).all())

    def get(self, claim_ids: Sequence[str]) -> list[Claim]:
        with Session(self.engine) as session:
            rows = session.scalars(select(ClaimRow).where(ClaimRow.claim_id.in_(claim_ids))).all()
            by_id = {row.claim_id: row.to_claim() for row in rows}
        return [by_id[i] for i in claim_ids if i in by_id]

    def history(
        self,
        *,
        vin: str | None = None,
        policy_id: str | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> list[Claim]:
        """Claims of a VIN and/or policy with incident dates in [start, end], oldest first."""
        if not vin and not policy_id:
            raise ValueError("history() needs a vin or a policy_id")
        query = select(ClaimRow).order_by(ClaimRow.incident_date, ClaimRow.claim_id)
        if vin:
            query = query.where(ClaimRow.vin == vin.upper())
        if policy_id:
            query = query.where(ClaimRow.policy_id == policy_id)
        if start:
            query = query.where(ClaimRow.incident_date >= start)
        if end:
            query = query.where(ClaimRow.incident_date <= end)
        with Session(self.engine) as session:
            return [row.to_claim() for row in session.scalars(query)]

    def photo_candidates(
        self, part: str, damage_type: str, limit: int = 200, before: date | None = None
    ) -> list[dict]:
        """The latest claims of one part x damage type that have photos (candidates for photo
        comparison): ``claim_id``, ``policy_id`` and ``photo_paths`` of each, newest first;
        with ``before``, only claims of incidents before that date (a photo can only have been
        reused from an earlier claim)."""
        query = (
            select(ClaimRow.claim_id, ClaimRow.policy_id, ClaimRow.photo_paths)
            .where(
                ClaimRow.part == part,
                ClaimRow.damage_type == damage_type,
                ClaimRow.photo_paths != "[]",
            )
            .order_by(ClaimRow.incident_date.desc(), ClaimRow.claim_id)
            .limit(limit)
        )
        if before is not None:
            query = query.where(ClaimRow.incident_date < before)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            {"claim_id": c, "policy_id": p, "photo_paths": json.loads(paths)}
            for c, p, paths in rows
        ]

    def cost_distribution(
        self, part: str | None, damage_type: str | None, severity: str | None
    ) -> CostStats:
        """Quartiles of claimed amounts for one part x damage x severity (fraud excluded); a
        None matches any value (``(None, None, "severe")``: every severe repair)."""
        query = select(ClaimRow.amount).where(ClaimRow.fraud.is_not(True))
        for column, value in (
            (ClaimRow.part, part),
            (ClaimRow.damage_type, damage_type),
            (ClaimRow.severity, severity),
        ):
            if value is not None:
                query = query.where(column == value)
        with Session(self.engine) as session:
            amounts = sorted(session.scalars(query))
        if not amounts:
            return CostStats(0, None, None, None)
        return CostStats(len(amounts), *(_quantile(amounts, q) for q in (0.25, 0.5, 0.75)))


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method).

    >>> _quantile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    """
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return round(values[low] + (values[high] - values[low]) * (position - low), 2)


def similar_claims(
    database: ClaimsDatabase,
    retriever: Retriever,
    description: str,
    k: int = 5,
    exclude_vin: str | None = None,
) -> list[tuple[Claim, float]]:
    """Past claims whose descriptions are closest to ``description`` (cosine similarity)."""
    filter = {"vin": {"$ne": exclude_vin.upper()}} if exclude_vin else None
    hits = retriever.search(description, k, filter, mode="dense")
    claims = {c.claim_id: c for c in database.get([h.id for h in hits])}
    return [(claims[h.id], h.score) for h in hits if h.id in claims]
