"""``tunegraph ingest claims`` on a file in another layout and vocabulary: value maps, warnings,
``--strict``, every problem of a rejected row, and usage errors that write nothing."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from api.cli.main import main

MAP = (
    "claim_id=Ref,policy_id=Policy,vin=VIN,incident_date=Loss Date,description=Notes,"
    "part=Component,damage_type=Peril,severity=Grade,amount=Settled,fraud=SIU"
)
HEADER = "Loss Date,Ref,Component,Peril,Grade,Policy,VIN,Notes,Settled,SIU\n"
VIN = "1HGCM82633A004352"
FOREIGN = HEADER + "".join(
    f"{day:02d}.03.2024,R-{day},{part},{peril},{grade},POL-{day % 3},{VIN},{peril} {part},"
    f"{100 * day}.00,{flag}\n"
    for day, part, peril, grade, flag in [
        (1, "Bumper-Front", "Scratched", "Cat 1", "N"),
        (2, "Hood/Bonnet", "Dents", "Cat 2", "Y"),
        (3, "Windscreen", "broken glass", "HIGH", "no"),
        (4, "Roof", "dent", "Cat 3", "0"),
        (5, "tail lights", "smashed lamp", "low", "Verdacht"),
    ]
)


def _runner(tmp_path):
    home = tmp_path / "home"
    return home, CliRunner(env={"TUNEGRAPH_HOME": str(home)})


def _written(home) -> list[str]:
    return sorted(p.name for p in home.rglob("*")) if home.exists() else []


@pytest.mark.parametrize(
    ("options", "file_text", "message"),
    [
        (
            ["--values", "severity:Cat 3=worst"],
            None,
            "--values 'severity:Cat 3=worst': severity 'Cat 3' -> 'worst': 'worst' is not a "
            "severity; use one of minor, moderate, severe",
        ),
        (["--values", "grade:Cat 3=severe"], None, "unknown field 'grade'"),
        ([], "part:\n  Roof: roof_panel\n", "'roof_panel' is not a part; use one of"),
    ],
)
def test_a_bad_value_map_is_a_usage_error_that_writes_nothing(
    tmp_path, options, file_text, message
):
    home, runner = _runner(tmp_path)
    path = tmp_path / "export.csv"
    path.write_text(FOREIGN)
    if file_text is not None:
        (tmp_path / "map.yaml").write_text(file_text)
        options = [*options, "--values-file", str(tmp_path / "map.yaml")]
    result = runner.invoke(main, ["ingest", "claims", str(path), "--map", MAP, *options])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert _written(home) == []


def test_strict_rejects_unknown_values_and_each_row_lists_all_its_problems(tmp_path):
    home, runner = _runner(tmp_path)
    bad = HEADER + "31.02.2024,R-1,hood,dent,minor,P,SHORTVIN,x,12,50,0\n".replace(
        "12,50", '"12,50"'
    )
    bad += "".join(f"0{d}.03.2024,R-{d},Roof,dent,Cat 9,P,{VIN},x,10,0\n" for d in range(1, 10))
    bad += "".join(f"{d}.03.2024,R-{d},hood,dent,minor,P,{VIN},x,abc,0\n" for d in range(10, 26))
    path = tmp_path / "export.csv"
    path.write_text(bad)
    result = runner.invoke(main, ["ingest", "claims", str(path), "--map", MAP, "--strict"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("ingested 0 claims, rejected 26 rows")
    assert lines[1] == (
        "  row 2: vin 'SHORTVIN' is not 17 characters of A-Z/0-9 without I, O, Q; "
        "amount '12,50' is not a number like 1234.50 or 1,234.50 (a decimal comma is "
        "ambiguous: convert the column first); incident_date '31.02.2024' does not match "
        "the column's format %d.%m.%Y"
    )
    assert lines[2].startswith("  row 3: part 'Roof' is not one of front_bumper, ")
    assert "; severity 'Cat 9' is not one of minor, moderate, severe" in lines[2]
    assert sum(line.startswith("  row ") for line in lines) == 20
    assert "  ... and 6 more rejected rows (see --json)" in lines
    assert _written(home) == []  # nothing ingested, nothing opened


@pytest.mark.real_model
def test_a_foreign_claims_file_ingests_with_a_value_map(tmp_path):
    from rag.claims_db import ClaimsDatabase

    home, runner = _runner(tmp_path)
    path = tmp_path / "export.csv"
    path.write_text(FOREIGN)
    values = tmp_path / "map.yaml"
    values.write_text("severity:\n  Cat 1: minor\n  Cat 2: moderate\n  Cat 3: severe\n")
    result = runner.invoke(
        main,
        [
            "ingest", "claims", str(path), "--map", MAP, "--values-file", str(values),
            "--values", "severity:HIGH=moderate", "--values", "fraud:Verdacht=true",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ingested 5 claims, rejected 0 rows (dates: incident_date")
    assert (
        "  read severity: 'Cat 1' as minor, 'Cat 2' as moderate, 'HIGH' as moderate"
        in result.stdout
    )
    assert "  read part: 'Bumper-Front' as front_bumper, 'Hood/Bonnet' as hood" in result.stdout
    assert (
        "  warning: part in no vocabulary, kept as written: 'Roof' x1 "
        "(map with --values part:FROM=TO, or reject with --strict)" in result.stdout
    )
    database = ClaimsDatabase(f"sqlite:///{home / 'tunegraph.db'}")
    claims = database.get([f"R-{day}" for day in range(1, 6)])
    assert [(c.part, c.damage_type, c.severity, c.fraud) for c in claims] == [
        ("front_bumper", "scratch", "minor", False),
        ("hood", "dent", "moderate", True),
        ("windshield", "glass_shatter", "moderate", False),
        ("Roof", "dent", "severe", False),
        ("tail_lamp", "lamp_broken", "minor", True),
    ]
    assert [c.unmapped for c in claims] == [{}, {}, {}, {"part": "Roof"}, {}]


def test_the_ingest_claims_job_takes_the_same_options(tmp_path, monkeypatch):
    """A job's value maps are checked at submission (naming the file as sent, never the
    server's path to it), and its worker reads with them and with ``strict``."""
    from api.jobs.confine import Roots
    from api.jobs.kinds import validate
    from api.jobs.worker import NothingIngested, ingest_claims

    roots = Roots(tmp_path.resolve(), "local")
    roots.uploads.mkdir(parents=True)
    (roots.uploads / "export.csv").write_text(
        HEADER + "".join(f"0{d}.03.2024,R-{d},Roof,dent,Cat 9,P,{VIN},x,10,0\n" for d in (1, 2))
    )
    (roots.uploads / "map.yaml").write_text("severity:\n  Cat 3: worst\n")
    params = {"file": "export.csv", "map": [MAP], "strict": True}
    with pytest.raises(ValueError) as error:
        validate("ingest-claims", {**params, "values_file": "map.yaml"}, roots)
    assert str(error.value) == (
        "bad value map(s) of ingest-claims: --values-file map.yaml: severity 'Cat 3' -> "
        "'worst': 'worst' is not a severity; use one of minor, moderate, severe"
    )
    with pytest.raises(ValueError, match="parameter 'values_file' of ingest-claims: no file x"):
        validate("ingest-claims", {**params, "values_file": "x.yaml"}, roots)
    resolved = validate("ingest-claims", {**params, "values": ["severity:Cat 9=severe"]}, roots)

    # strict: the mapped severity passes, the part in no vocabulary rejects every row
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path / "home"))
    with pytest.raises(NothingIngested) as error:
        ingest_claims(resolved, None, print)
    assert str(error.value).startswith("no claim ingested: row 2: part 'Roof' is not one of ")
    assert " | row 3: part 'Roof' is not one of " in str(error.value)
    assert "severity" not in str(error.value)
    assert not (tmp_path / "home").exists()
