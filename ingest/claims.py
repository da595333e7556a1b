"""Claims CSV/JSONL -> :class:`Claim` records, with a per-row report of what was rejected.

Columns are matched by name after an optional mapping (``{"policy_id": "policy_number"}`` reads
tunegraph's ``policy_id`` from the file's ``policy_number`` column). Dates are parsed with the
format that fits a column's values (ISO, day-first, month-first...); when day-first and
month-first both fit every value, day-first is assumed and the summary says so. A row with a bad
value is rejected with its row number and the reason; nothing is silently coerced.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ingest.jsonl import parse_lines
from ingest.taxonomy import DAMAGE_TYPES, SEVERITIES

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
_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class ClaimsError(ValueError):
    """The file as a whole cannot be read (missing columns, encoding...); names the fix."""


@dataclass(frozen=True)
class Claim:
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


@dataclass(frozen=True)
class Rejection:
    row: int  # spreadsheet row for CSV (header = 1), line number for JSONL
    reason: str


@dataclass
class ClaimsReport:
    source: str
    claims: list[Claim] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    date_formats: dict[str, str] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ingested": len(self.claims),
            "rejected": [{"row": r.row, "reason": r.reason} for r in self.rejected],
            "date_formats": self.date_formats,
            "ignored_columns": self.ignored_columns,
            "notes": self.notes,
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


def read_claims(
    path: Path, mapping: dict[str, str] | None = None, date_format: str | None = None
) -> ClaimsReport:
    """Read a claims CSV or JSONL file into claims plus a report of rejected rows."""
    mapping = mapping or {}
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
            values = [str(r.get(column_of[name]) or "").strip() for _, r in rows]
            report.date_formats[name] = date_format or _detect_date_format(name, values, report)

    seen_ids: dict[str, int] = {}
    seen_content: dict[tuple, int] = {}
    for number, row in rows:
        try:
            claim = _to_claim(row, column_of, report.date_formats)
        except ValueError as exc:
            report.rejected.append(Rejection(number, str(exc)))
            continue
        if claim.claim_id in seen_ids:
            report.rejected.append(
                Rejection(
                    number,
                    f"duplicate claim_id {claim.claim_id!r} (first at row "
                    f"{seen_ids[claim.claim_id]})",
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
                    f"duplicate of row {seen_content[content]} under another "
                    "claim_id (same policy, VIN, date, part, damage and amount)",
                )
            )
            continue
        seen_ids[claim.claim_id] = seen_content[content] = number
        report.claims.append(claim)
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
            report.rejected.append(Rejection(number, problem))
            continue
        if not isinstance(record, dict):
            report.rejected.append(Rejection(number, "not a JSON object"))
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


def _to_claim(row: dict, column_of: dict[str, str], formats: dict[str, str]) -> Claim:
    def get(name: str) -> str:
        value = row.get(column_of[name])
        if isinstance(value, list | dict):
            if name == "photo_paths" and all(isinstance(v, str) for v in value):
                return ";".join(value)  # JSONL may hold the photos as a list
            raise ValueError(f"{name} must be a single value, not {type(value).__name__}")
        return "" if value is None else str(value).strip()

    for name in REQUIRED:
        if not get(name):
            raise ValueError(f"empty {name}")
    vin = get("vin").upper()
    if not _VIN.match(vin):
        raise ValueError(f"vin {get('vin')!r} is not 17 characters of A-Z/0-9 without I, O, Q")
    damage_type = get("damage_type").lower().replace(" ", "_")
    if damage_type not in DAMAGE_TYPES:
        raise ValueError(
            f"damage_type {get('damage_type')!r} is not one of {', '.join(DAMAGE_TYPES)}"
        )
    severity = get("severity").lower()
    if severity not in SEVERITIES:
        raise ValueError(f"severity {get('severity')!r} is not one of {', '.join(SEVERITIES)}")
    amount_text = get("amount").removeprefix("$")
    if not _AMOUNT.match(amount_text):  # "12,50" or "1.234,56" would be read wrongly: refuse
        raise ValueError(
            f"amount {get('amount')!r} is not a number like 1234.50 or 1,234.50 "
            "(a decimal comma is ambiguous: convert the column first)"
        )
    amount = float(amount_text.replace(",", ""))
    if amount < 0:
        raise ValueError(f"amount {get('amount')!r} must be >= 0")
    fraud = None
    if get("fraud"):
        if get("fraud").lower() not in _BOOL:
            raise ValueError(f"fraud {get('fraud')!r} is not one of 0/1/true/false/yes/no")
        fraud = _BOOL[get("fraud").lower()]
    return Claim(
        claim_id=get("claim_id"),
        policy_id=get("policy_id"),
        vin=vin,
        incident_date=_date("incident_date", get("incident_date"), formats),
        description=get("description"),
        part=get("part").lower().replace(" ", "_"),
        damage_type=damage_type,
        severity=severity,
        amount=amount,
        policy_start=_date("policy_start", get("policy_start"), formats)
        if get("policy_start")
        else None,
        fraud=fraud,
        photo_paths=tuple(p.strip() for p in get("photo_paths").split(";") if p.strip()),
    )


def _date(name: str, value: str, formats: dict[str, str]) -> date:
    try:
        return datetime.strptime(value, formats[name]).date()
    except ValueError:
        raise ValueError(
            f"{name} {value!r} does not match the column's format {formats[name]}"
        ) from None
