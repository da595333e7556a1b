"""The synthetic service manual: content, Markdown, PDF, scanned page images and QA pairs.

The manual is built once as a list of :class:`Item` (one per ground-truth block), then rendered
three ways from the same items so the ground truth (``blocks.jsonl``) matches every rendering:
Markdown, a PDF whose page numbers are recorded per block, and PNG "scans" of chosen PDF pages.

Over 400 lines on purpose: the items and their three renderings must stay in step, so they
are kept in one place.
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ingest.demo.vehicle import MAKER, MODEL_YEAR, SYSTEMS, VEHICLE, Component, System
from ingest.records import BlockKind, ManualBlock, QAPair, Split

SOURCE = "vehicle_manual.pdf"
_FIXED_DATE = datetime(2025, 1, 1, tzinfo=UTC)
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# Question templates per kind and split. Test phrasings share no template with train or val,
# so a model that only memorised the training questions' wording gets no help on the test set.
QUESTION_TEMPLATES: dict[BlockKind, dict[Split, tuple[str, ...]]] = {
    "SPEC": {
        "train": ("What is the {x} for the {v}?", "What is the {x}?"),
        "val": ("Give me the {x}.",),
        "test": (
            "I'm working on a {v}: what does the manual specify for {x}?",
            "Which value should I use for {x}?",
        ),
    },
    "PROCEDURE": {
        "train": (
            "How do I remove and install the {x}?",
            "What is the procedure to replace the {x}?",
        ),
        "val": ("Walk me through replacing the {x}.",),
        "test": (
            "List the steps for taking out and refitting the {x} on the {v}.",
            "I need to swap the {x}; which steps does the manual give?",
        ),
    },
    "EXPLANATION": {
        "train": ("How does the {x} work?", "Explain the {x}."),
        "val": ("Describe the {x}.",),
        "test": (
            "What job does the {x} do, and how does it do it?",
            "Can you give me an overview of the {x}'s operation on the {v}?",
        ),
    },
    "WIRING": {
        "train": (
            "Which circuit and wire colour is on pin {p} of connector {x}?",
            "What is pin {p} of connector {x}?",
        ),
        "val": ("Tell me the wire colour at connector {x} pin {p}.",),
        "test": (
            "On the {c} connector ({x}), what does terminal {p} carry and what colour is its wire?",
            "Terminal {p} at {x}: which circuit is it and how is the wire coloured?",
        ),
    },
    "TROUBLESHOOTING": {
        "train": ("What does fault code {x} mean?", "How do I diagnose {x}?"),
        "val": ("Explain DTC {x}.",),
        "test": (
            "My scan tool shows {x}. What could cause it and what should I check?",
            "The {v} has {x} stored; what are the likely causes?",
        ),
    },
}

WIRE_COLOURS = (
    "black",
    "brown",
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "violet",
    "grey",
    "white",
    "black/white",
    "red/black",
    "yellow/green",
    "blue/white",
    "brown/yellow",
    "green/red",
)

_VERIFY = {
    "CO": "Fill and bleed the cooling system, run the engine to operating temperature and check "
    "for leaks.",
    "BR": "Pump the brake pedal until it is firm, check the fluid level and road test the vehicle.",
    "SU": "Check and adjust the wheel alignment.",
    "ST": "Calibrate the steering angle sensor and check the wheel alignment.",
    "SR": "Reconnect the battery with nobody in the vehicle and check that the airbag warning "
    "lamp goes out.",
    "AC": "Evacuate and recharge the refrigerant circuit, then check the outlet temperature.",
    "TR": "Check the fluid level at the specified temperature and run the adaptation routine.",
}
_DEFAULT_VERIFY = "Clear any stored fault codes and road test the vehicle."


@dataclass
class Item:
    """One ground-truth block plus what is needed to render it and ask about it."""

    id: str
    kind: BlockKind
    chapter: str
    section: str
    title: str
    lines: list[str]
    table: list[tuple[str, ...]] = field(default_factory=list)  # wiring rows, header first
    subject: str = ""  # what questions name ({x})
    detail: dict[str, str] = field(default_factory=dict)  # extra template fields
    answer: str = ""
    page: int = 0

    @property
    def text(self) -> str:
        body = [*self.lines, *(" | ".join(row) for row in self.table)]
        return "\n".join([self.title, *body]) if self.title else "\n".join(body)


@dataclass
class Chapter:
    number: int
    system: System
    items: list[Item]


def build_manual(rng: random.Random) -> list[Chapter]:
    """Draw every value of the manual from ``rng``; the same seed gives the same manual."""
    chapters = []
    used_codes: set[str] = set()
    for number, system in enumerate(SYSTEMS, start=1):
        chapter = f"{number} {system.name}"
        builder = _ChapterBuilder(system, chapter, rng, used_codes)
        chapters.append(Chapter(number, system, builder.build()))
    return chapters


class _ChapterBuilder:
    def __init__(self, system: System, chapter: str, rng: random.Random, used: set[str]) -> None:
        self.system, self.chapter, self.rng, self.used_codes = system, chapter, rng, used
        self.items: list[Item] = []
        self.torque: dict[str, str] = {}
        self.connector: dict[str, str] = {}
        self.resistance: dict[str, str] = {}

    def build(self) -> list[Item]:
        self._specs()
        self._explanations()
        self._wiring()
        self._procedures()
        self._troubleshooting()
        return self.items

    def _add(self, kind: BlockKind, section: str, title: str, lines: list[str], **kw) -> Item:
        n = sum(1 for i in self.items if i.kind == kind) + 1
        item = Item(
            f"{self.system.code}-{kind[:4]}-{n:02d}",
            kind,
            self.chapter,
            section,
            title,
            lines,
            **kw,
        )
        self.items.append(item)
        return item

    def _draw(self, low: float, high: float, step: float) -> str:
        steps = round((high - low) / step)
        value = low + step * self.rng.randint(0, steps)
        decimals = len(f"{step:g}".split(".")[1]) if "." in f"{step:g}" else 0
        return f"{value:.{decimals}f}"

    def _spec(self, name: str, value: str, unit: str) -> None:
        self._add(
            "SPEC",
            "Specifications",
            "",
            [f"{name}: {value} {unit}"],
            subject=_lower_first(name),
            answer=f"{value} {unit}",
        )

    def _specs(self) -> None:
        for spec in self.system.specs:
            self._spec(spec.name, self._draw(spec.low, spec.high, spec.step), spec.unit)
        for comp in self.system.components:
            torque = self._draw(6, 60, 1) if comp.electrical else self._draw(18, 110, 2)
            self.torque[comp.name] = torque
            self._spec(f"{_cap(comp.name)} mounting bolt torque", torque, "Nm")
            if comp.electrical and _role(comp) != "module":
                ohms = self._draw(0.5, 12.0, 0.1) if _role(comp) == "actuator" else None
                value, unit = (ohms, "ohm") if ohms else (self._draw(1.0, 9.0, 0.1), "kohm")
                self.resistance[comp.name] = f"{value} {unit}"
                self._spec(f"{_cap(comp.name)} resistance between pins 1 and 2", value, unit)

    def _explanations(self) -> None:
        names = [c.name for c in self.system.components]
        overview = (
            f"The {self.system.name.lower()} system of the {VEHICLE} consists of the "
            f"{', '.join(names[:-1])} and {names[-1]}. Faults in its electrical components are "
            "stored as diagnostic trouble codes that can be read with a scan tool, and the "
            "troubleshooting section of this chapter lists the causes and checks for each code."
        )
        subject = f"{self.system.name.lower()} system"
        self._add(
            "EXPLANATION",
            "Description and operation",
            f"{self.system.name} - overview",
            [overview],
            subject=subject,
            answer=overview,
        )
        for comp in self.system.components:
            self.connector[comp.name] = f"{self.system.code}-C{len(self.connector) + 1}"
            text = comp.function
            if comp.electrical:
                text += (
                    f" It connects to the wiring harness at connector {self.connector[comp.name]}; "
                    "the wiring table gives its pin assignment."
                )
            text += f" To reach it, remove the {comp.access}."
            self._add(
                "EXPLANATION",
                "Description and operation",
                f"{_cap(comp.name)} - description and operation",
                [text],
                subject=comp.name,
                answer=text,
            )

    def _wiring(self) -> None:
        fuse = self.rng.randint(1, 60)
        for comp in self.system.components:
            if not comp.electrical:
                continue
            conn = self.connector[comp.name]
            circuits = {
                "sensor": ["5 V reference", "signal", "sensor ground"],
                "actuator": [
                    f"B+ supply (fuse F{fuse}, {self.rng.choice((10, 15, 20))} A)",
                    "control (low side)",
                    f"ground G{self.rng.randint(100, 199)}",
                ],
                "module": [
                    f"B+ supply (fuse F{fuse})",
                    "ignition feed",
                    "ground",
                    "CAN high",
                    "CAN low",
                    "wake-up line",
                ],
            }[_role(comp)]
            colours = self.rng.sample(WIRE_COLOURS, len(circuits))
            rows = [("Pin", "Circuit", "Wire colour")]
            rows += [
                (str(i), c, col)
                for i, (c, col) in enumerate(zip(circuits, colours, strict=False), 1)
            ]
            pin = self.rng.randint(1, len(circuits))
            _, circuit, colour = rows[pin]
            answer = f"Pin {pin} of connector {conn} ({comp.name}) is {circuit}, {colour} wire."
            self._add(
                "WIRING",
                "Wiring",
                f"Connector {conn} - {comp.name}",
                [],
                table=rows,
                subject=conn,
                detail={"p": str(pin), "c": comp.name},
                answer=answer,
            )
            fuse = fuse % 60 + 1

    def _procedures(self) -> None:
        for comp in self.system.components:
            conn = self.connector[comp.name]
            bolts, size = self.rng.randint(2, 6), self.rng.choice((8, 10, 13, 15))
            steps = []
            if comp.electrical or self.system.code in ("SR", "CH"):
                steps.append("Switch the ignition off and disconnect the negative battery cable.")
            if self.system.code == "SR":
                steps.append("Wait for the time given in the specifications before continuing.")
            steps.append(f"Remove the {comp.access}.")
            if comp.electrical:
                steps.append(f"Disconnect connector {conn} from the {comp.name}.")
            steps.append(
                f"Remove the {bolts} mounting bolts ({size} mm) and take out the {comp.name}."
            )
            steps.append(
                f"Inspect the {comp.name} and its seals for damage, corrosion or wear; "
                "renew self-locking bolts."
            )
            steps.append(
                f"Install the {comp.name} and tighten the mounting bolts to "
                f"{self.torque[comp.name]} Nm."
            )
            if comp.electrical:
                steps.append(f"Reconnect connector {conn} and check that the locking tab engages.")
            steps.append(f"Refit the {comp.access}.")
            steps.append(_VERIFY.get(self.system.code, _DEFAULT_VERIFY))
            numbered = [f"{i}. {s}" for i, s in enumerate(steps, 1)]
            self._add(
                "PROCEDURE",
                "Procedures",
                f"{_cap(comp.name)} - removal and installation",
                numbered,
                subject=comp.name,
                answer="\n".join(numbered),
            )

    def _troubleshooting(self) -> None:
        faults = {
            "sensor": ("circuit low", "circuit high"),
            "actuator": ("circuit open", "performance"),
            "module": ("internal fault", "lost communication"),
        }
        for comp in self.system.components:
            if not comp.electrical:
                continue
            conn = self.connector[comp.name]
            for fault in faults[_role(comp)]:
                code = self._dtc_code("U" if fault == "lost communication" else None)
                desc = f"{_cap(comp.name)} {fault}"
                causes = [
                    f"Open or short circuit in the wiring to connector {conn}",
                    f"Corroded or loose terminals at connector {conn}",
                    f"Faulty {comp.name}",
                ]
                checks = [f"Inspect connector {conn} for damage, corrosion and pushed-back pins."]
                if comp.name in self.resistance:
                    checks.append(
                        f"Measure the resistance between pins 1 and 2 of the "
                        f"{comp.name}: specified {self.resistance[comp.name]}."
                    )
                checks.append(
                    f"With the ignition on, check for battery voltage at pin 1 of connector {conn}."
                )
                checks.append(f"If the wiring and connector are good, replace the {comp.name}.")
                lines = ["Possible causes:", *(f"- {c}" for c in causes), "Checks:"]
                lines += [f"{i}. {c}" for i, c in enumerate(checks, 1)]
                answer = (
                    f"{code}: {desc}. Possible causes: {'; '.join(causes).lower()}. "
                    f"Checks: {' '.join(checks)}"
                )
                self._add(
                    "TROUBLESHOOTING",
                    "Troubleshooting",
                    f"{code} - {desc}",
                    lines,
                    subject=code,
                    answer=answer,
                )

    def _dtc_code(self, prefix: str | None) -> str:
        while True:
            code = f"{prefix or self.system.dtc_prefix}{self.rng.randint(0, 3)}" + (
                f"{self.rng.randint(0, 999):03d}"
            )
            if code not in self.used_codes:
                self.used_codes.add(code)
                return code


def _role(comp: Component) -> str:
    if "module" in comp.name:
        return "module"
    if "sensor" in comp.name or "switch" in comp.name:
        return "sensor"
    return "actuator"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    # Keep acronyms and units as written: only lower a capitalised ordinary first word.
    first = text.split(" ", 1)[0]
    return text if first.isupper() else text[:1].lower() + text[1:]


# ---- QA pairs ------------------------------------------------------------------------------


def make_qa_pairs(chapters: list[Chapter], rng: random.Random) -> list[QAPair]:
    """One question per block and split, each split drawing from its own phrasings."""
    pairs = []
    for item in (i for ch in chapters for i in ch.items):
        fields = {"x": item.subject, "v": VEHICLE, **item.detail}
        for split in SPLITS:
            template = rng.choice(QUESTION_TEMPLATES[item.kind][split])
            pairs.append(
                QAPair(
                    f"{item.id}-{split}",
                    item.id,
                    item.kind,
                    split,
                    template.format(**fields),
                    item.answer,
                )
            )
    return pairs


def blocks(chapters: list[Chapter]) -> list[ManualBlock]:
    return [
        ManualBlock(item.id, SOURCE, item.page, (item.chapter, item.section), item.kind, item.text)
        for ch in chapters
        for item in ch.items
    ]


# ---- rendering -----------------------------------------------------------------------------

_SECTION_ORDER = (
    "Specifications",
    "Description and operation",
    "Wiring",
    "Procedures",
    "Troubleshooting",
)
TITLE = f"{VEHICLE} ({MODEL_YEAR}) Service Manual"
DISCLAIMER = (
    f"Synthetic demo data generated by tunegraph. {MAKER} and the {VEHICLE} are fictional; "
    "no value in this manual applies to a real vehicle."
)


def _sections(chapter: Chapter) -> list[tuple[str, list[Item]]]:
    return [
        (f"{chapter.number}.{n} {name}", [i for i in chapter.items if i.section == name])
        for n, name in enumerate(_SECTION_ORDER, 1)
    ]


def render_markdown(chapters: list[Chapter]) -> str:
    out = [f"# {TITLE}", "", f"> {DISCLAIMER}", ""]
    for ch in chapters:
        out += [f"## {ch.number} {ch.system.name}", ""]
        for heading, items in _sections(ch):
            out += [f"### {heading}", ""]
            if items and items[0].kind == "SPEC":
                out += ["| Item | Value |", "| --- | --- |"]
                out += ["| {} | {} |".format(*i.lines[0].split(": ", 1)) for i in items]
                out.append("")
                continue
            for item in items:
                out += [f"#### {item.title}", ""]
                if item.table:
                    out.append("| " + " | ".join(item.table[0]) + " |")
                    out.append("|" + " --- |" * len(item.table[0]))
                    out += ["| " + " | ".join(row) + " |" for row in item.table[1:]]
                else:
                    out += item.lines
                out.append("")
    return "\n".join(out)


def render_pdf(chapters: list[Chapter], path: Path) -> int:
    """Write the PDF, set each item's ``page``, and return the page count."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creation_date(_FIXED_DATE)  # deterministic bytes for a given seed
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_title(TITLE)
    pdf.set_author(MAKER)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 22)
    pdf.multi_cell(0, 12, TITLE, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(0, 6, DISCLAIMER, new_x="LMARGIN", new_y="NEXT")
    for ch in chapters:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.cell(0, 10, f"{ch.number} {ch.system.name}", new_x="LMARGIN", new_y="NEXT")
        for heading, items in _sections(ch):
            _ensure_space(pdf, 24)
            pdf.set_font("Helvetica", "B", 13)
            pdf.cell(0, 9, heading, new_x="LMARGIN", new_y="NEXT")
            for item in items:
                _pdf_item(pdf, item)
    pdf.output(str(path))
    return pdf.page_no()


def _ensure_space(pdf, height: float) -> None:
    if pdf.get_y() + height > pdf.h - pdf.b_margin:
        pdf.add_page()


def _pdf_item(pdf, item: Item) -> None:
    if item.kind == "SPEC":
        _ensure_space(pdf, 6)
        item.page = pdf.page_no()
        name, value = item.lines[0].split(": ", 1)
        pdf.set_font("Helvetica", "", 10)
        pdf.cell(120, 6, name, border="B")
        pdf.cell(0, 6, value, border="B", new_x="LMARGIN", new_y="NEXT")
        return
    _ensure_space(pdf, 7 * min(len(item.lines) + len(item.table) + 1, 6))
    item.page = pdf.page_no()
    pdf.set_font("Helvetica", "B", 11)
    pdf.multi_cell(0, 7, item.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    for line in item.lines:
        pdf.multi_cell(0, 5.5, line, new_x="LMARGIN", new_y="NEXT")
    for row_number, row in enumerate(item.table):
        pdf.set_font("Helvetica", "B" if row_number == 0 else "", 10)
        for text, width in zip(row, (15, 95, 0), strict=False):
            pdf.cell(width, 6, text, border=1, new_x="RIGHT", new_y="TOP")
        pdf.ln(6)
    pdf.ln(2)


def page_lines(chapters: list[Chapter], page: int) -> list[tuple[str, str]]:
    """(style, text) lines of one PDF page's content, for rendering a scan of that page."""
    lines: list[tuple[str, str]] = []
    for ch in chapters:
        on_page = [i for i in ch.items if i.page == page]
        if not on_page:
            continue
        if on_page[0] is ch.items[0]:
            lines.append(("h1", f"{ch.number} {ch.system.name}"))
        for heading, items in _sections(ch):
            shown = [i for i in items if i.page == page]
            if shown and shown[0] is items[0]:
                lines.append(("h2", heading))
            for item in shown:
                if item.title:
                    lines.append(("h3", item.title))
                lines += [("body", part) for line in item.lines for part in _wrap(line)]
                lines += [("row", "\t".join(row)) for row in item.table]
    return lines


def _wrap(line: str) -> list[str]:
    return textwrap.wrap(line, 92, subsequent_indent="   ") or [""]


def render_scan(lines: list[tuple[str, str]], page: int, rng: random.Random, path: Path) -> None:
    """Draw a page's lines as a slightly rotated, noisy, blurred grey-scale 'scan'."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    sizes = {"h1": 34, "h2": 28, "h3": 24, "body": 21, "row": 21}
    fonts = {style: ImageFont.load_default(size=size) for style, size in sizes.items()}
    height = max(1754, 120 + sum(int(sizes[s] * 1.45) for s, _ in lines) + 80)
    image = Image.new("L", (1240, height), 246)
    draw = ImageDraw.Draw(image)
    y = 100
    for style, text in lines:
        for x, cell in zip(
            (90, 190, 640), text.split("\t"), strict=False
        ):  # table cells in fixed columns
            draw.text((x, y), cell, fill=22, font=fonts[style])
        y += int(sizes[style] * 1.45)
    draw.text((600, height - 70), str(page), fill=22, font=fonts["body"])
    image = image.rotate(rng.uniform(-1.2, 1.2), resample=Image.BICUBIC, fillcolor=250)
    image = image.filter(ImageFilter.GaussianBlur(0.7))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 9, (height, 1240))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path, optimize=False)
