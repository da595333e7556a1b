"""Fraud signals: rules over the claims history, and photo/description matches against it.

Each signal is a sentence that says what was found and against which claim; the risk combines
the signals' weights as independent evidence: ``1 - prod(1 - w)``. An amount is inflated against
the cost estimate the claims history gives (:func:`agents.tools.cost_ranges`), never against a
price table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ingest.assessment import ClaimContext, Damage, Fraud, fraud_level
from ingest.images import Photo, load_image
from ingest.taxonomy import PARTS, humanize

EARLY_DAYS = 30  # an incident this soon after the policy started
REPEAT_DAYS = 180  # earlier claims on the same VIN within this window
DESCRIPTION_SIMILARITY = 0.97  # cosine: a description copied from another vehicle's claim
PHOTO_DISTANCE = 4  # dHash bits: the same picture, re-encoded or resized
INFLATION_FACTOR = 3.0  # a claimed amount this many times the estimated cost
WEIGHTS = {
    "early": 0.35,
    "repeat": 0.35,
    "inflated": 0.5,
    "photo": 0.6,
    "description": 0.3,
    "mismatch": 0.25,
    "prior_fraud": 0.4,
}


@dataclass(frozen=True)
class Signal:
    kind: str
    text: str


def photo_hash(picture: Any) -> int:
    """64-bit difference hash of a ``PIL.Image``: equal for the same picture at another
    size/quality."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(picture.convert("L").resize((9, 8), Image.Resampling.LANCZOS), int)
    bits = 0
    for brighter in (pixels[:, :-1] > pixels[:, 1:]).flatten():
        bits = bits << 1 | int(brighter)
    return bits


def photo_matches(
    photos: Sequence[Photo],
    candidates: Sequence[dict],
    policy_id: str | None,
    open_photo: Callable[[str], bytes],
    cache: dict[str, int],
) -> list[dict]:
    """Earlier claims of other policies that have a photo equal to one of ``photos``."""
    uploaded = [photo_hash(p.image) for p in photos]
    matches = []
    for claim in candidates:
        if policy_id and claim["policy_id"] == policy_id:
            continue
        for path in claim["photo_paths"]:
            if path not in cache:
                try:
                    cache[path] = photo_hash(load_image(open_photo(path), path))
                except (OSError, ValueError):
                    cache[path] = -1  # unreadable: never matches
            if cache[path] >= 0 and any(
                bin(cache[path] ^ h).count("1") <= PHOTO_DISTANCE for h in uploaded
            ):
                matches.append({"claim_id": claim["claim_id"], "policy_id": claim["policy_id"]})
                break
    return matches


def signals(
    claim: ClaimContext | None,
    damages: Sequence[Damage],
    history: Sequence[dict],
    similar: Sequence[dict],
    photo_hits: Sequence[dict],
    expected_cost: tuple[float, float],
) -> list[Signal]:
    found: list[Signal] = []
    claim = claim or ClaimContext()
    incident = claim.incident_date
    starts = {h["policy_start"] for h in history if h["policy_id"] == claim.policy_id}
    starts.discard(None)
    if incident and starts:
        days = (incident - date.fromisoformat(min(starts))).days
        if 0 <= days < EARLY_DAYS:
            found.append(Signal("early", f"incident {days} days after the policy started"))
    if incident and claim.vin:
        recent = [
            h
            for h in history
            if h["vin"] == claim.vin.upper()
            and 0 < (incident - date.fromisoformat(h["incident_date"])).days <= REPEAT_DAYS
        ]
        if recent:
            ids = ", ".join(h["claim_id"] for h in recent)
            found.append(
                Signal(
                    "repeat",
                    f"{len(recent)} earlier claim(s) on this VIN within {REPEAT_DAYS} days ({ids})",
                )
            )
    if claim.claimed_amount and expected_cost[1] > 0:
        ratio = claim.claimed_amount / ((expected_cost[0] + expected_cost[1]) / 2)
        if ratio >= INFLATION_FACTOR:
            found.append(
                Signal(
                    "inflated",
                    f"claimed {claim.claimed_amount:,.0f} USD is {ratio:.1f}x the "
                    f"estimated cost ({expected_cost[0]:,.0f}-{expected_cost[1]:,.0f} USD)",
                )
            )
    for hit in photo_hits:
        found.append(
            Signal("photo", f"a photo matches claim {hit['claim_id']} of policy {hit['policy_id']}")
        )
    for hit in similar:
        if hit["score"] >= DESCRIPTION_SIMILARITY:
            found.append(
                Signal(
                    "description",
                    f"description nearly identical to claim {hit['claim_id']} "
                    f"of another vehicle (similarity {hit['score']:.2f})",
                )
            )
    if claim.description and damages:
        seen = {d.part for d in damages}
        named = _parts_named(claim.description)
        if named and not named & seen:
            found.append(
                Signal(
                    "mismatch",
                    f"the description names {', '.join(map(humanize, sorted(named)))}"
                    f" but the photos show damage on {', '.join(map(humanize, sorted(seen)))}",
                )
            )
    flagged = [h["claim_id"] for h in history if h.get("fraud")]
    if flagged:
        found.append(Signal("prior_fraud", f"earlier claims marked as fraud: {', '.join(flagged)}"))
    return found


def assess(found: Sequence[Signal]) -> Fraud:
    clean = 1.0
    for signal in found:
        clean *= 1 - WEIGHTS[signal.kind]
    risk = round(1 - clean, 3)
    return Fraud(risk=risk, level=fraud_level(risk), signals=[s.text for s in found])


def _parts_named(text: str) -> set[str]:
    lowered = text.lower()
    return {p for p in PARTS if humanize(p) in lowered}
