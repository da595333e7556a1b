"""Service manuals (PDF, HTML, Markdown, text, scanned images) -> :class:`ManualBlock` records.

Every format is first read into the same list of :class:`Line` (text, page, table cells, heading
level); one segmenter then turns lines into blocks, so the rules are the same for every format:

- headings open sections (numbered ``2.1 Specifications`` or styled: bold/larger in PDF,
  ``#`` in Markdown, ``<h1>-<h6>`` in HTML) and build the section path;
- under a specifications heading each table row or "name value unit" line is one SPEC block that
  keeps name, value and unit together, with the table's heading in its section path;
- a titled group of numbered steps is a PROCEDURE; a titled table whose header names pins is
  WIRING; a title that is a fault code (P0117, U0100...) or a group listing causes is
  TROUBLESHOOTING; other prose is EXPLANATION.

Over 400 lines on purpose: the readers feed one segmenter, whose rules a reader should see
beside the lines they read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ingest.records import BlockKind, ManualBlock

TEXT_SUFFIXES = {".txt", ".text"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
SUPPORTED_SUFFIXES = {".pdf"} | TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | IMAGE_SUFFIXES

_NUMBERED_HEADING = re.compile(
    r"^(\d+(?:\.\d+)*)\s+([A-Z][^.:]{1,80})$"
)  # "2.1 Specs", not "1. Step"
_STEP = re.compile(r"^\s*(\d+)[.)]\s+\S")
_DTC = re.compile(r"^[PCBU][0-3][0-9A-F]{3}\b")
_UNIT = (
    r"(?:Nm|N·m|mm|cm|m|km|km/h|mph|L|l|mL|ml|g|kg|bar|kPa|psi|V|A|Ah|W|kW|ohm|kohm|Ω|kΩ|"
    r"°C|°F|°|rpm|%|min|s|h|years?|months?)"
)
_SPEC_LINE = re.compile(
    rf"^(?P<name>.+?)\s*(?::|\s{{2,}}|\|)?\s+(?P<value>-?\d[\d.,]*)\s*(?P<unit>{_UNIT})$"
)
_SPEC_HEADINGS = ("specification", "technical data", "tightening torque", "capacities")
_WIRING_HEADER = re.compile(r"\b(pin|terminal)\b", re.IGNORECASE)


class ManualError(ValueError):
    """A manual file that cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class Line:
    text: str
    page: int = 1
    cells: tuple[str, ...] = ()
    heading: int | None = None  # heading level (1 = top), None for body text


@dataclass
class _Group:
    """Lines under one title, waiting to become one or more blocks."""

    title: str
    section: tuple[str, ...]
    page: int
    lines: list[Line] = field(default_factory=list)


# ---- reading each format into lines ------------------------------------------------------------


def read_lines(path: Path) -> list[Line]:
    """Read any supported manual file into lines, or raise :class:`ManualError`."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ManualError(f"{path}: no such file.")
    if suffix not in SUPPORTED_SUFFIXES:
        raise ManualError(
            f"{path}: unsupported manual format {suffix or '(none)'}; "
            f"use one of {', '.join(sorted(SUPPORTED_SUFFIXES))}."
        )
    if path.stat().st_size == 0:
        raise ManualError(f"{path}: the file is empty.")
    if suffix == ".pdf":
        lines = _pdf_lines(path)
    elif suffix in IMAGE_SUFFIXES:
        from ingest.ocr import OCRError, ocr_image

        try:
            texts = ocr_image(path)
        except OCRError as exc:
            raise ManualError(str(exc)) from None
        lines = _infer_titles([_cells(text) for text in texts if text.strip()])
    else:
        text = _decode(path)
        if suffix in MARKDOWN_SUFFIXES:
            lines = _markdown_lines(text)
        elif suffix in HTML_SUFFIXES:
            lines = _html_lines(text)
        else:
            lines = _infer_titles([_cells(t) for t in text.splitlines()])
    if not any(line.text.strip() for line in lines):
        raise ManualError(
            f"{path}: no text found. A scanned PDF has no text layer: export its pages as PNG "
            "or JPEG images and ingest those, so that they go through OCR."
        )
    return lines


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManualError(
            f"{path}: not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}). "
            "Convert it, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`."
        ) from None


def _pdf_lines(path: Path) -> list[Line]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        # A PDF locked only against editing opens with the empty password.
        if reader.is_encrypted and not reader.decrypt(""):
            raise ManualError(
                f"{path}: the PDF needs a password to open; save an unencrypted copy first."
            )
        pages = list(reader.pages)
    except (PdfReadError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, ManualError):
            raise
        raise ManualError(f"{path}: not a readable PDF ({exc}); re-export or repair it.") from None
    lines: list[Line] = []
    for number, page in enumerate(pages, start=1):
        fragments: list[tuple[float, float, int, str, float, bool]] = []

        def visit(text, cm, tm, font, size, _into=fragments) -> None:
            if text.strip():
                # Page position = text matrix x current transformation matrix.
                x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
                y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
                a, b = tm[0] * cm[0] + tm[1] * cm[2], tm[0] * cm[1] + tm[1] * cm[3]
                c, d = tm[2] * cm[0] + tm[3] * cm[2], tm[2] * cm[1] + tm[3] * cm[3]
                scale = abs(a * d - b * c) ** 0.5 or 1.0
                bold = "bold" in str((font or {}).get("/BaseFont", "")).lower()
                # pypdf gives runs inside one text object the same position: keep their order.
                _into.append((-y, x, len(_into), text, float(size) * scale, bold))

        try:
            page.extract_text(visitor_text=visit)
        except Exception as exc:  # pypdf raises many types on damaged content streams
            raise ManualError(f"{path}: page {number} cannot be read ({exc}).") from None
        lines += _assemble_pdf_page(fragments, number)
    return lines


def _assemble_pdf_page(fragments, page: int) -> list[Line]:
    """Group text fragments into lines by baseline. On a line, a fragment that starts well
    after the previous one ends (estimated from its length) is a new table cell; one that
    follows on (a bold word inside a sentence) joins it."""
    rows: list[list[tuple[float, float, int, str, float, bool]]] = []
    for fragment in sorted(fragments):
        if rows and abs(rows[-1][0][0] - fragment[0]) < 2.0:
            rows[-1].append(fragment)
        else:
            rows.append([fragment])
    sizes = sorted(f[4] for f in fragments)
    body = sizes[len(sizes) // 2] if sizes else 10.0
    lines = []
    for row in rows:
        row.sort(key=lambda f: (f[1], f[2]))
        merged: list[list] = []
        for _, x, _, text, size, _bold in row:
            # Helvetica-like fonts average about half an em per character.
            if merged and x - merged[-1][1] < 1.5 * size:
                merged[-1][0] += text
            else:
                merged.append([text, x])
            merged[-1][1] = x + 0.5 * size * len(text)
        cells = tuple(" ".join(m[0].split()) for m in merged if m[0].strip())
        size, bold = max(f[4] for f in row), all(f[5] for f in row)
        heading = None
        if size > body * 1.5:
            heading = 1
        elif size > body * 1.2:
            heading = 2
        elif bold and len(cells) == 1:
            heading = 3
        lines.append(Line(" ".join(cells), page, cells if len(cells) > 1 else (), heading))
    return lines


def _cells(text: str) -> Line:
    """Tabs (OCR table gaps) or runs of 3+ spaces split a plain line into table cells."""
    cells = tuple(c.strip() for c in re.split(r"\t|\s{3,}", text.strip()) if c.strip())
    return Line(text.strip(), cells=cells if len(cells) > 1 else ())


_TITLE = re.compile(r"^[A-Z][^.:;,!?]{2,60}$")
_SENTENCE_END = (".", "!", "?")  # not ":": a line ending in a colon introduces a list


def _infer_titles(lines: list[Line]) -> list[Line]:
    """Plain text has no styles: a short capitalised line without end punctuation that follows
    a finished sentence, a table row or a heading, and is followed by content, is a title."""
    result = []
    for index, line in enumerate(lines):
        text = line.text.strip()
        previous = result[-1] if result else None
        after_break = (
            previous is None
            or not previous.text.strip()
            or bool(previous.cells)
            or previous.text.rstrip().endswith(_SENTENCE_END)
            or _NUMBERED_HEADING.match(previous.text.strip()) is not None
        )
        is_title = (
            after_break
            and not line.cells
            and _TITLE.match(text) is not None
            and len(text.split()) <= 9
            and not _STEP.match(text)
            and not _SPEC_LINE.match(text)
            and _NUMBERED_HEADING.match(text) is None
            and index + 1 < len(lines)
        )
        result.append(Line(line.text, line.page, line.cells, _INFERRED) if is_title else line)
    return result


# **x**, __x__, *x*, _x_ or `x` not inside a word (CommonMark: sensor_id is no emphasis).
_EMPHASIS = re.compile(r"(?<![\w*`])(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1(?![\w*`])")


def _markdown_lines(text: str) -> list[Line]:
    lines = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if match := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            lines.append(Line(match.group(2).strip(), heading=len(match.group(1))))
        elif stripped.startswith("|") and stripped.endswith("|"):
            cells = tuple(c.strip() for c in stripped.strip("|").split("|"))
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):  # skip | --- | rows
                lines.append(Line(" ".join(cells), cells=cells))
        else:  # paired emphasis and code markers and quote marks are formatting, not content
            lines.append(Line(_EMPHASIS.sub(r"\2", stripped.lstrip("> "))))
    return lines


_HTML_WHOLE = {"h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "pre", "dt", "dd"}
_HTML_BLOCKS = _HTML_WHOLE | {"p", "div", "section", "article", "blockquote", "td", "th", "table",
                              "ul", "ol", "main", "body", "header", "figure", "figcaption"}  # fmt: skip


def _html_lines(text: str) -> list[Line]:
    """Headings, list items and table rows are read whole; other block elements contribute
    the text that sits directly in them (so nested blocks are neither lost nor read twice)."""
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "nav", "footer", "noscript", "template"]):
        tag.decompose()
    lines: list[Line] = []
    for element in soup.find_all(_HTML_BLOCKS):
        if any(parent.name in _HTML_WHOLE for parent in element.parents):
            continue  # read as part of its heading, list item or row
        if element.name == "tr":
            cells = tuple(c.get_text(" ", strip=True) for c in element.find_all(["td", "th"]))
            lines.append(Line(" ".join(cells), cells=cells))
        elif element.name == "li":
            index = len(element.find_previous_siblings("li")) + 1
            ordered = element.parent is not None and element.parent.name == "ol"
            prefix = f"{index}. " if ordered else "- "
            lines.append(Line(prefix + element.get_text(" ", strip=True)))
        elif element.name in _HTML_WHOLE and element.name.startswith("h"):
            lines.append(Line(element.get_text(" ", strip=True), heading=int(element.name[1])))
        elif element.name in _HTML_WHOLE:
            lines += [Line(t) for t in element.get_text("\n", strip=True).splitlines()]
        else:
            parts = [
                str(child) if isinstance(child, NavigableString) else child.get_text(" ")
                for child in element.children
                if isinstance(child, NavigableString) or child.name not in _HTML_BLOCKS
            ]
            own = " ".join(" ".join(parts).split())
            if own:
                lines += [Line(own), Line("")]
    return lines


# ---- segmentation --------------------------------------------------------------------------


def segment(lines: Iterable[Line], source: str) -> list[ManualBlock]:
    """Turn lines into blocks with stable ids (source, section path, title, occurrence)."""
    blocks: list[ManualBlock] = []
    seen: dict[str, int] = {}
    for group in _groups(lines):
        for kind, title, body, section in _classify(group):
            text = "\n".join(part for part in (title, *body) if part)
            key = "\x1f".join((source, *section, title or body[0]))
            seen[key] = seen.get(key, 0) + 1
            digest = hashlib.sha1(f"{key}\x1f{seen[key]}".encode()).hexdigest()[:16]
            blocks.append(ManualBlock(digest, source, group.page, section, kind, text))
    return blocks


_INFERRED = 9  # level of titles found in unstyled text: below any numbered section


def _heading_of(line: Line) -> tuple[int, str] | None:
    """(level, text) if the line is a heading: styled (its level), numbered (its depth), or a
    bare fault code in unstyled text."""
    text = line.text.strip()
    if not text or line.cells or _STEP.match(text):
        return None
    if line.heading is not None:
        return line.heading, text
    match = _NUMBERED_HEADING.match(text)
    if match and not _SPEC_LINE.match(text):
        return match.group(1).count(".") + 1, text
    if _DTC.match(text):
        return _INFERRED, text
    return None


def _groups(lines: Iterable[Line]) -> Iterator[_Group]:
    """Content under each heading; a heading's ancestors form the group's section path.

    A heading with no content of its own (a chapter title right before a section title) makes
    no block: it lives on in the section path of the blocks below it.
    """
    path: list[tuple[int, str]] = []
    group = _Group("", (), 1)
    for line in lines:
        heading = _heading_of(line)
        if heading is None:
            group.lines.append(line)
            continue
        if group.lines:
            yield group
        level, text = heading
        while path and path[-1][0] >= level:
            path.pop()
        group = _Group(text, tuple(t for _, t in path), line.page)
        path.append((level, text))
    if group.lines:
        yield group


def _classify(group: _Group) -> Iterator[tuple[BlockKind, str, list[str], tuple[str, ...]]]:
    content = [line for line in group.lines if line.text.strip()]
    if not content:
        return
    headings = (*group.section[-1:], group.title)
    under_specs = any(h in s.lower() for s in headings for h in _SPEC_HEADINGS)
    spec_rows = [_spec_row(line) for line in content]
    if under_specs and any(spec_rows):
        rest = []
        spec_section = (*group.section, group.title) if group.title else group.section
        for index, (line, row) in enumerate(zip(content, spec_rows, strict=True)):
            if row:
                yield "SPEC", "", [f"{row[0]}: {row[1]}"], spec_section
            elif not (index == 0 and line.cells):  # a table's header row is not content
                rest.append(line)
        content = rest
        if not content:
            return
    texts = [_render(line) for line in content]
    title = group.title
    if any(line.cells for line in content) and _WIRING_HEADER.search(content[0].text):
        yield "WIRING", title, texts, group.section
    elif _DTC.match(title) or any(t.lower().startswith("possible causes") for t in texts):
        yield "TROUBLESHOOTING", title, _join_wrapped(texts, _STEP), group.section
    elif sum(bool(_STEP.match(t)) for t in texts) >= 2:
        yield "PROCEDURE", title, _join_wrapped(texts, _STEP), group.section
    else:
        yield "EXPLANATION", title, [" ".join(texts)], group.section


def _spec_row(line: Line) -> tuple[str, str] | None:
    if len(line.cells) >= 2:
        name, value = line.cells[0], " ".join(line.cells[1:])
        if re.match(r"^-?\d", value):
            return name, value
    if match := _SPEC_LINE.match(line.text.strip()):
        return match.group("name").rstrip(" :"), f"{match.group('value')} {match.group('unit')}"
    return None


def _render(line: Line) -> str:
    return " | ".join(line.cells) if line.cells else line.text.strip()


def _join_wrapped(texts: list[str], starts: re.Pattern[str]) -> list[str]:
    """Join lines that a PDF or OCR wrapped back onto the step (or item) they continue."""
    joined: list[str] = []
    for text in texts:
        if (
            joined
            and not starts.match(text)
            and not text.endswith(":")
            and not text.startswith("-")
        ):
            joined[-1] += " " + text
        else:
            joined.append(text)
    return joined


# ---- files ---------------------------------------------------------------------------------


def parse_manual(path: Path, source: str | None = None) -> list[ManualBlock]:
    """Read and segment one manual file; ``source`` defaults to the file name."""
    return segment(read_lines(path), source or path.name)


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories into the supported files below them (sorted, so ingest is stable)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES)
        else:
            files.append(path)
    return files


# ---- evaluation against ground truth -------------------------------------------------------


def kind_scores(predicted: list[ManualBlock], truth: list[ManualBlock]) -> dict[str, dict]:
    """Per-kind precision and recall of block kinds, matching blocks by their words.

    A predicted block matches the ground-truth block that shares the most words with it
    (Jaccard >= 0.5); a match of the same kind counts as correct for both precision and recall.
    """

    def words(block: ManualBlock) -> frozenset[str]:
        return frozenset(re.findall(r"[a-z0-9]+(?:[.,][0-9]+)?", block.text.lower()))

    truth_words = [(t, words(t)) for t in truth]
    matched: dict[str, str] = {}  # truth id -> predicted kind
    correct_predicted: dict[str, int] = {}
    for block in predicted:
        mine = words(block)
        best, best_score = None, 0.5
        for candidate, theirs in truth_words:
            union = len(mine | theirs)
            score = len(mine & theirs) / union if union else 0.0
            if score >= best_score:
                best, best_score = candidate, score
        if best is not None and best.kind == block.kind:
            correct_predicted[block.kind] = correct_predicted.get(block.kind, 0) + 1
            matched[best.id] = block.kind
    scores = {}
    for kind in sorted({b.kind for b in truth} | {b.kind for b in predicted}):
        n_pred = sum(b.kind == kind for b in predicted)
        n_true = sum(b.kind == kind for b in truth)
        found = sum(1 for t in truth if t.kind == kind and matched.get(t.id) == kind)
        scores[kind] = {
            "predicted": n_pred,
            "truth": n_true,
            "precision": round(correct_predicted.get(kind, 0) / n_pred, 3) if n_pred else 0.0,
            "recall": round(found / n_true, 3) if n_true else 0.0,
        }
    return scores


def kind_scores_against(blocks: list[ManualBlock], truth_file: Path) -> dict[str, dict]:
    """:func:`kind_scores` of ``blocks`` against the ground-truth ``blocks.jsonl`` of the pages
    they came from; :class:`ManualError` when the file is not a blocks.jsonl."""
    import json

    try:
        truth = [
            ManualBlock.from_dict(json.loads(line))
            for line in truth_file.read_text("utf-8").splitlines()
            if line.strip()
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ManualError(f"{truth_file}: not a blocks.jsonl file ({exc})") from None
    pages = {b.page for b in blocks}
    return kind_scores(blocks, [t for t in truth if t.page in pages])
