"""The web pages in a real browser (headless Chromium) against the app on fake models."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from agents.compare.report import Block, to_html
from api.server.blueprints.ui import content_security_policy
from ingest.assessment import Damage
from tests.agents.conftest import MANUAL, PHOTOS
from tests.agents.fakes import FakeDamageModel, FakeVision, fake_llm
from tests.api.conftest import jpeg, report, serving
from tests.api.test_app_assessment_stream import held_llm
from tests.ui.conftest import damage_tag

expect = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is missing: pip install -e '.[dev]' -c constraints.txt",
).expect

VISION_ANSWER = {
    "damages": [
        {"type": "dent", "part": "hood", "severity": "moderate"},
        {"type": "scratch", "part": "front_bumper", "severity": "minor"},
    ],
    "overall_severity": "moderate",
    "cost_estimate": {"min": 700, "max": 900},
    "repair_recommendations": [{"part": "hood", "action": "repair"}],
    "report": "Hood dent; repair.",
}
ANSWERS = ["Base answer.", "Manual says 24 Nm.", "Tuned answer.", "Tuned with manual.", "Agent."]
PASSAGE_TEXT = {hit.id: hit.text for hit in MANUAL}


def stream_events(response) -> list[dict]:
    """The ``data:`` objects of a server-sent-events response (read once it has ended)."""
    return [
        json.loads(line.removeprefix("data: "))
        for event in response.text().split("\n\n")
        for line in event.split("\n")
        if line.startswith("data: ")
    ]


def test_both_approaches_side_by_side_as_they_finish(make_app, context, page, tmp_path):
    context.llm = held_llm(report())  # the agentic report waits until the test lets it write
    context.vision = FakeVision([json.dumps(VISION_ANSWER)])
    own, other = tmp_path / "own.png", tmp_path / "other.jpg"
    own.write_bytes(PHOTOS["p/own.png"])  # an earlier claim's photo: the agentic fraud signal
    other.write_bytes(jpeg(3))
    with serving(make_app()) as url:
        page.goto(url)  # `/` redirects to the assessment page
        expect(page).to_have_url(f"{url}/ui/")
        page.get_by_label("Photos").set_input_files([own, other])
        expect(page.locator("#chosen li")).to_have_text(["own.png", "other.jpg"])
        page.get_by_label("Both, side by side").check()
        with page.expect_response("**/v1/assessments") as answer:
            page.get_by_role("button", name="Assess").click()
        finetuned = page.locator('[data-approach="finetuned"]')
        agentic = page.locator('[data-approach="agentic"]')
        # the fine-tuned column is filled while the agentic approach still writes its report
        expect(finetuned.locator(".severity")).to_have_text("moderate")
        expect(agentic.locator(".pending")).to_have_text("Assessing…")
        expect(page.locator("#agreement")).to_be_hidden()
        assert context.llm.backend.given == 0
        context.llm.backend.go.set()
        expect(page.locator("#assess-status")).to_have_text("Done.")
        events = stream_events(answer.value)
        assert [(e["type"], e.get("approach")) for e in events] == [
            ("assessment", "finetuned"),
            ("assessment", "agentic"),
            ("agreement", None),
            ("done", None),
        ]
        body = events[-1]["body"]
        assert set(body["assessments"]) == {"finetuned", "agentic"}
        agreement = body["agreement"]
        expect(page.locator("#agreement")).to_have_text(
            f"The approaches agree on {agreement['agreed']} of {agreement['checked']} checks."
        )
        for name, assessment in body["assessments"].items():
            column = page.locator(f'[data-approach="{name}"]')
            rows = column.locator("table.damages tbody tr")
            expect(rows).to_have_count(len(assessment["damages"]))
            for row, damage in zip(rows.all(), assessment["damages"], strict=True):
                cells = row.locator("td")
                expect(cells.nth(0)).to_contain_text(damage["part"].replace("_", " "))
                expect(cells.nth(1)).to_have_text(damage["type"])
                kind, tag = damage_tag(damage, agreement)
                expect(cells.nth(0)).to_have_class(kind)
                expect(cells.nth(0)).to_contain_text(tag)
            expect(column.locator(".severity")).to_contain_text(assessment["overall_severity"])
            cost = assessment["cost_estimate"]
            expect(column.locator(".cost")).to_contain_text(f"{cost['min']:,.0f} USD")
            expect(column.locator(".fraud")).to_contain_text(assessment["fraud"]["level"])
            expect(column.locator(".signals li")).to_have_text(assessment["fraud"]["signals"])
            expect(column.locator("dl.timings dt")).to_have_text(list(assessment["timings_ms"]))
            # each photo is shown (from the browser's own copy of the file)
            images = column.locator(".photo img")
            expect(images).to_have_count(2)
            assert all(src.startswith("blob:") for src in images.evaluate_all(SOURCES))
        # the hood dent both found is marked; only the fine-tuned model saw the bumper scratch
        assert agreement["damages"]["shared"] == ["hood:dent"]
        assert agreement["fraud_level"]["equal"] is False
        expect(agentic.locator(".fraud")).to_have_class(re.compile("differ"))
        # each cited passage opens to its text; the recommendation's reference leads to it
        cited = agentic.locator(".cited details")
        expect(cited.locator("summary")).to_have_text(["blk-hood-dent", "blk-torque"])
        assert body["passages"] == PASSAGE_TEXT
        expect(cited.locator("blockquote").first).to_be_hidden()
        reference = agentic.get_by_role("link", name="blk-hood-dent")
        reference.focus()
        page.keyboard.press("Enter")
        expect(cited.first.locator("summary")).to_be_focused()
        expect(cited.first.locator("blockquote")).to_have_text(PASSAGE_TEXT["blk-hood-dent"])
        cited.last.locator("summary").click()
        expect(cited.last.locator("blockquote")).to_have_text(PASSAGE_TEXT["blk-torque"])

        # at phone width the columns stack and nothing scrolls sideways
        page.set_viewport_size({"width": 375, "height": 800})
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        finetuned_box = page.locator('[data-approach="finetuned"]').bounding_box()
        assert agentic.bounding_box()["y"] > finetuned_box["y"]


SOURCES = "images => images.map((img) => img.src)"


def test_one_photo_shows_each_approach_boxes(make_app, context, page, tmp_path):
    """A box is in one photo's pixels: [x, y, w, h] of the 64x48 photo, drawn over it."""
    context.llm = fake_llm(report())
    boxes = {"agentic": [16, 12, 32, 24], "finetuned": [0, 24, 16, 24]}
    context.damage_model = FakeDamageModel(
        [Damage(type="dent", part="hood", severity="moderate", bbox=boxes["agentic"])]
    )
    answer = VISION_ANSWER | {
        "damages": [{"type": "scratch", "part": "front_bumper", "severity": "minor",
                     "bbox": boxes["finetuned"]}]
    }  # fmt: skip
    context.vision = FakeVision([json.dumps(answer)])
    photo = tmp_path / "hood.jpg"
    photo.write_bytes(jpeg(5, size=(64, 48)))
    with serving(make_app()) as url:
        page.goto(f"{url}/ui/")
        page.get_by_label("Photos").set_input_files(photo)
        page.get_by_role("button", name="Assess").click()
        expect(page.locator("#assess-status")).to_have_text("Done.")
        for name, (x, y, w, h) in boxes.items():
            column = page.locator(f'[data-approach="{name}"]')
            expect(column.locator("figcaption")).to_have_text("hood.jpg: 1 box")
            box = column.locator(".box")
            expect(box).to_have_count(1)
            label = "hood dent" if name == "agentic" else "front bumper scratch"
            expect(box).to_have_text(label)
            picture = column.locator(".photo img").bounding_box()
            drawn = box.bounding_box()
            scale = picture["width"] / 64
            assert picture["height"] == pytest.approx(48 * scale, abs=1)
            assert drawn["x"] == pytest.approx(picture["x"] + x * scale, abs=1)
            assert drawn["y"] == pytest.approx(picture["y"] + y * scale, abs=1)
            assert drawn["width"] == pytest.approx(w * scale, abs=1)
            assert drawn["height"] == pytest.approx(h * scale, abs=1)


def test_with_several_photos_a_box_is_drawn_on_the_photo_it_names(
    make_app, context, page, tmp_path
):
    """The damage tool says which photo each box is in (``image``); a box that does not say is
    left out with a note rather than drawn on a guess."""
    context.llm = fake_llm(report())
    context.damage_model = FakeDamageModel(
        [Damage(type="dent", part="hood", severity="moderate", bbox=[16, 12, 32, 24], image=1)]
    )
    answer = VISION_ANSWER | {
        "damages": [{"type": "scratch", "part": "front_bumper", "severity": "minor",
                     "bbox": [0, 24, 16, 24]},
                    {"type": "dent", "part": "hood", "severity": "severe"}]
    }  # fmt: skip
    context.vision = FakeVision([json.dumps(answer)])
    first, second = tmp_path / "front.jpg", tmp_path / "hood.jpg"
    first.write_bytes(jpeg(3, size=(64, 48)))
    second.write_bytes(jpeg(5, size=(64, 48)))
    with serving(make_app()) as url:
        page.goto(f"{url}/ui/")
        page.get_by_label("Photos").set_input_files([first, second])
        page.get_by_role("button", name="Assess").click()
        expect(page.locator("#assess-status")).to_have_text("Done.")
        agentic = page.locator('[data-approach="agentic"]')
        expect(agentic.locator("figcaption")).to_have_text(["front.jpg", "hood.jpg: 1 box"])
        expect(agentic.locator(".photo").nth(1).locator(".box")).to_have_text("hood dent")
        finetuned = page.locator('[data-approach="finetuned"]')
        expect(finetuned.locator(".box")).to_have_count(0)
        expect(finetuned.locator(".note")).to_contain_text(
            "1 box not drawn: the answer does not say which photo"
        )
        # both found the hood dent, at different severities; only one the bumper scratch
        expect(finetuned.locator("table.damages tbody tr td:first-child")).to_have_text(
            ["front bumper (only this approach)", "hood (both found; severity differs)"]
        )
        expect(agentic.locator("table.damages tbody tr td:first-child")).to_have_text(
            ["hood (both found; severity differs)"]
        )


def test_a_corrupt_photo_shows_the_api_message_beside_it(make_app, page, tmp_path):
    good, cut = tmp_path / "good.jpg", tmp_path / "cut.jpg"
    good.write_bytes(jpeg(2))
    cut.write_bytes(jpeg(size=(320, 240))[:-200])
    with serving(make_app()) as url:
        response = page.goto(f"{url}/ui/")
        headers = response.headers
        assert headers["content-security-policy"] == content_security_policy()
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        page.get_by_label("Photos").set_input_files([good, cut])
        page.get_by_label("Agentic").check()
        with page.expect_response("**/v1/assessments") as answer:
            page.get_by_role("button", name="Assess").click()
        assert answer.value.status == 400
        error = answer.value.json()["error"]
        assert error["message"].startswith("cut.jpg: the JPEG data is corrupt or cut off")
        # the message is beside the file it names, and only there
        expect(page.get_by_role("alert")).to_have_text(error["message"])
        expect(page.locator('#chosen li[data-file="cut.jpg"] .error')).to_have_text(
            error["message"]
        )
        expect(page.locator('#chosen li[data-file="good.jpg"] .error')).to_be_hidden()
        expect(page.locator("#assess-status")).to_have_text("A photo was refused: see its message.")
        expect(page.locator("#results section")).to_have_count(0)


def test_a_refused_photo_among_same_named_ones_is_told_by_its_position(make_app, page, tmp_path):
    """Phones name every photo alike (image.jpg): the API adds the position, and the page puts
    the message beside the right one."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good, cut = tmp_path / "a" / "image.jpg", tmp_path / "b" / "image.jpg"
    good.write_bytes(jpeg(2))
    cut.write_bytes(jpeg(size=(320, 240))[:-200])
    with serving(make_app()) as url:
        page.goto(f"{url}/ui/")
        page.get_by_label("Photos").set_input_files([good, cut])
        page.get_by_label("Agentic").check()
        with page.expect_response("**/v1/assessments") as answer:
            page.get_by_role("button", name="Assess").click()
        message = answer.value.json()["error"]["message"]
        assert message.startswith("image.jpg (image 2): the JPEG data is corrupt or cut off")
        errors = page.locator("#chosen li .error")
        expect(errors.nth(1)).to_have_text(message)
        expect(errors.nth(0)).to_be_hidden()


def test_one_question_streams_into_five_columns_by_keyboard(make_app, context, page):
    context.llm = fake_llm(*ANSWERS)
    with serving(make_app()) as url:
        page.goto(f"{url}/ui/chat")
        columns = page.locator("#answers section")
        expect(columns).to_have_count(5)
        page.get_by_label("Question").fill("What is the hood hinge bolt torque?")
        page.keyboard.press("Tab")
        expect(page.get_by_role("button", name="Ask all modes")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#chat-status")).to_have_text("All modes answered.")
        answers = columns.locator(".answer").all_inner_texts()
        # each request took the next scripted reply; two ran at a time, in either order
        assert sorted(answers) == sorted(ANSWERS)
        modes = [c.get_attribute("data-mode") for c in columns.all()]
        assert modes == ["base", "rag", "finetuned", "finetuned-rag", "agent"]
        # the retrieval modes list their passages, each opening to its text
        for mode in ("rag", "finetuned-rag"):
            passages = page.locator(f'[data-mode="{mode}"] .used > .passages details')
            expect(passages.locator("summary")).to_have_text(list(PASSAGE_TEXT))
        first = page.locator('[data-mode="rag"] .used > .passages details').first
        first.locator("summary").click()
        expect(first.locator("blockquote")).to_have_text(PASSAGE_TEXT["blk-hood-dent"])
        expect(page.locator('[data-mode="base"] .used')).to_be_empty()
        expect(page.locator('[data-mode="agent"] .used > .passages')).to_have_count(0)
        # the agent's column says which tool it called, with what, and what that found
        call = page.locator('[data-mode="agent"] .tools > li')
        question = "What is the hood hinge bolt torque?"
        expect(call).to_have_count(1)
        expect(call.locator("> code")).to_have_text(f'lookup_spec(query="{question}")')
        expect(call).to_contain_text("found 1 passage")
        expect(call.locator("summary")).to_have_text(["blk-torque"])


def test_job_progress_log_and_cancel(make_app, release, page):
    with serving(make_app()) as url:
        page.goto(f"{url}/ui/jobs")

        def submit(kind: str, params: str = "{}"):
            page.get_by_label("Kind").fill(kind)
            page.get_by_label("Parameters").fill(params)
            page.get_by_role("button", name="Submit job").click()
            expect(page.locator("#job-status")).to_contain_text("Submitted")
            return page.locator("#jobs tbody tr").first

        first = submit("release")
        expect(first.locator(".state")).to_have_text("running")
        expect(first.locator("progress")).to_have_attribute("value", "0.5")
        expect(first.locator(".percent")).to_have_text("50 %")
        first.get_by_text("Log").click()
        expect(first.locator(".log")).to_have_text("waiting")
        first.get_by_role("button", name=re.compile("Cancel")).click()
        expect(first.locator(".state")).to_have_text("cancelled")
        expect(first.locator(".log")).to_contain_text("stopping")  # the open log stays open

        second = submit("release")
        expect(second.locator(".percent")).to_have_text("50 %")
        release.release.set()
        expect(second.locator(".state")).to_have_text("succeeded")
        expect(second.locator(".percent")).to_have_text("100 %")
        expect(second.get_by_role("button", name=re.compile("Cancel"))).to_be_hidden()

        submit("nope")
        expect(page.get_by_role("alert")).to_contain_text("nope")
        page.goto("about:blank")  # stop the page's polling before the server stops


class StyledCompare:
    """A ``compare`` job kind whose report is the real HTML report's (inline style and plot)."""

    def __init__(self, settings) -> None:
        self.settings = settings

    def __call__(self, params, progress, log, cancel):
        out = self.settings.runs_dir / params["name"]
        out.mkdir(parents=True)
        (out / "plot.png").write_bytes(PHOTOS["p/own.png"])
        blocks = [Block("h1", f"tunegraph compare: {params['name']}"), Block("img", "plot.png")]
        (out / "report.html").write_text(to_html(blocks, out, params["name"]))
        return {"out": str(out)}


def test_a_compare_report_opens_in_a_sandboxed_frame(make_app, settings, page):
    with serving(make_app(kinds={"compare": StyledCompare(settings)})) as url:
        job = httpx.post(f"{url}/v1/jobs", json={"kind": "compare", "params": {"name": "w49"}})
        job_id = job.json()["id"]
        page.goto(f"{url}/ui/jobs")
        expect(page.locator(f'[data-job="{job_id}"] .state')).to_have_text("succeeded")
        page.get_by_role("link", name="Reports").click()
        page.get_by_role("button", name="Open report w49").click()
        frame = page.frame_locator("#report-frame")
        expect(frame.locator("h1")).to_have_text("tunegraph compare: w49")
        # the report's own stylesheet applies (its hash is in the policy); its plot shows
        expect(frame.locator("body")).to_have_css("max-width", "1100px")
        assert frame.locator("img").evaluate("img => img.naturalWidth") > 0
        assert page.locator("#report-frame").get_attribute("sandbox") == ""


def test_with_keys_a_wrong_key_shows_the_401_and_the_right_one_works(make_app, page):
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    with serving(make_app(api_keys=("k-right",))) as url:
        page.goto(f"{url}/ui/chat")
        expect(page.get_by_role("alert")).to_contain_text("API key")  # the models need a key
        page.get_by_label("API key").fill("k-wrong")
        page.get_by_role("button", name="Use key").click()
        error = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer k-wrong"})
        assert error.status_code == 401
        expect(page.get_by_role("alert")).to_have_text(error.json()["error"]["message"])
        page.get_by_label("API key").fill("k-right")
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("#answers section")).to_have_count(5)
        expect(page.get_by_role("alert")).to_be_hidden()
        page.get_by_role("link", name="Jobs").click()  # the key lasts for the tab
        expect(page.locator("#jobs-empty")).to_be_visible()
    assert (f"{url}/v1/models", "Bearer k-right") in sent
    assert not [u for u, _ in sent if "k-right" in u or "k-wrong" in u]


UNLABELLED = """[...document.querySelectorAll("input, textarea, select, button, progress, iframe")]
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                   && !e.getAttribute("title") && !e.textContent.trim())
    .map((e) => e.outerHTML)"""


def test_every_control_is_labelled_and_every_page_fits_a_phone(make_app, page):
    page.set_viewport_size({"width": 375, "height": 800})
    with serving(make_app()) as url:
        httpx.post(f"{url}/v1/jobs", json={"kind": "count", "params": {"n": 2}})
        for path in ("/ui/", "/ui/chat", "/ui/jobs", "/ui/reports"):
            page.goto(url + path)
            page.wait_for_load_state("networkidle")
            assert page.evaluate(UNLABELLED) == [], path
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
        # keyboard: the skip link comes first and leads to the content
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
