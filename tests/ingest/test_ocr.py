from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from ingest.demo import manual
from ingest.ocr import OCRError, ocr_image

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="tesseract not installed: apt-get install -y tesseract-ocr tesseract-ocr-eng",
)


@pytest.fixture(scope="module")
def scanned_page(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    """Page 39 of the seed-42 demo manual (specs, prose, two wiring tables), freshly scanned."""
    out = tmp_path_factory.mktemp("ocr")
    chapters = manual.build_manual(random.Random("42-manual"))
    manual.render_pdf(chapters, out / manual.SOURCE)  # assigns the pages
    lines = manual.page_lines(chapters, 39)
    manual.render_scan(lines, 39, random.Random(1), out / "page_039.png")
    return out / "page_039.png", lines


@needs_tesseract
def test_ocr_recovers_headings_specs_and_table_rows_in_order(scanned_page):
    path, truth = scanned_page
    got = ocr_image(path)
    expected = [
        "11 Charging and Starting",
        "11.1 Specifications",
        "Charging voltage: 14.4 V",
        "Alternator mounting bolt torque: 57 Nm",
        "Battery sensor resistance between pins 1 and 2: 2.6 kohm",
        "Pin\tCircuit\tWire colour",
        "2\tcontrol (low side)\tgreen/red",
        "3\tground G142\tyellow",
    ]
    assert {text for _, text in truth} >= set(expected)  # the generator still draws them
    remaining = iter(got)
    assert all(line in remaining for line in expected), got  # verbatim, top to bottom
    recovered = [text.strip() in got for _, text in truth]
    assert sum(recovered) >= 0.9 * len(truth)


def test_not_an_image_names_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "page_001.png"
    bad.write_text("not a picture")
    with pytest.raises(OCRError, match=r"page_001\.png.*not a readable image.*PNG, JPEG") as info:
        ocr_image(bad)
    assert isinstance(info.value, ValueError)
    with pytest.raises(OCRError, match=r"missing\.png.*not a readable image"):
        ocr_image(tmp_path / "missing.png")


def test_missing_engine_says_what_to_install(tmp_path, monkeypatch, scanned_page):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(OCRError, match=r"apt-get install -y tesseract-ocr tesseract-ocr-eng"):
        ocr_image(scanned_page[0])


@needs_tesseract
def test_missing_language_data_says_which_package(scanned_page):
    with pytest.raises(OCRError, match=r"apt-get install -y tesseract-ocr-chi-sim"):
        ocr_image(scanned_page[0], lang="chi_sim")
