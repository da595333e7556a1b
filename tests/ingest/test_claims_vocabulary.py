"""Claims written in another vocabulary: synonyms, value maps, unknown values, strict mode."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from ingest.claims import ValueMapError, parse_mapping, parse_value_maps, read_claims
from ingest.taxonomy import DAMAGE_VOCABULARY, PART_VOCABULARY, SEVERITY_VOCABULARY

# Another insurer's export: other column names, another order, day.month.year dates, its own
# words for parts, damages, severities and the fraud flag, and a column tunegraph does not use.
COLUMNS = [
    "Reported", "ClaimRef", "Area", "Type", "Grade", "PolicyNo", "VehicleVIN",
    "Narrative", "Paid", "SIU_Flag", "Adjuster",
]  # fmt: skip
MAP = (
    "claim_id=ClaimRef,policy_id=PolicyNo,vin=VehicleVIN,incident_date=Reported,"
    "description=Narrative,part=Area,damage_type=Type,severity=Grade,amount=Paid,fraud=SIU_Flag"
)
VIN = "1HGCM82633A004352"


def _row(ref, area, kind, grade, flag="N", **changes):
    row = {
        "Reported": "03.02.2024", "ClaimRef": ref, "Area": area, "Type": kind, "Grade": grade,
        "PolicyNo": "POL-9", "VehicleVIN": VIN, "Narrative": f"{kind} on the {area}",
        "Paid": f"{100 + len(ref) * 37 + sum(map(ord, ref))}.00", "SIU_Flag": flag,
        "Adjuster": "kim",
    }  # fmt: skip
    return {**row, **changes}


def _write(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


FOREIGN = [
    _row("R-1", "Bumper-Front", "Scratched", "LOW", "N"),
    _row("R-2", "Hood/Bonnet", "Dents", "Medium", "Y"),
    _row("R-3", "Windscreen", "Broken glass", "High", "suspected"),
    _row("R-4", "Tail Lights", "smashed lamp", "slight", "no"),
    _row("R-5", "LF Door", "dent", "moderate damage", ""),
    _row("R-6", "rear tyres", "Flat Tyre", "Total Loss", "1"),
    _row("R-7", "FRONT_BUMPER", "scratches", "Minor", "false"),
    _row("R-8", "Driver Front Door", "Deformed", "heavy", "TRUE"),
]


def test_a_foreign_layout_and_vocabulary_ingests_through_synonyms(tmp_path):
    path = _write(tmp_path / "export.csv", FOREIGN)
    report = read_claims(path, parse_mapping([MAP]))
    assert report.rejected == [] and report.warnings == {}
    assert report.ignored_columns == ["Adjuster"]
    read = [(c.part, c.damage_type, c.severity, c.fraud) for c in report.claims]
    assert read == [
        ("front_bumper", "scratch", "minor", False),
        ("hood", "dent", "moderate", True),
        ("windshield", "glass_shatter", "severe", True),
        ("tail_lamp", "lamp_broken", "minor", False),
        ("front_door", "dent", "moderate", None),
        ("rear_tire", "tire_flat", "severe", True),
        ("front_bumper", "scratch", "minor", False),
        ("front_door", "dent", "severe", True),
    ]
    assert all(c.unmapped == {} and c.incident_date == date(2024, 2, 3) for c in report.claims)
    summary = report.summary()
    assert summary["translated"]["severity"] == {
        "LOW": "minor", "Medium": "moderate", "High": "severe", "slight": "minor",
        "moderate damage": "moderate", "Total Loss": "severe", "Minor": "minor",
        "heavy": "severe",
    }  # fmt: skip
    assert summary["translated"]["part"]["Hood/Bonnet"] == "hood"
    assert "dent" not in summary["translated"]["damage_type"]  # already tunegraph's word


@pytest.mark.parametrize(
    ("vocabulary", "written", "value"),
    [
        (SEVERITY_VOCABULARY, "MINOR", "minor"),
        (SEVERITY_VOCABULARY, "light", "minor"),
        (SEVERITY_VOCABULARY, "med", "moderate"),
        (SEVERITY_VOCABULARY, "Major", "severe"),
        (SEVERITY_VOCABULARY, "severe_damage", "severe"),
        (DAMAGE_VOCABULARY, "Glass-Broken", "glass_shatter"),
        (DAMAGE_VOCABULARY, "punctured tyres", "tire_flat"),
        (DAMAGE_VOCABULARY, "Headlight broken", "lamp_broken"),
        (DAMAGE_VOCABULARY, "cracked", "crack"),
        (PART_VOCABULARY, "front bumper", "front_bumper"),
        (PART_VOCABULARY, "Rear Quarter Panels", "rear_quarter_panel"),
        (PART_VOCABULARY, "windshield", "windshield"),
        (PART_VOCABULARY, "boot lid", "trunk_lid"),
        (PART_VOCABULARY, "RR bumper", "rear_bumper"),
        (PART_VOCABULARY, "wing mirror", "side_mirror"),
        (PART_VOCABULARY, "Headlights", "headlamp"),
        (PART_VOCABULARY, "door", None),  # front or rear: no guess
        (SEVERITY_VOCABULARY, "3", None),  # a code means what its file says: a value map
        (DAMAGE_VOCABULARY, "smash", None),  # glass or lamp: no guess
    ],
)
def test_synonyms(vocabulary, written, value):
    assert vocabulary.lookup(written) == value


def test_value_maps_come_before_synonyms_and_the_command_line_wins(tmp_path):
    rows = [
        _row("R-1", "hood", "dent", "Cat A"),
        _row("R-2", "hood", "dent", "Cat C"),
        _row("R-3", "hood", "dent", "high"),  # this insurer's "high" is tunegraph's moderate
        _row("R-4", "Roof Skin", "dent", "cat-b", "Verdacht"),
    ]
    path = _write(tmp_path / "export.csv", rows)
    values_file = tmp_path / "map.yaml"
    values_file.write_text(
        "severity:\n  Cat A: minor\n  Cat B: moderate\n  Cat C: moderate\n"
        "fraud:\n  Verdacht: 'true'\n"
    )
    maps = parse_value_maps(
        ["severity:Cat C=severe,high=moderate", "part:roof skin=hood"], values_file
    )
    assert maps["severity"] == {
        "Cat A": "minor", "Cat B": "moderate", "Cat C": "severe", "high": "moderate"
    }  # fmt: skip
    report = read_claims(path, parse_mapping([MAP]), values=maps)
    assert [(c.part, c.severity, c.fraud) for c in report.claims] == [
        ("hood", "minor", False),
        ("hood", "severe", False),
        ("hood", "moderate", False),
        ("hood", "moderate", True),  # "cat-b" matched "Cat B": case and separators aside
    ]
    assert report.warnings == {}


def test_unknown_values_of_non_key_fields_keep_the_claim_as_written(tmp_path):
    rows = [
        _row("R-1", "Roof", "dent", "catastrophic"),
        _row("R-2", "hood", "hail pitting", "catastrophic", "maybe"),
        _row("R-3", "hood", "dent", "minor"),
    ]
    path = _write(tmp_path / "export.csv", rows)
    report = read_claims(path, parse_mapping([MAP]))
    assert report.rejected == []
    first, second, third = report.claims
    assert (first.part, first.severity, first.unmapped) == (
        "Roof",
        "catastrophic",
        {"part": "Roof", "severity": "catastrophic"},
    )
    assert second.fraud is None and second.unmapped == {
        "damage_type": "hail pitting",
        "severity": "catastrophic",
        "fraud": "maybe",
    }
    assert third.unmapped == {}
    assert report.summary()["warnings"] == {
        "part": {"Roof": 1},
        "severity": {"catastrophic": 2},
        "damage_type": {"hail pitting": 1},
        "fraud": {"maybe": 1},
    }

    strict = read_claims(path, parse_mapping([MAP]), strict=True)
    assert [c.claim_id for c in strict.claims] == ["R-3"] and strict.warnings == {}
    assert [r.row for r in strict.rejected] == [2, 3]
    assert strict.rejected[0].problems == (
        "part 'Roof' is not one of " + ", ".join(PART_VOCABULARY.values)
        + " (map it with --values part:Roof=VALUE)",
        "severity 'catastrophic' is not one of minor, moderate, severe "
        "(map it with --values severity:catastrophic=VALUE)",
    )  # fmt: skip
    assert len(strict.rejected[1].problems) == 3


def test_key_fields_still_reject_and_every_problem_of_a_row_is_listed(tmp_path):
    rows = [
        _row("R-1", "hood", "dent", "minor", VehicleVIN="SHORTVIN", Paid="12,50", Reported="31.02.2024"),
        _row("R-2", "hood", "dent", "minor", ClaimRef="", PolicyNo=""),
        _row("R-3", "hood", "dent", "minor", Paid="-5"),
    ]  # fmt: skip
    path = _write(tmp_path / "export.csv", rows)
    report = read_claims(path, parse_mapping([MAP]))
    assert report.claims == []
    three, two, one = report.rejected
    assert three.row == 2 and len(three.problems) == 3
    assert "vin 'SHORTVIN' is not 17 characters" in three.problems[0]
    assert "amount '12,50'" in three.problems[1] and "decimal comma" in three.problems[1]
    assert (
        three.problems[2]
        == "incident_date '31.02.2024' does not match the column's format %d.%m.%Y"
    )
    assert three.reason == "; ".join(three.problems)
    assert two.problems == ("empty claim_id", "empty policy_id")
    assert one.problems == ("amount '-5' must be >= 0",)
    assert report.summary()["rejected"][0]["problems"] == list(three.problems)


@pytest.mark.parametrize(
    ("pairs", "file_text", "message"),
    [
        (["severity:Cat 3=worst"], None, "severity 'Cat 3' -> 'worst': 'worst' is not a severity; use one of minor, moderate, severe"),
        (["part:roof=roof_panel"], None, "'roof_panel' is not a part; use one of front_bumper, rear_bumper"),
        (["fraud:Verdacht=probably"], None, "use one of true, false"),
        (["grade:Cat 3=severe"], None, "unknown field 'grade'; value maps are for part, damage_type, severity, fraud"),
        (["severity"], None, "write FIELD:FROM=TO,FROM=TO"),
        (["severity:Cat 3"], None, "'Cat 3' has no '='"),
        ([], "severity:\n  Cat 3: worst\n", "--values-file"),
        ([], "- severity\n", "write a mapping {field: {value in the file: tunegraph value}}"),
        ([], "severity: [minor]\n", "severity: write a mapping"),
        ([], "severity: {a: [x\n", "not YAML"),
    ],
)  # fmt: skip
def test_a_bad_value_map_is_refused_before_any_row_is_read(tmp_path, pairs, file_text, message):
    file = None
    if file_text is not None:
        file = tmp_path / "map.yaml"
        file.write_text(file_text)
    with pytest.raises(ValueMapError) as error:
        parse_value_maps(pairs, file)
    assert message in str(error.value)


def test_read_claims_checks_its_value_maps_before_the_file():
    with pytest.raises(ValueMapError, match="'extreme' is not a severity"):
        read_claims(
            Path("/no/such/claims.csv"),
            values={"severity": {"5": "extreme"}},
        )


def test_every_problem_of_a_value_map_is_named_at_once():
    with pytest.raises(ValueMapError) as error:
        parse_value_maps(["severity:a=worst,b=minor", "part:x=nowhere"])
    assert "'worst' is not a severity" in str(error.value)
    assert "'nowhere' is not a part" in str(error.value)
