"""Generate the whole synthetic demo corpus into one directory, deterministically and atomically.

Layout under ``root`` (``TUNEGRAPH_HOME/demo`` by default)::

    README.md                      what this data is, its distributions, how to use real data
    manifest.json                  seed, sizes, counts, sha256 of every file
    manual/vehicle_manual.pdf      the service manual (text layer)
    manual/vehicle_manual.md       the same manual as Markdown
    manual/scans/page_NNN.png      scanned-looking images of some PDF pages (for OCR)
    manual/blocks.jsonl            ground-truth blocks (id, page, section, kind, text)
    manual/qa/{train,val,test}.jsonl   ground-truth question/answer pairs per block
    manual/qa/test_retrieval.jsonl     the test questions as {"q", "must"} for eval retrieval
    claims/claims.csv              claims history with labelled fraud
    damage/images/*.jpg            synthetic damage photos
    damage/annotations/{train,val,test}.json   COCO annotations per split
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ingest.demo import claims as claims_mod
from ingest.demo import damage, manual
from ingest.demo.datasheet import datasheet
from ingest.taxonomy import DAMAGE_TYPES

GENERATOR_VERSION = 4  # 3: costs from hidden region and vehicle-value factors (demo/costs.py);
# 4: each honest claim has photos of its own (demo/claims.py)
Progress = Callable[..., Any]  # tqdm-like: progress(iterable, desc=..., total=...)


@dataclass(frozen=True)
class DemoCorpusConfig:
    seed: int = 42
    n_claims: int = 2000
    # 2,160 training photos: trained on 420, the from-scratch damage model reached damage-type
    # macro-F1 0.63 on validation (30 epochs); on 2,160, 0.84 (12 epochs) and 0.93 (24 epochs)
    n_images: int = 2400
    n_scanned_pages: int = 10
    val_fraction: float = 0.05
    test_fraction: float = 0.05

    def __post_init__(self) -> None:
        problems = []
        if self.n_claims < 50:
            problems.append(f"n_claims={self.n_claims}: use at least 50")
        if self.n_images < 12:
            problems.append(f"n_images={self.n_images}: use at least 12 (two per damage type)")
        if not 0 <= self.n_scanned_pages <= 40:
            problems.append(f"n_scanned_pages={self.n_scanned_pages}: use 0 to 40")
        if not 0 < self.val_fraction + self.test_fraction < 1:
            problems.append("val_fraction + test_fraction must be between 0 and 1")
        if problems:
            raise ValueError("Invalid demo corpus config: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "config") -> DemoCorpusConfig:
        """Build from a parsed YAML mapping; unknown keys are rejected with the valid ones.

        >>> DemoCorpusConfig.from_mapping({"n_claims": 500}).n_claims
        500
        """
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}"
            )
        for f in fields(cls):
            value, expected = data.get(f.name, f.default), type(f.default)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and (expected is float or isinstance(value, int))):
                raise ValueError(
                    f"{source}: {f.name} must be of type {expected.__name__}, got {value!r}"
                )
        return cls(**data)


@dataclass(frozen=True)
class DemoCorpus:
    root: Path
    manifest: dict[str, Any]

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest["counts"]


def _no_progress(iterable, **_: Any):
    return iterable


def generate_demo_corpus(
    root: Path,
    config: DemoCorpusConfig | None = None,
    *,
    force: bool = False,
    progress: Progress = _no_progress,
) -> DemoCorpus:
    """Write the corpus to ``root``; keep an existing one made with the same config.

    The corpus is built in a temporary sibling directory and swapped in at the end, so an
    interrupted run never leaves a half-written corpus in place of a good one.
    """
    config = config or DemoCorpusConfig()
    existing = _read_manifest(root)
    if existing and not force and existing.get("config") == _config_key(config):
        return DemoCorpus(root, existing)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        manifest = _generate(tmp, config, progress)
        _swap_in(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoCorpus(root, manifest)


def _generate(out: Path, config: DemoCorpusConfig, progress: Progress) -> dict[str, Any]:
    seed = config.seed
    counts: dict[str, Any] = {}

    # Manual: content, PDF (assigns pages), Markdown, blocks, QA pairs, scans.
    manual_dir = out / "manual"
    (manual_dir / "qa").mkdir(parents=True)
    (manual_dir / "scans").mkdir()
    chapters = manual.build_manual(random.Random(f"{seed}-manual"))
    pages = manual.render_pdf(chapters, manual_dir / manual.SOURCE)
    (manual_dir / "vehicle_manual.md").write_text(manual.render_markdown(chapters), "utf-8")
    blocks = manual.blocks(chapters)
    _write_jsonl(manual_dir / "blocks.jsonl", (b.to_dict() for b in blocks))
    qa = manual.make_qa_pairs(chapters, random.Random(f"{seed}-qa"))
    for split in manual.SPLITS:
        _write_jsonl(
            manual_dir / "qa" / f"{split}.jsonl", (q.to_dict() for q in qa if q.split == split)
        )
    # For `tunegraph eval retrieval`: a relevant chunk contains the block's first line.
    first_line = {b.id: b.text.splitlines()[0] for b in blocks}
    _write_jsonl(
        manual_dir / "qa" / "test_retrieval.jsonl",
        ({"q": q.question, "must": first_line[q.block_id]} for q in qa if q.split == "test"),
    )
    scan_rng = random.Random(f"{seed}-scans")
    content_pages = sorted({b.page for b in blocks})
    scanned = sorted(
        scan_rng.sample(content_pages, min(config.n_scanned_pages, len(content_pages)))
    )
    for page in progress(scanned, desc="manual scans", unit="page"):
        lines = manual.page_lines(chapters, page)
        manual.render_scan(lines, page, scan_rng, manual_dir / "scans" / f"page_{page:03d}.png")
    counts["manual"] = {
        "pages": pages,
        "blocks": dict(Counter(b.kind for b in blocks)),
        "qa": dict(Counter(q.split for q in qa)),
        "scanned_pages": scanned,
    }

    # Damage photos first: claims reference them.
    photos = _generate_damage(out / "damage", config, progress, counts)

    claims_dir = out / "claims"
    claims_dir.mkdir()
    rows = claims_mod.generate_claims(random.Random(f"{seed}-claims"), config.n_claims, photos)
    claims_mod.write_claims_csv(rows, claims_dir / "claims.csv")
    counts["claims"] = {
        "rows": len(rows),
        "fraud": sum(r.fraud for r in rows),
        "fraud_patterns": dict(Counter(r.fraud_pattern for r in rows if r.fraud)),
    }

    manifest = {
        "generator_version": GENERATOR_VERSION,
        "config": _config_key(config),
        "counts": counts,
    }
    (out / "README.md").write_text(datasheet(config, counts), "utf-8")
    manifest["files"] = {
        str(p.relative_to(out)): _sha256(p) for p in sorted(out.rglob("*")) if p.is_file()
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), "utf-8")
    return manifest


def _generate_damage(
    out: Path, config: DemoCorpusConfig, progress: Progress, counts: dict[str, Any]
) -> dict[tuple[str, str], list[str]]:
    (out / "images").mkdir(parents=True)
    (out / "annotations").mkdir()
    rng = random.Random(f"{config.seed}-damage")
    order = list(range(config.n_images))
    rng.shuffle(order)
    n_test = round(config.n_images * config.test_fraction)
    n_val = round(config.n_images * config.val_fraction)
    split_of = {i: "test" for i in order[:n_test]}
    split_of.update({i: "val" for i in order[n_test : n_test + n_val]})

    coco = {s: {"images": [], "annotations": []} for s in ("train", "val", "test")}
    photos: dict[tuple[str, str], list[str]] = {}
    next_ann = 1
    for i in progress(range(config.n_images), desc="damage photos", unit="img"):
        image, view, damages = damage.generate_image(rng, DAMAGE_TYPES[i % len(DAMAGE_TYPES)])
        name = f"img_{i + 1:05d}.jpg"
        damage.save_jpeg(image, out / "images" / name)
        split = split_of.get(i, "train")
        coco[split]["images"].append(damage.image_record(i + 1, name, view, damages, rng, split))
        coco[split]["annotations"] += damage.annotation_records(i + 1, damages, next_ann)
        next_ann += len(damages)
        for d in damages:
            photos.setdefault((d.part, d.type), []).append(f"damage/images/{name}")

    info = {
        "description": "tunegraph synthetic car-damage photos (demo data, not real)",
        "version": str(GENERATOR_VERSION),
        "seed": config.seed,
    }
    for split, data in coco.items():
        document = {"info": info, "categories": damage.categories(), **data}
        (out / "annotations" / f"{split}.json").write_text(json.dumps(document), "utf-8")
    all_anns = [a for data in coco.values() for a in data["annotations"]]
    counts["damage"] = {
        "images": {s: len(d["images"]) for s, d in coco.items()},
        "annotations": len(all_anns),
        "per_type": dict(Counter(DAMAGE_TYPES[a["category_id"] - 1] for a in all_anns)),
        "per_severity": dict(Counter(a["severity"] for a in all_anns)),
    }
    return photos


def _swap_in(tmp: Path, root: Path) -> None:
    old = None
    if root.exists():
        old = root.with_name(f".{root.name}-old-{os.getpid()}")
        os.replace(root, old)
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _config_key(config: DemoCorpusConfig) -> dict[str, Any]:
    return {**asdict(config), "generator_version": GENERATOR_VERSION}


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _write_jsonl(path: Path, records) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
