"""What the agentic cost tool can know: its history-only estimate against the demo corpus's
ground truth, with the generator's own price table as the baseline, on the test photos' *true*
damages (so the figures measure the cost step alone, not the detector).

The demo corpus prices a repair with a labour rate by region and a parts price by vehicle value
that are written nowhere, times a workshop's quote noise (``ingest/demo/costs.py``). The price
table is what a tool would reproduce if it could call the generator (it cannot:
``tests/test_ground_truth.py``); the history is the claims database the tool reads.

    python benchmarks/cost_ground_truth.py [--quick] [--seed N] [--out DIR]

Last line: {"cost_mae_history", "cost_mae_price_table", "true_cost_inside_history_range",
"mean_true_cost", "test_photos", "bases", "inflated_claims_flagged", "honest_claims_flagged"}.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from agents.fraud import INFLATION_FACTOR
from agents.tools import cost_ranges
from ingest.assessment import Damage
from ingest.claims import read_claims
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus
from ingest.demo.costs import table_cost  # the baseline only
from rag.claims_db import ClaimsDatabase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smoke-sized corpus")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="keep the corpus here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        print(json.dumps(measure(root, args.seed, args.quick)))


def measure(root: Path, seed: int, quick: bool) -> dict:
    config = DemoCorpusConfig(seed=seed)
    if quick:
        config = DemoCorpusConfig(seed=seed, n_claims=300, n_images=240, n_scanned_pages=0)
    generate_demo_corpus(root / "demo", config)
    claims_csv = root / "demo" / "claims" / "claims.csv"
    claims = read_claims(claims_csv).claims
    database = ClaimsDatabase(f"sqlite:///{root / 'claims.db'}")
    database.upsert(claims)

    coco = json.loads((root / "demo" / "damage" / "annotations" / "test.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    found: dict[int, list[Damage]] = {}
    for a in coco["annotations"]:
        damage = Damage(type=names[a["category_id"]], part=a["part"], severity=a["severity"])
        found.setdefault(a["image_id"], []).append(damage)
    history_errors, table_errors, inside, bases = [], [], 0, Counter()
    for image in coco["images"]:
        damages = found.get(image["id"], [])
        ranges = cost_ranges(database, damages)
        low, high = sum(r["min"] for r in ranges), sum(r["max"] for r in ranges)
        history_errors.append(abs((low + high) / 2 - image["cost"]))
        table = sum(table_cost(d.part, d.type, d.severity) for d in damages)
        table_errors.append(abs(table - image["cost"]))
        inside += low <= image["cost"] <= high
        bases.update(_slice(r["basis"]) for r in ranges)

    # the fraud rule's input: a claim's amount against the history's estimate for its repair
    with claims_csv.open(newline="", encoding="utf-8") as handle:  # the generator's labels
        patterns = {row["claim_id"]: row["fraud_pattern"] for row in csv.DictReader(handle)}
    flagged = Counter()
    for claim in claims:
        stats = database.cost_distribution(claim.part, claim.damage_type, claim.severity)
        estimate = (stats.p25 + stats.p75) / 2
        pattern = patterns[claim.claim_id]
        group = "inflated" if pattern == "inflated_amount" else "honest"
        if pattern and group == "honest":
            continue  # other fraud patterns: not what this rule is for
        flagged[group, estimate > 0 and claim.amount / estimate >= INFLATION_FACTOR] += 1
    n = len(history_errors)
    return {
        "cost_mae_history": round(statistics.mean(history_errors), 1),
        "cost_mae_price_table": round(statistics.mean(table_errors), 1),
        "true_cost_inside_history_range": round(inside / n, 3),
        "mean_true_cost": round(statistics.mean(i["cost"] for i in coco["images"]), 1),
        "test_photos": n,
        "bases": dict(bases),
        "inflated_claims_flagged": _share(flagged, "inflated"),
        "honest_claims_flagged": _share(flagged, "honest"),
    }


def _slice(basis: str) -> str:
    """Which slice of history a range's ``basis`` names."""
    if basis.startswith("no past claims"):
        return "none"
    if basis.startswith("no similar"):
        return "severity"
    return "scaled severity" if " x " in basis else "part x type x severity"


def _share(flagged: Counter, group: str) -> str:
    return f"{flagged[group, True]}/{flagged[group, True] + flagged[group, False]}"


if __name__ == "__main__":
    main()
