"""OCR of scanned service-manual pages with Tesseract 5 (the Debian ``tesseract-ocr`` package).

Why Tesseract is the default offline engine, measured on the 10 demo scans (grey 1240x1754,
rotated up to 1.2 degrees, blurred, noisy) on the 2-core CPU machine:

================================  =====================  ==========================
                                  tesseract 5.3 --psm 4  RapidOCR 3.10 (PP-OCRv6 s)
================================  =====================  ==========================
character error rate              0.24 %                 5.9 %
word recall (ground-truth blocks) 99.2 %                 92.4 %
numbers with units kept           58 / 58                57 / 58
lines found, in reading order     100 %                  96 %
seconds per page                  0.78                   3.3
install                           apt 24 MB (+ libs)     pip ~275 MB (onnxruntime, OpenCV)
================================  =====================  ==========================

``rapidocr-onnxruntime`` 1.4.4 (PP-OCRv4 models in the wheel) is worse still: it drops the
spaces between English words (word recall 9 %). Tesseract keeps headings, numbered steps and
table rows as separate lines, top to bottom; its own deskew is enough (pre-rotating the page
changed nothing but the time). Run single-threaded: with OpenMP on 2 cores a page takes 2.7 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["OCRError", "ocr_image"]

_INSTALL = "apt-get install -y tesseract-ocr tesseract-ocr-eng"
_COLUMN_GAP = 1.5  # a gap wider than 1.5 line heights separates table cells (words: < 0.7)


class OCRError(ValueError):
    """A page image could not be OCR'd; the message names the file and the fix."""


def ocr_image(path: Path, *, lang: str = "eng", timeout_s: float = 120.0) -> list[str]:
    """The text lines of a scanned page, top to bottom; table cells are joined by a tab.

    Leading indentation is not kept: a wrapped line continues the one before it.
    """
    from io import BytesIO

    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as image:
            png = BytesIO()
            image.convert("L").save(png, format="PNG", compress_level=0)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise OCRError(
            f"cannot OCR {path}: not a readable image ({exc}); pass a PNG, JPEG, TIFF or WebP scan"
        ) from exc
    exe = shutil.which("tesseract")
    if exe is None:
        raise OCRError(
            f"cannot OCR {path}: the `tesseract` program is not installed; "
            f"install Tesseract 5 with `{_INSTALL}` (Debian/Ubuntu)"
        )
    try:
        proc = subprocess.run(
            [exe, "stdin", "stdout", "--psm", "4", "-l", lang, "tsv"],
            input=png.getvalue(),
            capture_output=True,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OCRError(f"tesseract took over {timeout_s:.0f} s on {path}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        if "Failed loading language" in err:
            package = "tesseract-ocr-" + lang.lower().replace("_", "-")
            raise OCRError(
                f"cannot OCR {path}: Tesseract has no '{lang}' language data; "
                f"install it with `apt-get install -y {package}`"
            )
        raise OCRError(f"tesseract failed on {path}: {err[-500:]}")
    return _lines_from_tsv(proc.stdout.decode("utf-8", errors="replace"))


def _lines_from_tsv(tsv: str) -> list[str]:
    """Join Tesseract's TSV words into lines; a wide gap between words becomes a tab."""
    lines: dict[tuple[str, str, str], list[str]] = {}
    heights: dict[tuple[str, str, str], int] = {}
    ends: dict[tuple[str, str, str], int] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t", 11)
        if len(cols) < 12:
            continue
        key = (cols[2], cols[3], cols[4])  # block, paragraph, line
        left, width, height, text = int(cols[6]), int(cols[8]), int(cols[9]), cols[11].strip()
        if cols[0] == "4":
            heights[key] = height
        elif cols[0] == "5" and text:
            words = lines.setdefault(key, [])
            if words:
                wide = left - ends[key] > _COLUMN_GAP * heights.get(key, height)
                words.append("\t" if wide else " ")
            words.append(text)
            ends[key] = left + width
    return ["".join(words) for words in lines.values()]
