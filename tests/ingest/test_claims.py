from __future__ import annotations

import json
from datetime import date

import pytest

from ingest.claims import ClaimsError, parse_mapping, read_claims

HEADER = "claim,policy_number,vin,date,description,part,damage_type,severity,amount,fraud\n"
GOOD = "C1,P1,HMW12345678901234,13/04/2024,Hail,hood,dent,minor,100.50,0\n"


def test_demo_claims_read_cleanly(demo_corpus):
    report = read_claims(demo_corpus.root / "claims" / "claims.csv")
    assert len(report.claims) >= 2000 and report.rejected == []
    assert report.date_formats == {"incident_date": "%Y-%m-%d", "policy_start": "%Y-%m-%d"}
    assert report.ignored_columns == ["fraud_pattern"]
    claim = report.claims[0]
    assert isinstance(claim.incident_date, date) and claim.photo_paths


def test_mapping_date_detection_and_per_row_rejections(tmp_path):
    path = tmp_path / "claims.csv"
    path.write_text(
        HEADER
        + GOOD
        + "C2,P1,HMW1234567890123,14/04/2024,x,hood,dent,minor,100,0\n"  # VIN too short
        + "C3,P2,HMW12345678901234,15/04/2024,x,hood,smash,minor,100,0\n"  # unknown damage
        + "C1,P2,HMW12345678901234,16/04/2024,x,hood,dent,minor,100,0\n"  # duplicate id
        + "C5,P1,HMW12345678901234,13/04/2024,Again,hood,dent,minor,100.50,0\n"  # same content
        + "C6,P1,HMW12345678901234,17/04/2024,x,hood,dent,minor,12abc,0\n"  # bad amount
        + "C7,P1,HMW12345678901234,2024-04-18,x,hood,dent,minor,10,0\n"  # other date format
        + "C8,P1,HMW12345678901234,19/04/2024,x,hood,dent,minor,10,maybe\n"  # bad flag
        + "C9,P1,HMW12345678901234,20/04/2024,,hood,dent,minor,10,0\n",  # empty description
        "utf-8",
    )
    mapping = parse_mapping(["claim_id=claim,policy_id=policy_number", "incident_date=date"])
    report = read_claims(path, mapping, strict=True)  # strict: unknown damage and flag reject
    assert [c.claim_id for c in report.claims] == ["C1"]
    assert report.claims[0].incident_date == date(2024, 4, 13)
    assert report.claims[0].amount == 100.5 and report.claims[0].fraud is False
    reasons = {r.row: r.reason for r in report.rejected}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert "17 characters" in reasons[3]
    assert "smash" in reasons[4]
    assert "duplicate claim_id 'C1' (first at row 2)" in reasons[5]
    assert "duplicate of row 2" in reasons[6]
    assert "12abc" in reasons[7]
    assert "%d/%m/%Y" in reasons[8]
    assert "maybe" in reasons[9]
    assert reasons[10] == "empty description"
    summary = report.summary()
    assert summary["ingested"] == 1 and len(summary["rejected"]) == 8


def test_ambiguous_dates_are_said_to_be_assumed_day_first(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(HEADER + GOOD.replace("13/04", "03/04"), "utf-8")
    mapping = parse_mapping(["claim_id=claim,policy_id=policy_number,incident_date=date"])
    report = read_claims(path, mapping)
    assert report.claims[0].incident_date == date(2024, 4, 3)
    assert any("assumed DD/MM/YYYY" in note for note in report.notes)
    explicit = read_claims(path, mapping, date_format="%m/%d/%Y")
    assert explicit.claims[0].incident_date == date(2024, 3, 4)


def test_jsonl_reports_malformed_lines(tmp_path):
    path = tmp_path / "claims.jsonl"
    good = (
        '{"claim_id": "C1", "policy_id": "P1", "vin": "HMW12345678901234", '
        '"incident_date": "2024-01-05", "description": "d", "part": "hood", '
        '"damage_type": "dent", "severity": "severe", "amount": 900}'
    )
    path.write_text(good + "\n{not json\n[1, 2]\n", "utf-8")
    report = read_claims(path)
    assert [c.claim_id for c in report.claims] == ["C1"]
    assert [(r.row, r.reason.split(":")[0]) for r in report.rejected] == [
        (2, "malformed JSON"),
        (3, "not a JSON object"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"claim_id,vin\nC1,X\n", r"missing required column\(s\) policy_id"),
        ("claim_id,vin\nC1,\xe9\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_whole_file_problems_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "claims.csv"
    path.write_bytes(content)
    with pytest.raises(ClaimsError, match=message):
        read_claims(path)


def test_bad_mapping_names_the_fields():
    with pytest.raises(ClaimsError, match="unknown field 'policy'"):
        parse_mapping(["policy=policy_number"])
    with pytest.raises(ClaimsError, match="FIELD=COLUMN"):
        parse_mapping(["policy_id"])


def test_ambiguous_amounts_are_refused_and_photo_lists_kept(tmp_path):
    base = {
        "claim_id": "C1",
        "policy_id": "P1",
        "vin": "HMW12345678901234",
        "incident_date": "2024-01-05",
        "description": "d",
        "part": "hood",
        "damage_type": "dent",
        "severity": "minor",
    }
    rows = [
        {**base, "amount": "1,234.50", "photo_paths": ["a.jpg", "b.jpg"]},
        {**base, "claim_id": "C2", "amount": "12,50"},
        {**base, "claim_id": "C3", "amount": "1.234,56"},
        {**base, "claim_id": "C4", "amount": 10, "description": {"nested": 1}},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    report = read_claims(path)
    assert [(c.claim_id, c.amount, c.photo_paths) for c in report.claims] == [
        ("C1", 1234.5, ("a.jpg", "b.jpg"))
    ]
    reasons = [r.reason for r in report.rejected]
    assert "decimal comma is ambiguous" in reasons[0] and "decimal comma is ambiguous" in reasons[1]
    assert "description must be a single value" in reasons[2]


def test_dates_that_fit_no_format_are_said_so(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(HEADER + GOOD.replace("13/04/2024", "yesterday"))
    mapping = parse_mapping(["claim_id=claim,policy_id=policy_number,incident_date=date"])
    report = read_claims(path, mapping)
    assert report.claims == [] and "no known date format fits" in report.notes[0]


def test_a_giant_csv_field_is_a_clear_error(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(HEADER + GOOD.replace("Hail", "x" * 200_000))
    with pytest.raises(ClaimsError, match="not a readable CSV"):
        read_claims(path)
