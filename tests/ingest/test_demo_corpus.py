from __future__ import annotations

import csv
import json
import math
import statistics
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from ingest.demo import corpus as corpus_mod
from ingest.demo.claims import COLUMNS, FRAUD_PATTERNS, vin_check_digit
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus
from ingest.demo.costs import QUOTE_SIGMA, TYPICAL_VALUE, CostFactors, repair_cost, table_cost
from ingest.records import BLOCK_KINDS, ManualBlock
from ingest.taxonomy import DAMAGE_TYPES, PART_DAMAGES, SEVERITIES

SMALL = DemoCorpusConfig(seed=3, n_claims=120, n_images=24, n_scanned_pages=2)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _blocks(root: Path) -> list[ManualBlock]:
    return [ManualBlock.from_dict(d) for d in _jsonl(root / "manual" / "blocks.jsonl")]


# ---- determinism and atomicity ---------------------------------------------------------------


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a = generate_demo_corpus(tmp_path / "a", SMALL)
    b = generate_demo_corpus(tmp_path / "b", SMALL)
    c = generate_demo_corpus(tmp_path / "c", DemoCorpusConfig(**{**SMALL.__dict__, "seed": 4}))
    assert a.manifest["files"] == b.manifest["files"]
    assert len(a.manifest["files"]) > 30
    differing = {k for k, v in a.manifest["files"].items() if c.manifest["files"].get(k) != v}
    assert {"claims/claims.csv", "manual/blocks.jsonl"} <= differing


def test_up_to_date_corpus_is_kept_and_force_regenerates(tmp_path, monkeypatch):
    first = generate_demo_corpus(tmp_path / "demo", SMALL)
    calls = []
    real = corpus_mod._generate
    monkeypatch.setattr(corpus_mod, "_generate", lambda *a: calls.append(1) or real(*a))
    again = generate_demo_corpus(tmp_path / "demo", SMALL)
    assert calls == [] and again.manifest == first.manifest
    generate_demo_corpus(tmp_path / "demo", SMALL, force=True)
    assert calls == [1]


def test_interrupted_generation_leaves_previous_corpus_intact(tmp_path, monkeypatch):
    root = tmp_path / "demo"
    before = generate_demo_corpus(root, SMALL).manifest

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_mod.damage, "generate_image", explode)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_corpus(root, SMALL, force=True)
    assert json.loads((root / "manifest.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temp dir left behind


def test_config_rejects_unknown_keys_and_bad_sizes():
    with pytest.raises(ValueError, match=r"unknown key.*n_photos.*valid keys: seed"):
        DemoCorpusConfig.from_mapping({"n_photos": 5})
    with pytest.raises(ValueError, match="n_claims must be of type int"):
        DemoCorpusConfig.from_mapping({"n_claims": "many"})
    with pytest.raises(ValueError, match="n_images=3"):
        DemoCorpusConfig(n_images=3)


# ---- manual ----------------------------------------------------------------------------------


def test_manual_pdf_has_40_pages_and_blocks_sit_on_their_recorded_page(demo_corpus):
    root = demo_corpus.root
    reader = PdfReader(root / "manual" / "vehicle_manual.pdf")
    assert len(reader.pages) >= 40
    assert len(reader.pages) == demo_corpus.counts["manual"]["pages"]
    page_text = {i + 1: " ".join(p.extract_text().split()) for i, p in enumerate(reader.pages)}
    blocks = _blocks(root)
    assert Counter(b.kind for b in blocks).keys() == set(BLOCK_KINDS)
    for block in blocks:
        first_line = block.text.splitlines()[0]
        probe = first_line.split(": ")[0] if block.kind == "SPEC" else first_line
        assert " ".join(probe.split()) in page_text[block.page], (block.id, block.page)


def test_block_kinds_have_their_structure(demo_corpus):
    blocks = _blocks(demo_corpus.root)
    for block in blocks:
        lines = block.text.splitlines()
        if block.kind == "SPEC":
            _name, value = lines[0].split(": ")
            assert block.section[-1] == "Specifications"
            number, unit = value.split(" ", 1)
            float(number)
            assert unit
        elif block.kind == "PROCEDURE":
            assert [line.split(".")[0] for line in lines[1:]] == [
                str(i) for i in range(1, len(lines))
            ]
        elif block.kind == "WIRING":
            assert lines[1] == "Pin | Circuit | Wire colour" and len(lines) >= 4
        elif block.kind == "TROUBLESHOOTING":
            assert lines[0][0] in "PCBU" and "Possible causes:" in lines and "Checks:" in lines


def test_markdown_holds_every_block(demo_corpus):
    markdown = (demo_corpus.root / "manual" / "vehicle_manual.md").read_text("utf-8")
    assert "Synthetic demo data" in markdown
    for block in _blocks(demo_corpus.root):
        first = block.text.splitlines()[0]
        probe = first.split(": ")[0] if block.kind == "SPEC" else first
        assert probe in markdown


def test_scanned_pages_are_greyscale_images_of_pages_with_blocks(demo_corpus):
    scans = sorted((demo_corpus.root / "manual" / "scans").glob("page_*.png"))
    pages_with_blocks = {b.page for b in _blocks(demo_corpus.root)}
    assert len(scans) >= 10
    for path in scans:
        page = int(path.stem.split("_")[1])
        assert page in pages_with_blocks
        with Image.open(path) as image:
            assert image.mode == "L" and image.size[0] == 1240 and image.size[1] >= 1754


def test_qa_pairs_point_at_real_blocks_with_test_phrased_unlike_train(demo_corpus):
    root = demo_corpus.root
    blocks = {b.id: b for b in _blocks(root)}
    qa = {s: _jsonl(root / "manual" / "qa" / f"{s}.jsonl") for s in ("train", "val", "test")}
    for split, pairs in qa.items():
        assert {p["block_id"] for p in pairs} == set(blocks), split
        assert all(p["split"] == split and p["question"] and p["answer"] for p in pairs)
    train_questions = {p["question"] for p in qa["train"]}
    assert not train_questions & {p["question"] for p in qa["test"]}
    train_openings = {" ".join(q.split()[:3]) for q in train_questions}
    test_openings = {" ".join(p["question"].split()[:3]) for p in qa["test"]}
    assert not train_openings & test_openings
    for pair in qa["test"]:
        block = blocks[pair["block_id"]]
        assert pair["kind"] == block.kind
        if block.kind == "SPEC":
            assert block.text.endswith(pair["answer"])


# ---- claims ----------------------------------------------------------------------------------


def _claims(root: Path) -> list[dict]:
    with (root / "claims" / "claims.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS
        return list(reader)


def test_claims_have_columns_types_and_valid_values(demo_corpus):
    rows = _claims(demo_corpus.root)
    assert len(rows) >= 2000
    assert len({r["claim_id"] for r in rows}) == len(rows)
    for row in rows:
        incident = date.fromisoformat(row["incident_date"])
        assert incident > date.fromisoformat(row["policy_start"])
        assert float(row["amount"]) > 0
        assert row["damage_type"] in PART_DAMAGES[row["part"]]
        assert row["severity"] in SEVERITIES
        assert row["fraud"] in {"0", "1"}
        vin = row["vin"]
        assert len(vin) == 17 and vin[8] == vin_check_digit(vin)
        photos = row["photo_paths"].split(";")
        assert photos and all((demo_corpus.root / p).is_file() for p in photos)


def test_claims_have_photos_of_their_own_but_the_reused_photos_fraud(demo_corpus):
    """A photo on another policy's earlier claim is the reused-photos fraud signal: no claim
    shares a photo with another, except a reused_photos fraud with the claim it copies, dated
    after it (the old generator shared 60 % of the honest claims' photos)."""
    rows = _claims(demo_corpus.root)
    holders = defaultdict(list)
    for row in rows:
        for photo in row["photo_paths"].split(";"):
            holders[photo].append(row)
    for photo, rows_with_it in holders.items():
        if len(rows_with_it) == 1:
            continue
        # the original (an honest claim, or now and then another fraud) and its copies
        copies = [r for r in rows_with_it if r["fraud_pattern"] == "reused_photos"]
        originals = [r for r in rows_with_it if r not in copies]
        if not originals:  # a copy of a copy: the earliest is the original
            originals = [min(copies, key=lambda r: r["incident_date"])]
            copies.remove(originals[0])
        assert len(originals) == 1, photo
        original = date.fromisoformat(originals[0]["incident_date"])
        assert all(date.fromisoformat(c["incident_date"]) > original for c in copies), photo
    assert all(r["photo_paths"] for r in rows)


def test_fraud_share_and_patterns_hold(demo_corpus):
    rows = _claims(demo_corpus.root)
    fraud = [r for r in rows if r["fraud"] == "1"]
    assert 0.05 <= len(fraud) / len(rows) <= 0.10
    assert {r["fraud_pattern"] for r in fraud} == set(FRAUD_PATTERNS)
    by_vin = defaultdict(list)
    for r in rows:
        by_vin[r["vin"]].append(r)
    usual = _median_amounts(rows)
    inflated = [
        float(r["amount"]) / usual[(r["part"], r["damage_type"], r["severity"])]
        for r in fraud
        if r["fraud_pattern"] == "inflated_amount"
    ]
    # 3.2-5x the repair's own cost: mostly above 3x the usual amount, not always (a cheap region)
    assert statistics.median(inflated) > 3
    for r in fraud:
        incident = date.fromisoformat(r["incident_date"])
        if r["fraud_pattern"] == "early_claim":
            assert (incident - date.fromisoformat(r["policy_start"])).days <= 20
        elif r["fraud_pattern"] == "inflated_amount":
            assert float(r["amount"]) > 1.5 * usual[(r["part"], r["damage_type"], r["severity"])]
        elif r["fraud_pattern"] == "reused_photos":
            assert any(
                o["photo_paths"] == r["photo_paths"] and o["policy_id"] != r["policy_id"]
                for o in rows
            )
        else:
            gaps = [
                (incident - date.fromisoformat(o["incident_date"])).days
                for o in by_vin[r["vin"]]
                if o is not r
            ]
            assert any(0 < g <= 90 for g in gaps)


def _median_amounts(rows: list[dict]) -> dict[tuple[str, str, str], float]:
    """The median honest amount of each part x damage x severity."""
    amounts = defaultdict(list)
    for r in rows:
        if r["fraud"] == "0":
            amounts[(r["part"], r["damage_type"], r["severity"])].append(float(r["amount"]))
    return {key: statistics.median(values) for key, values in amounts.items()}


def test_a_repairs_cost_depends_on_the_region_and_vehicle_value():
    rural, metro = CostFactors("rural", TYPICAL_VALUE), CostFactors("metro", TYPICAL_VALUE)
    pricey = CostFactors("rural", 2 * TYPICAL_VALUE)

    def cost(part, damage, factors):
        return repair_cost(part, damage, "moderate", factors)

    # labour-heavy dents follow the region's labour rate, parts-heavy lamps the vehicle's value
    dent = cost("hood", "dent", metro) / cost("hood", "dent", rural)
    lamp = cost("headlamp", "lamp_broken", metro) / cost("headlamp", "lamp_broken", rural)
    assert dent > 1.5 and lamp < 1.2
    assert cost("headlamp", "lamp_broken", pricey) > 1.3 * cost("headlamp", "lamp_broken", rural)
    assert cost("hood", "dent", rural) != table_cost("hood", "dent", "moderate")


def test_claim_amounts_carry_hidden_per_policy_factors_beyond_the_quote_noise(demo_corpus):
    rows = [r for r in _claims(demo_corpus.root) if r["fraud"] == "0"]
    assert not {"region", "vehicle_value"} & set(COLUMNS)  # the factors are not in the file
    log_ratio = {
        r["claim_id"]: math.log(
            float(r["amount"]) / table_cost(r["part"], r["damage_type"], r["severity"])
        )
        for r in rows
    }
    total = statistics.pvariance(log_ratio.values())
    assert total > (1.2 * QUOTE_SIGMA) ** 2  # more spread than one workshop's quote noise
    by_policy = defaultdict(list)
    for r in rows:
        by_policy[r["policy_id"]].append(log_ratio[r["claim_id"]])
    within = [statistics.pvariance(v) for v in by_policy.values() if len(v) >= 2]
    # one policy's claims share its region and vehicle: they vary less than claims overall
    assert statistics.mean(within) < 0.8 * total


def test_photo_costs_are_not_the_price_table(demo_corpus):
    root = demo_corpus.root / "damage"
    off = total = 0
    for split in ("train", "val", "test"):
        coco = json.loads((root / "annotations" / f"{split}.json").read_text())
        table = defaultdict(float)
        for ann in coco["annotations"]:
            name = DAMAGE_TYPES[ann["category_id"] - 1]
            table[ann["image_id"]] += table_cost(ann["part"], name, ann["severity"])
        for image in coco["images"]:
            total += 1
            off += not 0.9 <= image["cost"] / table[image["id"]] <= 1.1
    assert off / total > 0.3  # the old generator kept every photo within +-10 % of the table


# ---- damage photos ---------------------------------------------------------------------------


def test_coco_annotations_are_valid(demo_corpus):
    root = demo_corpus.root / "damage"
    seen_images, seen_annotations, total = set(), set(), 0
    for split in ("train", "val", "test"):
        coco = json.loads((root / "annotations" / f"{split}.json").read_text())
        categories = {c["id"]: c["name"] for c in coco["categories"]}
        assert sorted(categories.values()) == sorted(DAMAGE_TYPES)
        images = {i["id"]: i for i in coco["images"]}
        assert not seen_images & images.keys()
        seen_images |= images.keys()
        per_image = defaultdict(list)
        for ann in coco["annotations"]:
            assert ann["id"] not in seen_annotations
            seen_annotations.add(ann["id"])
            image = images[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= image["width"] and y + h <= image["height"]
            polygon = ann["segmentation"][0]
            assert len(polygon) >= 8 and len(polygon) % 2 == 0
            assert all(0 <= v <= image["width"] for v in polygon[0::2])
            assert all(0 <= v <= image["height"] for v in polygon[1::2])
            name = categories[ann["category_id"]]
            assert name in PART_DAMAGES[ann["part"]] and ann["severity"] in SEVERITIES
            per_image[ann["image_id"]].append(ann)
        for image_id, image in images.items():
            anns = per_image[image_id]
            assert anns, f"image {image_id} has no annotation"
            assert image["split"] == split and image["view"] in ("front", "side", "rear")
            worst = max(SEVERITIES.index(a["severity"]) for a in anns)
            assert image["severity"] == SEVERITIES[worst] and image["cost"] > 0
            with Image.open(root / "images" / image["file_name"]) as picture:
                assert picture.size == (image["width"], image["height"])
        total += len(images)
        if split == "train":
            assert {categories[a["category_id"]] for a in coco["annotations"]} == set(DAMAGE_TYPES)
    assert total >= 600
