from __future__ import annotations

import json

import pytest

from ingest.demo import manual as demo_manual
from ingest.manuals import ManualError, kind_scores, parse_manual
from ingest.records import ManualBlock

HTML = """<html><head><style>p {color: red}</style></head><body>
<h1>3 Brakes</h1>
<h2>3.1 Specifications</h2>
<table><tr><th>Item</th><th>Value</th></tr>
<tr><td>Brake pad minimum thickness</td><td>2.5 mm</td></tr>
<tr><td>Wheel bolt torque</td><td>120 Nm</td></tr></table>
<h2>3.2 Procedures</h2>
<h3>Front brake pads - replacement</h3>
<ol><li>Raise the vehicle and remove the front wheel.</li><li>Remove the caliper guide bolts.</li>
<li>Fit new pads and tighten the guide bolts to 28 Nm.</li></ol>
<h2>3.3 Troubleshooting</h2>
<h3>C0035 - Left front wheel speed sensor circuit</h3>
<p>Possible causes:</p><ul><li>Open circuit in the sensor wiring</li><li>Faulty sensor</li></ul>
<h2>3.4 Description and operation</h2>
<h3>Brake booster</h3><p>The vacuum brake booster multiplies pedal force.</p>
<h3>Connector BR-C1 - wheel speed sensor</h3>
<table><tr><th>Pin</th><th>Circuit</th><th>Wire colour</th></tr>
<tr><td>1</td><td>signal</td><td>brown</td></tr><tr><td>2</td><td>ground</td><td>black</td></tr></table>
</body></html>"""

TEXT = """2 Cooling
2.1 Specifications
Coolant capacity: 5.6 L
Thermostat opening temperature  90 °C
2.2 Procedures
Water pump - removal and installation
1. Drain the coolant.
2. Remove the auxiliary drive belt.
3. Remove the water pump and fit a new gasket.
"""


def _by_kind(blocks: list[ManualBlock]) -> dict[str, list[ManualBlock]]:
    result: dict[str, list[ManualBlock]] = {}
    for block in blocks:
        result.setdefault(block.kind, []).append(block)
    return result


def test_html_manual_is_segmented_by_headings_lists_and_tables(tmp_path):
    path = tmp_path / "brakes.html"
    path.write_text(HTML, "utf-8")
    kinds = _by_kind(parse_manual(path))
    specs = [b.text for b in kinds["SPEC"]]
    assert specs == ["Brake pad minimum thickness: 2.5 mm", "Wheel bolt torque: 120 Nm"]
    assert kinds["SPEC"][0].section == ("3 Brakes", "3.1 Specifications")
    (procedure,) = kinds["PROCEDURE"]
    assert procedure.text.splitlines()[0] == "Front brake pads - replacement"
    assert procedure.text.splitlines()[3] == "3. Fit new pads and tighten the guide bolts to 28 Nm."
    (fault,) = kinds["TROUBLESHOOTING"]
    assert fault.text.startswith("C0035 - Left front wheel speed sensor circuit")
    (wiring,) = kinds["WIRING"]
    assert "1 | signal | brown" in wiring.text
    assert [b.text.splitlines()[0] for b in kinds["EXPLANATION"]] == ["Brake booster"]
    assert "color: red" not in "".join(b.text for b in parse_manual(path))


def test_plain_text_manual_keeps_spec_name_value_and_unit_together(tmp_path):
    path = tmp_path / "cooling.txt"
    path.write_text(TEXT, "utf-8")
    kinds = _by_kind(parse_manual(path))
    assert [b.text for b in kinds["SPEC"]] == [
        "Coolant capacity: 5.6 L",
        "Thermostat opening temperature: 90 °C",
    ]
    assert all(b.section[-1] == "2.1 Specifications" for b in kinds["SPEC"])
    assert kinds["PROCEDURE"][0].text.count("\n") == 3


def test_ids_are_stable_across_runs_and_unique(tmp_path):
    path = tmp_path / "cooling.txt"
    path.write_text(TEXT, "utf-8")
    first, second = parse_manual(path), parse_manual(path)
    assert [b.id for b in first] == [b.id for b in second]
    assert len({b.id for b in first}) == len(first)


@pytest.mark.parametrize("name", ["vehicle_manual.pdf", "vehicle_manual.md"])
def test_demo_manual_kinds_match_the_ground_truth(demo_corpus, name):
    root = demo_corpus.root / "manual"
    lines = (root / "blocks.jsonl").read_text("utf-8").splitlines()
    truth = [ManualBlock.from_dict(json.loads(line)) for line in lines]
    blocks = parse_manual(root / name)
    scores = kind_scores(blocks, truth)
    for kind, score in scores.items():
        assert score["recall"] >= 0.95, (kind, score)
        assert score["precision"] >= 0.95, (kind, score)
    if name.endswith(".pdf"):  # the PDF's blocks carry the page they start on
        pages = {b.text.splitlines()[0]: b.page for b in blocks}
        assert all(pages.get(t.text.splitlines()[0], t.page) == t.page for t in truth)


def test_kind_scores_count_wrong_kinds_against_both_sides():
    truth = [ManualBlock("t1", "m", 1, (), "SPEC", "Coolant capacity: 5.6 L")]
    predicted = [ManualBlock("p1", "m", 1, (), "EXPLANATION", "Coolant capacity: 5.6 L")]
    scores = kind_scores(predicted, truth)
    assert scores["SPEC"] == {"predicted": 0, "truth": 1, "precision": 0.0, "recall": 0.0}
    assert scores["EXPLANATION"]["precision"] == 0.0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.pdf", b"", "the file is empty"),
        ("broken.pdf", b"%PDF-1.4\n garbage without objects", "not a readable PDF"),
        ("latin1.txt", "Drehmoment: 25 Nm für Schrauben".encode("latin-1"), "not UTF-8"),
        ("photo.png", b"this is not an image", "not a readable image|not an image"),
        ("manual.docx", b"PK\x03\x04", "unsupported manual format .docx"),
    ],
)
def test_bad_files_get_a_clear_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises((ManualError, ValueError), match=message) as caught:
        parse_manual(path)
    assert name in str(caught.value)


def test_encrypted_pdf_is_refused(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret")
    path = tmp_path / "locked.pdf"
    with path.open("wb") as handle:
        writer.write(handle)
    with pytest.raises(ManualError, match="encrypted"):
        parse_manual(path)


def test_pdf_without_text_layer_points_to_ocr(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    path = tmp_path / "scanned.pdf"
    with path.open("wb") as handle:
        writer.write(handle)
    with pytest.raises(ManualError, match=r"no text found.*PNG"):
        parse_manual(path)


def test_markdown_tables_skip_the_separator_row(tmp_path):
    path = tmp_path / "m.md"
    chapters = demo_manual.build_manual(__import__("random").Random(1))[:1]
    path.write_text(demo_manual.render_markdown(chapters), "utf-8")
    texts = [b.text for b in parse_manual(path)]
    assert not any("---" in t for t in texts)
    assert not any(t.startswith("Item: Value") for t in texts)


def test_unnumbered_headings_build_the_section_path_and_specs(tmp_path):
    path = tmp_path / "brakes.md"
    path.write_text(
        "# Brakes\n\n## Specifications\n\n| Item | Value |\n| --- | --- |\n"
        "| Caliper bolt | 32 Nm |\n\n# Brake caliper\n\n## Removal\n\n1. Lift the car.\n2. Undo it.\n"
    )
    blocks = parse_manual(path)
    (spec,) = [b for b in blocks if b.kind == "SPEC"]
    assert spec.text == "Caliper bolt: 32 Nm" and spec.section == ("Brakes", "Specifications")
    (procedure,) = [b for b in blocks if b.kind == "PROCEDURE"]
    assert procedure.section == ("Brake caliper",) and procedure.text.startswith("Removal\n1.")


def test_list_after_a_colon_line_is_content_not_titles(tmp_path):
    path = tmp_path / "tools.txt"
    path.write_text(
        "Tools required:\nTorque wrench\nSocket set\nBrake cleaner\nThe job takes an hour.\n"
    )
    text = "\n".join(b.text for b in parse_manual(path))
    for line in ("Tools required:", "Torque wrench", "Socket set", "Brake cleaner"):
        assert line in text


def test_html_keeps_text_in_divs_and_headers_without_duplicates(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<article><header><h1>Front caliper</h1></header>"
        "<div>The caliper <b>clamps</b> the disc.</div>"
        "<ol><li><p>Remove the wheel.</p></li><li><p>Undo the bolts.</p></li></ol></article>"
    )
    blocks = parse_manual(path)
    text = "\n".join(b.text for b in blocks)
    assert "Front caliper" in text and "The caliper clamps the disc." in text
    assert text.count("Remove the wheel.") == 1
    assert any(b.kind == "PROCEDURE" and "2. Undo the bolts." in b.text for b in blocks)


def test_markdown_keeps_underscores_and_stars_inside_words(tmp_path):
    path = tmp_path / "m.md"
    path.write_text("# Sensors\n\nThe **sensor_id** of ECU_B2 is `A_1`; use a 2*3 mm shim.\n")
    (block,) = parse_manual(path)
    assert "The sensor_id of ECU_B2 is A_1; use a 2*3 mm shim." in block.text


def test_pdf_locked_only_against_editing_is_read(tmp_path):
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.cell(0, 10, "Wheel bolt torque: 120 Nm")
    plain = tmp_path / "plain.pdf"
    pdf.output(str(plain))
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password="", owner_password="owner-secret")
    locked = tmp_path / "locked.pdf"
    with locked.open("wb") as handle:
        writer.write(handle)
    assert "Wheel bolt torque" in parse_manual(locked)[0].text


def test_pdf_bold_words_inside_a_sentence_are_not_table_cells(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(
        0, 6, "Always tighten the bolts to **32 Nm** and never reuse them.", markdown=True
    )
    path = tmp_path / "inline.pdf"
    pdf.output(str(path))
    assert [b.text for b in parse_manual(path)] == [
        "Always tighten the bolts to 32 Nm and never reuse them."
    ]
