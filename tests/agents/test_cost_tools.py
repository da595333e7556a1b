"""The agentic cost tool learns from the claims history only (DESIGN.md: "tools learn from
history"): each slice of history it falls back to, and no price table anywhere."""

from __future__ import annotations

from datetime import date

import pytest

from agents.tools import cost_ranges
from ingest.assessment import Damage
from ingest.claims import Claim
from rag.claims_db import ClaimsDatabase


def _claim(i: int, part: str, damage: str, severity: str, amount: float, fraud=None) -> Claim:
    return Claim(
        claim_id=f"C-{i}",
        policy_id=f"POL-{i}",
        vin="1HGCM82633A004352",
        incident_date=date(2024, 1, 1),
        description=f"{damage} on the {part}",
        part=part,
        damage_type=damage,
        severity=severity,
        amount=amount,
        fraud=fraud,
    )


@pytest.fixture
def database(tmp_path):
    """Prices ten times any price table's: an estimate that follows them came from history."""
    rows = [
        *(("hood", "dent", "moderate", a) for a in (8000, 9000, 10000, 11000)),
        *(("hood", "dent", "minor", a) for a in (3000, 4000, 5000)),
        *(("front_door", "scratch", "severe", a) for a in (20000, 24000, 28000)),
        *(("front_door", "scratch", "minor", a) for a in (2000, 2000, 2000, 2000)),
    ]
    database = ClaimsDatabase(f"sqlite:///{tmp_path / 'claims.db'}")
    database.upsert([_claim(i, *row) for i, row in enumerate(rows)])
    database.upsert([_claim(99, "hood", "dent", "moderate", 1e6, fraud=True)])  # left out
    return database


def _range(database, part: str, damage: str, severity: str) -> dict:
    [found] = cost_ranges(database, [Damage(type=damage, part=part, severity=severity)])
    return found


def test_similar_past_claims_give_their_interquartile_range(database):
    found = _range(database, "hood", "dent", "moderate")
    assert (found["min"], found["max"]) == (8750.0, 10250.0)
    assert found["basis"] == "4 past moderate hood dent claims (p25-p75)"


def test_another_severity_of_the_same_damage_is_scaled_by_historys_severity_ratio(database):
    found = _range(database, "hood", "dent", "severe")
    # the nearest severity, moderate (p25-p75 8750-10250) x the median severe : moderate claim
    ratio = 24000 / 9500
    assert (found["min"], found["max"]) == (round(8750 * ratio, 2), round(10250 * ratio, 2))
    assert found["basis"].startswith("4 past moderate hood dent claims (p25-p75) x 2.53")
    scratch = _range(database, "front_door", "scratch", "moderate")
    # severe and minor are as near: the one with more claims, minor; x 9500 / 2000
    assert (scratch["min"], scratch["max"]) == (9500.0, 9500.0)
    assert scratch["basis"].startswith("4 past minor front_door scratch claims (p25-p75) x 4.75")


def test_with_no_similar_claims_the_range_is_all_past_claims_of_that_severity(database):
    found = _range(database, "headlamp", "lamp_broken", "moderate")
    assert (found["min"], found["max"]) == (8750.0, 10250.0)
    assert found["basis"] == "no similar past claims: all 4 past moderate claims (p25-p75)"


def test_an_empty_history_gives_no_estimate_rather_than_a_price_table(tmp_path):
    empty = ClaimsDatabase(f"sqlite:///{tmp_path / 'empty.db'}")
    found = _range(empty, "hood", "dent", "moderate")
    assert (found["min"], found["max"]) == (0.0, 0.0)
    assert found["basis"] == "no past claims to estimate from"


def test_claims_paid_nothing_give_no_severity_ratio_and_no_error(tmp_path):
    """A severity whose past claims' median is 0 (denied, below the deductible) cannot scale
    another: the tool falls through to the next slice instead of dividing by zero."""
    rows = [
        *(("hood", "dent", "minor", 0.0) for _ in range(4)),
        *(("front_door", "scratch", "severe", a) for a in (2000, 2400, 2800)),
    ]
    database = ClaimsDatabase(f"sqlite:///{tmp_path / 'claims.db'}")
    database.upsert([_claim(i, *row) for i, row in enumerate(rows)])
    found = _range(database, "hood", "dent", "severe")
    assert (found["min"], found["max"]) == (2200.0, 2600.0)
    assert found["basis"] == "no similar past claims: all 3 past severe claims (p25-p75)"
