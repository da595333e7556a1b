"""A small claims history in SQLite, photos, and an AgentContext of fakes around it."""

from __future__ import annotations

import io
from collections import Counter
from datetime import date, timedelta

import numpy as np
import pytest
from PIL import Image

from agents.context import AgentContext
from ingest.assessment import Damage
from ingest.claims import Claim
from ingest.images import image_bytes
from rag.claims_db import ClaimsDatabase
from rag.stores.base import Hit
from tests.agents.fakes import FakeDamageModel, FakeRetriever, fake_llm, report_json

VIN = "1HGCM82633A004352"
OTHER_VIN = "2FTRX18W1XCA01234"
INCIDENT = date(2025, 3, 1)


def photo(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((256, 192)).save(buffer, "PNG")
    return buffer.getvalue()


def _claim(claim_id, vin, policy, days_before, amount, part="hood", photos=(), **extra):
    return Claim(
        claim_id=claim_id,
        policy_id=policy,
        vin=vin,
        incident_date=INCIDENT - timedelta(days=days_before),
        description=f"{part} dent in a car park",
        part=part,
        damage_type="dent",
        severity="moderate",
        amount=amount,
        policy_start=extra.pop("policy_start", date(2020, 1, 1)),
        photo_paths=tuple(photos),
        **extra,
    )


@pytest.fixture
def claims_db(tmp_path):
    database = ClaimsDatabase(f"sqlite:///{tmp_path / 'claims.db'}")
    start = INCIDENT - timedelta(days=10)
    database.upsert(
        [
            _claim("C-1", VIN, "POL-1", 60, 790.0, policy_start=start, photos=("p/own.png",)),
            _claim("C-2", OTHER_VIN, "POL-2", 400, 700.0, photos=("p/reused.png",)),
            _claim("C-3", OTHER_VIN, "POL-2", 500, 800.0),
            _claim("C-4", OTHER_VIN, "POL-2", 600, 900.0),
            _claim("C-5", OTHER_VIN, "POL-2", 700, 4000.0, fraud=True),
        ]
    )
    return database


def as_jpeg(data: bytes) -> bytes:
    """The same picture in another file: what a photo check should still match."""
    return image_bytes(Image.open(io.BytesIO(data)).convert("RGB"), "JPEG")


DAMAGE = Damage(type="dent", part="hood", severity="moderate", confidence=0.9)
MANUAL = [
    Hit("blk-hood-dent", "Hood dent repair: paintless up to 30 mm.", 0.9, {"kind": "PROCEDURE"}),
    Hit("blk-torque", "Hood hinge bolt torque 24 Nm.", 0.5, {"kind": "SPEC"}),
]
PHOTOS = {"p/own.png": photo(1), "p/reused.png": photo(2)}


@pytest.fixture
def decodes(monkeypatch) -> Counter:
    """How many times each image (by its bytes) is opened for decoding from here on."""
    opened: Counter = Counter()
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        opened[fp.getvalue() if isinstance(fp, io.BytesIO) else str(fp)] += 1
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return opened


@pytest.fixture
def context(claims_db):
    return AgentContext(
        llm=fake_llm(report_json(cited=["blk-hood-dent"])),
        finetuned_adapter="ft",
        manuals=FakeRetriever(MANUAL),
        claims_db=claims_db,
        claims_index=FakeRetriever([Hit("C-2", "hood dent in a car park", 0.98, {})]),
        damage_model=FakeDamageModel([DAMAGE]),
        open_photo=lambda path: PHOTOS[path],
    )
