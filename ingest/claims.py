"""Claims CSV/JSONL -> :class:`Claim` records, with a per-row report of what was rejected.

Columns are matched by name after an optional mapping (``{"policy_id": "policy_number"}`` reads
tunegraph's ``policy_id`` from the file's ``policy_number`` column). Dates are parsed with the
format that fits a column's values (ISO, day-first, month-first...); when day-first and
month-first both fit every value, day-first is assumed and the summary says so.

The enumerated fields (part, damage type, severity, fraud flag) are read in the file's own
vocabulary: first through the user's value maps (``{"severity": {"Lvl 3": "severe"}}``), then
through the built-in synonyms (:mod:`ingest.taxonomy`: "High", "major", "total loss" -> severe).
A value neither knows keeps its claim, as written, and is counted in the summary's warnings;
with ``strict`` it rejects the row instead. A bad key value (id, policy, VIN, date, amount)
always rejects its row, and a rejected row lists every problem it has; nothing is silently
coerced.

Over 400 lines on purpose: it is the one reader of a claims file; the column map, the value maps,
the date-format detection and the row checks all feed one :class:`ClaimsReport`, and each rule sits
beside what the report says when it rejects or translates a value.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ingest.jsonl import parse_lines
from ingest.taxonomy import (
    DAMAGE_VOCABULARY,
    PART_VOCABULARY,
    SEVERITY_VOCABULARY,
    Vocabulary,
)

REQUIRED = (
    "claim_id",
    "policy_id",
    "vin",
    "incident_date",
    "description",
    "part",
    "damage_type",
    "severity",
    "amount",
)
OPTIONAL = ("policy_start", "fraud", "photo_paths")
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y", "%Y%m%d")
_VIN = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
_AMOUNT = re.compile(r"^-?(\d+|\d{1,3}(,\d{3})+)(\.\d+)?$")
FRAUD_VOCABULARY = Vocabulary(
    "fraud",
    ("true", "false"),
    {
        "true": ("y", "yes", "t", "1", "1.0", "suspected", "suspect", "suspicious", "fraud",
                 "fraudulent", "flagged", "flag", "confirmed", "x"),
        "false": ("n", "no", "f", "0", "0.0", "none", "clean", "legit", "legitimate", "genuine",
                  "not suspected", "no fraud", "not fraud", "not fraudulent", "unflagged", "ok"),
    },
)  # fmt: skip
# The fields written in a vocabulary: a value map or synonym translates them, and an unknown
# value keeps its claim (unless strict). Every other field is a key or free text.
VOCABULARIES: dict[str, Vocabulary] = {
    "part": PART_VOCABULARY,
    "damage_type": DAMAGE_VOCABULARY,
    "severity": SEVERITY_VOCABULARY,
    "fraud": FRAUD_VOCABULARY,
}


class ClaimsError(ValueError):
    """The file as a whole cannot be read (missing columns, encoding...); names the fix."""


class ValueMapError(ClaimsError):
    """A value map (``--values``, ``--values-file``) is malformed or maps to no valid value;
    raised before any row is read, naming the field, the value and the valid ones."""


@dataclass(frozen=True)
class Claim:
    """One claim. ``unmapped``: the enumerated fields whose value no value map or synonym
    knows, with the value as written; such a field holds that value (``fraud``: None)."""

    claim_id: str
    policy_id: str
    vin: str
    incident_date: date
    description: str
    part: str
    damage_type: str
    severity: str
    amount: float
    policy_start: date | None = None
    fraud: bool | None = None
    photo_paths: tuple[str, ...] = ()
    unmapped: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Rejection:
    row: int  # spreadsheet row for CSV (header = 1), line number for JSONL
    problems: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)


@dataclass
class ClaimsReport:
    source: str
    claims: list[Claim] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    date_formats: dict[str, str] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # field -> value as written -> claims kept with it (in no vocabulary, not strict)
    warnings: dict[str, Counter[str]] = field(default_factory=dict)
    # field -> value as written -> the value a value map or synonym read it as
    translated: dict[str, dict[str, str]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ingested": len(self.claims),
            "rejected": [
                {"row": r.row, "reason": r.reason, "problems": list(r.problems)}
                for r in self.rejected
            ],
            "date_formats": self.date_formats,
            "ignored_columns": self.ignored_columns,
            "notes": self.notes,
            "warnings": {f: dict(c.most_common()) for f, c in self.warnings.items()},
            "translated": self.translated,
        }


def parse_mapping(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["policy_id=policy_number,incident_date=date"]`` -> ``{"policy_id": "policy_number", ...}``.

    >>> parse_mapping(["policy_id=policy_number,incident_date=date"])
    {'policy_id': 'policy_number', 'incident_date': 'date'}
    """
    mapping = {}
    for item in (p for pair in pairs for p in pair.split(",") if p.strip()):
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ClaimsError(f"--map {item!r}: write FIELD=COLUMN, e.g. policy_id=policy_number.")
        if ours.strip() not in REQUIRED + OPTIONAL:
            raise ClaimsError(
                f"--map {item!r}: unknown field {ours.strip()!r}; "
                f"fields are {', '.join(REQUIRED + OPTIONAL)}."
            )
        mapping[ours.strip()] = theirs.strip()
    return mapping


def parse_value_maps(
    pairs: Sequence[str] = (), file: Path | None = None
) -> dict[str, dict[str, str]]:
    """``--values FIELD:FROM=TO,...`` (repeatable) and a YAML file ``{field: {from: to}}`` ->
    ``{field: {from: to}}`` with every target checked; ``pairs`` win over ``file``.

    >>> parse_value_maps(["severity:Lvl 1=minor,Lvl 3=severe", "part:Roof Panel=hood"])
    {'severity': {'Lvl 1': 'minor', 'Lvl 3': 'severe'}, 'part': {'Roof Panel': 'hood'}}
    """
    maps: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    if file is not None:
        _check_value_maps(_read_value_file(file), f"--values-file {file}", maps, problems)
    for item in pairs:
        name, sep, entries = item.partition(":")
        written = {}
        for entry in (e for e in entries.split(",") if e.strip()):
            source, equals, target = entry.partition("=")
            if not equals:
                problems.append(f"--values {item!r}: {entry!r} has no '='; write FROM=TO")
            written[source] = target
        if not sep or not written:
            problems.append(
                f"--values {item!r}: write FIELD:FROM=TO,FROM=TO, e.g. severity:high=severe"
            )
            continue
        _check_value_maps({name: written}, f"--values {item!r}", maps, problems)
    if problems:
        raise ValueMapError("; ".join(problems))
    return maps


def _read_value_file(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueMapError(f"--values-file {path}: cannot read it ({exc})") from None
    try:
        # BaseLoader keeps every scalar a string: "no", "1" and "off" are values, not booleans
        return yaml.load(text, Loader=yaml.BaseLoader) or {}
    except yaml.YAMLError as exc:
        raise ValueMapError(f"--values-file {path}: not YAML ({exc})") from None


def _check_value_maps(
    maps: Any, origin: str, checked: dict[str, dict[str, str]], problems: list[str]
) -> None:
    """Add ``maps``' entries, their targets made canonical, to ``checked``; each bad one to
    ``problems``, naming ``origin``."""
    shape = "write a mapping {field: {value in the file: tunegraph value}}"
    if not isinstance(maps, Mapping):
        problems.append(f"{origin}: {shape}")
        return
    for name, entries in maps.items():
        field_name = str(name).strip().lower().replace("-", "_").replace(" ", "_")
        if field_name not in VOCABULARIES:
            problems.append(
                f"{origin}: unknown field {name!r}; value maps are for {', '.join(VOCABULARIES)}"
            )
            continue
        if not isinstance(entries, Mapping):
            problems.append(f"{origin}: {name}: {shape}")
            continue
        valid = VOCABULARIES[field_name].values
        for source, target in entries.items():
            value = str(target).strip().lower().replace("-", "_").replace(" ", "_")
            if not _map_key(str(source)):
                problems.append(f"{origin}: {field_name}: a value to map from is empty")
            elif value not in valid or not isinstance(target, str):
                problems.append(
                    f"{origin}: {field_name} {source!r} -> {target!r}: {target!r} is not a "
                    f"{field_name}; use one of {', '.join(valid)}"
                )
            else:
                checked.setdefault(field_name, {})[str(source)] = value


def _map_key(text: str) -> str:
    """A value map's FROM as it matches a cell: case and separators do not matter.

    >>> _map_key(" Lvl_3 "), _map_key("lvl-3")
    ('lvl 3', 'lvl 3')
    """
    return " ".join(re.findall(r"[^\W_]+", text.casefold()))


def read_claims(
    path: Path,
    mapping: dict[str, str] | None = None,
    date_format: str | None = None,
    *,
    values: Mapping[str, Mapping[str, str]] | None = None,
    strict: bool = False,
) -> ClaimsReport:
    """Read a claims CSV or JSONL file into claims plus a report of rejected rows.

    ``values``: value maps ``{field: {value in the file: tunegraph value}}`` for the enumerated
    fields, tried before the built-in synonyms (:func:`parse_value_maps` reads them from the
    command line); a bad one raises :class:`ValueMapError` before the file is opened.
    ``strict``: reject a row whose enumerated value neither a map nor a synonym knows, instead
    of keeping it as written with a warning.
    """
    mapping = mapping or {}
    problems: list[str] = []
    checked: dict[str, dict[str, str]] = {}
    _check_value_maps(values or {}, "value map", checked, problems)
    if problems:
        raise ValueMapError("; ".join(problems))
    maps = {f: {_map_key(k): v for k, v in m.items()} for f, m in checked.items()}
    if not path.is_file():
        raise ClaimsError(f"{path}: no such file.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ClaimsError(
            f"{path}: not UTF-8 (byte {exc.start}); re-save it as UTF-8 CSV or JSONL."
        ) from None
    if not text.strip():
        raise ClaimsError(f"{path}: the file is empty.")
    report = ClaimsReport(str(path))
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows, columns = _jsonl_rows(text, report)
    else:
        rows, columns = _csv_rows(path, text)

    column_of = {f: mapping.get(f, f) for f in REQUIRED + OPTIONAL}
    missing = [f for f in REQUIRED if column_of[f] not in columns]
    if missing:
        raise ClaimsError(
            f"{path}: missing required column(s) "
            + ", ".join(f"{f} (looked for {column_of[f]!r})" for f in missing)
            + f". The file has: {', '.join(columns) or 'no header'}. "
            "Map yours with --map FIELD=COLUMN."
        )
    used = {column_of[f] for f in REQUIRED + OPTIONAL}
    report.ignored_columns = [c for c in columns if c not in used]

    for name in ("incident_date", "policy_start"):
        if column_of[name] in columns:
            written = [str(r.get(column_of[name]) or "").strip() for _, r in rows]
            report.date_formats[name] = date_format or _detect_date_format(name, written, report)

    seen_ids: dict[str, int] = {}
    seen_content: dict[tuple, int] = {}
    for number, row in rows:
        read = _read_row(row, column_of, report.date_formats, maps, strict)
        if read.problems:
            report.rejected.append(Rejection(number, tuple(read.problems)))
            continue
        claim = read.claim
        assert claim is not None  # a row without problems is a claim
        if claim.claim_id in seen_ids:
            report.rejected.append(
                Rejection(
                    number,
                    (
                        f"duplicate claim_id {claim.claim_id!r} (first at row "
                        f"{seen_ids[claim.claim_id]})",
                    ),
                )
            )
            continue
        content = (
            claim.policy_id,
            claim.vin,
            claim.incident_date,
            claim.part,
            claim.damage_type,
            claim.amount,
        )
        if content in seen_content:
            report.rejected.append(
                Rejection(
                    number,
                    (
                        f"duplicate of row {seen_content[content]} under another "
                        "claim_id (same policy, VIN, date, part, damage and amount)",
                    ),
                )
            )
            continue
        seen_ids[claim.claim_id] = seen_content[content] = number
        report.claims.append(claim)
        for name, raw in claim.unmapped.items():
            report.warnings.setdefault(name, Counter())[raw] += 1
        for name, (raw, value) in read.translated.items():
            report.translated.setdefault(name, {})[raw] = value
    return report


def _csv_rows(path: Path, text: str) -> tuple[list[tuple[int, dict]], list[str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = list(reader.fieldnames or [])
        rows = [(i, row) for i, row in enumerate(reader, start=2)]  # header is row 1
    except csv.Error as exc:
        raise ClaimsError(
            f"{path}: not a readable CSV at line {reader.line_num} ({exc}); check the quoting "
            "and that no field is a whole document"
        ) from None
    return rows, columns


def _jsonl_rows(text: str, report: ClaimsReport) -> tuple[list[tuple[int, dict]], list[str]]:
    rows, columns = [], []
    for number, record, problem in parse_lines(text):
        if problem:
            report.rejected.append(Rejection(number, (problem,)))
            continue
        if not isinstance(record, dict):
            report.rejected.append(Rejection(number, ("not a JSON object",)))
            continue
        columns += [k for k in record if k not in columns]
        rows.append((number, record))
    return rows, columns


def _detect_date_format(name: str, values: list[str], report: ClaimsReport) -> str:
    present = [v for v in values if v]
    if not present:
        return DATE_FORMATS[0]
    fits = {fmt: sum(_parses(v, fmt) for v in present) for fmt in DATE_FORMATS}
    best = max(fits.values())
    if best == 0:
        report.notes.append(
            f"{name}: no known date format fits any value (e.g. {present[0]!r}); "
            "pass --date-format (strptime syntax, e.g. %d.%m.%y)"
        )
        return DATE_FORMATS[0]
    candidates = [fmt for fmt in DATE_FORMATS if fits[fmt] == best]
    if {"%d/%m/%Y", "%m/%d/%Y"} <= set(candidates):
        report.notes.append(
            f"{name}: every date fits both DD/MM/YYYY and MM/DD/YYYY; assumed DD/MM/YYYY "
            "(pass --date-format %m/%d/%Y if that is wrong)."
        )
    return candidates[0]


def _parses(value: str, fmt: str) -> bool:
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


@dataclass
class _Row:
    """What one row read as: a claim, or the problems that reject it."""

    claim: Claim | None
    problems: list[str]
    translated: dict[str, tuple[str, str]] = field(default_factory=dict)  # field: (raw, value)


def _read_row(
    row: dict,
    column_of: dict[str, str],
    formats: dict[str, str],
    maps: dict[str, dict[str, str]],
    strict: bool,
) -> _Row:
    problems: list[str] = []
    cells: dict[str, str] = {}
    for name in REQUIRED + OPTIONAL:
        value = row.get(column_of[name])
        if (
            name == "photo_paths"
            and isinstance(value, list)
            and all(isinstance(v, str) for v in value)
        ):
            value = ";".join(value)  # JSONL may hold the photos as a list
        if isinstance(value, list | dict):
            problems.append(f"{name} must be a single value, not {type(value).__name__}")
            cells[name] = ""
            continue
        cells[name] = "" if value is None else str(value).strip()
        if not cells[name] and name in REQUIRED:
            problems.append(f"empty {name}")

    vin = cells["vin"].upper()
    if vin and not _VIN.match(vin):
        problems.append(f"vin {cells['vin']!r} is not 17 characters of A-Z/0-9 without I, O, Q")
    amount = _amount(cells["amount"], problems) if cells["amount"] else 0.0
    dates = {
        name: _date(name, cells[name], formats, problems)
        for name in ("incident_date", "policy_start")
        if cells[name]
    }
    known: dict[str, str] = {}
    unmapped: dict[str, str] = {}
    translated: dict[str, tuple[str, str]] = {}
    for name, vocabulary in VOCABULARIES.items():
        raw = cells[name]
        if not raw:
            continue
        value = maps.get(name, {}).get(_map_key(raw)) or vocabulary.lookup(raw)
        if value is None and strict:
            problems.append(
                f"{name} {raw!r} is not one of {', '.join(vocabulary.values)} "
                f"(map it with --values {name}:{raw}=VALUE)"
            )
        elif value is None:
            unmapped[name] = raw
        else:
            known[name] = value
            if value != raw:
                translated[name] = (raw, value)
    if problems:
        return _Row(None, problems)
    claim = Claim(
        claim_id=cells["claim_id"],
        policy_id=cells["policy_id"],
        vin=vin,
        incident_date=dates["incident_date"],
        description=cells["description"],
        part=known.get("part", cells["part"]),
        damage_type=known.get("damage_type", cells["damage_type"]),
        severity=known.get("severity", cells["severity"]),
        amount=amount,
        policy_start=dates.get("policy_start"),
        fraud={"true": True, "false": False}.get(known.get("fraud", "")),
        photo_paths=tuple(p.strip() for p in cells["photo_paths"].split(";") if p.strip()),
        unmapped=unmapped,
    )
    return _Row(claim, [], translated)


def _amount(text: str, problems: list[str]) -> float:
    number = text.removeprefix("$")
    if not _AMOUNT.match(number):  # "12,50" or "1.234,56" would be read wrongly: refuse
        problems.append(
            f"amount {text!r} is not a number like 1234.50 or 1,234.50 "
            "(a decimal comma is ambiguous: convert the column first)"
        )
        return 0.0
    amount = float(number.replace(",", ""))
    if amount < 0:
        problems.append(f"amount {text!r} must be >= 0")
    return amount


def _date(name: str, value: str, formats: dict[str, str], problems: list[str]) -> date | None:
    try:
        return datetime.strptime(value, formats[name]).date()
    except ValueError:
        problems.append(f"{name} {value!r} does not match the column's format {formats[name]}")
        return None
