"""Synthetic claims history with labelled fraud.

Honest claims: a random policy, an incident 60-1,200 days after the policy started, a damage
drawn from the price table, and an amount from :mod:`ingest.demo.costs`: the table's figure
reshaped by the policy's region (labour rate) and vehicle value, times a workshop's quote noise.
Neither factor is written to the claims file. Each claim has one to three photos of a matching
damage from the demo photo set that no other claim has (:func:`_own_photos`; only when a damage's
photos run out do claims share them), but for the ``reused_photos`` fraud: so that a photo seen
on another policy's claim means what it means in real claims work.

Fraudulent claims (``fraud=1``, ``fraud_pattern`` names the pattern) follow four patterns seen in
real claims work: a claim within three weeks of the policy start (``early_claim``), a burst of
claims on one VIN within six months (``repeat_vin``), an amount 3.2-5x what the repair would
have cost (``inflated_amount``), and photos reused from another policy's claim (``reused_photos``).
A few honest claims also fall soon after the policy start, so that no single rule is a perfect
detector.
"""

from __future__ import annotations

import csv
import random
from dataclasses import asdict, dataclass, fields
from datetime import date, timedelta
from pathlib import Path

from ingest.demo.costs import (
    BASE_REPAIR_COST,
    CostFactors,
    draw_factors,
    quote_noise,
    repair_cost,
)
from ingest.taxonomy import SEVERITIES, humanize

FRAUD_PATTERNS = ("early_claim", "repeat_vin", "inflated_amount", "reused_photos")
START, END = date(2021, 1, 1), date(2025, 6, 30)
_VIN_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=False)),
    **dict(zip("JKLMN", range(1, 6), strict=False)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=False)),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"

_SCENARIOS = {
    "dent": (
        "Reversed into a bollard in a car park",
        "Another car rolled into mine while parked",
        "Hit by a shopping trolley",
        "Hail storm overnight",
    ),
    "scratch": (
        "Keyed while parked on the street",
        "Scraped a wall entering the garage",
        "Brushed a hedge on a narrow lane",
        "Scratched by a passing cyclist",
    ),
    "crack": (
        "Low-speed collision at a junction",
        "Struck a kerb while parking",
        "Impact from road debris on the motorway",
        "Rear-ended at traffic lights",
    ),
    "glass_shatter": (
        "Stone thrown up by a lorry",
        "Break-in attempt overnight",
        "Branch fell on the car in a storm",
        "Vandalism in a car park",
    ),
    "lamp_broken": (
        "Clipped a post while manoeuvring",
        "Minor collision in a car park",
        "Hit by a reversing van",
        "Struck by debris",
    ),
    "tire_flat": (
        "Ran over a nail on the ring road",
        "Hit a pothole at speed",
        "Tyre slashed while parked",
        "Blow-out on the motorway",
    ),
}


@dataclass
class ClaimRow:
    claim_id: str
    policy_id: str
    vin: str
    incident_date: str
    policy_start: str
    description: str
    part: str
    damage_type: str
    severity: str
    amount: float
    fraud: int
    fraud_pattern: str
    photo_paths: str  # ';'-separated, relative to the demo root


COLUMNS = tuple(f.name for f in fields(ClaimRow))


def vin_check_digit(vin: str) -> str:
    """ISO 3779 / North-American check digit (position 9) of a 17-character VIN.

    >>> vin_check_digit("1M8GDM9AXKP042788")
    'X'
    """
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS, strict=False))
    return "X" if total % 11 == 10 else str(total % 11)


def make_vin(rng: random.Random) -> str:
    body = "HMW" + "".join(rng.choice(_VIN_CHARS) for _ in range(5)) + "0"
    body += "S" + "".join(rng.choice(_VIN_CHARS) for _ in range(7))  # model year 2025 = S
    return body[:8] + vin_check_digit(body) + body[9:]


@dataclass
class _Policy:
    policy_id: str
    vin: str
    start: date

    @property
    def factors(self) -> CostFactors:
        """The vehicle's region and value, never written to the claims file. Drawn from a
        generator of their own, seeded by the VIN, so that adding them left every other draw
        of the claims (and the claims themselves, but for their amounts) as they were."""
        return draw_factors(random.Random(f"cost-factors-{self.vin}"))


def generate_claims(
    rng: random.Random, n_claims: int, photos: dict[tuple[str, str], list[str]]
) -> list[ClaimRow]:
    """``photos`` maps (part, damage) to photo paths; fraud is 5-10% of the rows."""
    policies = [
        _Policy(f"POL-{100000 + i}", make_vin(rng), START + timedelta(rng.randint(0, 1200)))
        for i in range(max(10, int(n_claims * 0.7)))
    ]
    n_fraud = round(n_claims * rng.uniform(0.06, 0.09))
    rows: list[ClaimRow] = []
    for _ in range(n_claims - n_fraud):
        policy = rng.choice(policies)
        # ~1.5% of honest claims are early too: real accidents happen in the first weeks.
        days = rng.randint(2, 25) if rng.random() < 0.015 else rng.randint(60, 1200)
        rows.append(_claim(rng, policy, days, photos))
    patterns = [FRAUD_PATTERNS[i % len(FRAUD_PATTERNS)] for i in range(n_fraud)]
    rng.shuffle(patterns)
    sources: dict[int, ClaimRow] = {}  # a reused_photos claim -> the claim it copies
    for pattern in patterns:
        row, source = _fraud_claim(rng, pattern, policies, rows, photos)
        rows.append(row)
        if source is not None:
            sources[id(row)] = source
    own = [r for r in rows if id(r) not in sources]  # the honest claims first
    photo_rng = random.Random(f"claim-photos-{n_claims}")
    _own_photos(own, photos, photo_rng)
    for row in rows:
        if id(row) in sources:
            row.photo_paths = sources[id(row)].photo_paths
            _after(row, sources[id(row)], photo_rng)
    rows.sort(key=lambda r: (r.incident_date, r.policy_id, r.part))
    for i, row in enumerate(rows, 1):
        row.claim_id = f"CLM-{i:06d}"
    return rows


def _claim(rng, policy: _Policy, days: int, photos, damage=None) -> ClaimRow:
    part, damage_type = damage or rng.choice(list(BASE_REPAIR_COST))
    severity = rng.choices(SEVERITIES, weights=(5, 4, 2))[0]
    amount = repair_cost(part, damage_type, severity, policy.factors, quote_noise(rng))
    choices = photos.get((part, damage_type)) or [p for ps in photos.values() for p in ps]
    chosen = rng.sample(choices, k=min(len(choices), rng.randint(1, 3)))
    scenario = rng.choice(_SCENARIOS[damage_type])
    return ClaimRow(
        claim_id="",
        policy_id=policy.policy_id,
        vin=policy.vin,
        incident_date=(policy.start + timedelta(days)).isoformat(),
        policy_start=policy.start.isoformat(),
        description=f"{scenario}; {severity} {humanize(damage_type)} on the {humanize(part)}.",
        part=part,
        damage_type=damage_type,
        severity=severity,
        amount=round(amount, 2),
        fraud=0,
        fraud_pattern="",
        photo_paths=";".join(chosen),
    )


def _own_photos(
    rows: list[ClaimRow], photos: dict[tuple[str, str], list[str]], rng: random.Random
) -> None:
    """Give each of ``rows`` photos that no other row has: one each first, of its damage (of
    its damage type on another part, or of any damage, when its damage has none left — the
    photo then disagrees with the description, as a careless claimant's might), then more of
    its damage, up to as many as it had, while there are some left. Its own generator, so that
    every other draw of the claims stays as it was."""
    wanted = [len(row.photo_paths.split(";")) for row in rows]
    chosen: list[list[str]] = [[] for _ in rows]
    used: set[str] = set()
    everything = sorted({p for ps in photos.values() for p in ps})
    of_type: dict[str, list[str]] = {}
    for (_, damage_type), paths in photos.items():
        of_type.setdefault(damage_type, []).extend(paths)

    def free(candidates) -> list[str]:
        return [p for p in candidates if p not in used]

    for round_ in range(max(wanted, default=0)):
        for i, row in enumerate(rows):
            if wanted[i] <= round_ or len(chosen[i]) < round_:
                continue
            options = free(photos.get((row.part, row.damage_type), ()))
            if not options and round_ == 0:
                options = free(of_type.get(row.damage_type, ())) or free(everything)
            if options:
                photo = rng.choice(options)
                used.add(photo)
                chosen[i].append(photo)
    for row, own in zip(rows, chosen, strict=True):
        if own:
            row.photo_paths = ";".join(own)


def _after(row: ClaimRow, source: ClaimRow, rng: random.Random) -> None:
    """Date a claim that reuses ``source``'s photos after it (and after its own policy's
    start; 10-120 days): a photo can only be reused from an earlier claim."""
    earliest = max(date.fromisoformat(source.incident_date), date.fromisoformat(row.policy_start))
    if date.fromisoformat(row.incident_date) <= earliest:
        row.incident_date = (earliest + timedelta(rng.randint(10, 120))).isoformat()


def _fraud_claim(
    rng, pattern: str, policies, honest: list[ClaimRow], photos
) -> tuple[ClaimRow, ClaimRow | None]:
    """A fraudulent claim, and for ``reused_photos`` the honest claim whose photos it reuses."""
    policy = rng.choice(policies)
    source = None
    if pattern == "early_claim":
        row = _claim(rng, policy, rng.randint(1, 20), photos)
    elif pattern == "repeat_vin":  # another claim 10-90 days after this VIN's latest one
        previous = rng.choice(honest)
        policy = next(p for p in policies if p.policy_id == previous.policy_id)
        latest = max(date.fromisoformat(r.incident_date) for r in honest if r.vin == policy.vin)
        row = _claim(rng, policy, (latest - policy.start).days + rng.randint(10, 90), photos)
    elif pattern == "inflated_amount":
        row = _claim(rng, policy, rng.randint(60, 1200), photos)
        row.amount = round(row.amount * rng.uniform(3.2, 5.0), 2)
    else:  # reused_photos: the same pictures as another policy's claim
        source = rng.choice([r for r in honest if r.policy_id != policy.policy_id])
        row = _claim(rng, policy, rng.randint(60, 1200), photos, (source.part, source.damage_type))
        row.photo_paths = source.photo_paths
    row.fraud, row.fraud_pattern = 1, pattern
    return row, source


def write_claims_csv(rows: list[ClaimRow], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
