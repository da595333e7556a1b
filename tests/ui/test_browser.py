"""The web pages in a real browser (headless Chromium) against the app on fake models."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from agents.compare.report import Block, to_html
from api.server.blueprints.ui import content_security_policy
from tests.agents.conftest import PHOTOS
from tests.agents.fakes import FakeVision, fake_llm
from tests.api.conftest import jpeg, report, serving

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


def test_both_approaches_side_by_side_as_the_api_answered(make_app, context, page, tmp_path):
    context.llm = fake_llm(report())
    context.vision = FakeVision([json.dumps(VISION_ANSWER)])
    own, other = tmp_path / "own.png", tmp_path / "other.jpg"
    own.write_bytes(PHOTOS["p/own.png"])  # an earlier claim's photo: the agentic fraud signal
    other.write_bytes(jpeg(3))
    with serving(make_app()) as url:
        page.goto(url)  # `/` redirects to the assessment page
        expect(page).to_have_url(f"{url}/ui/")
        page.get_by_label("Photos").set_input_files([own, other])
        page.get_by_label("Both, side by side").check()
        with page.expect_response("**/v1/assessments") as answer:
            page.get_by_role("button", name="Assess").click()
        body = answer.value.json()
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
                shared = f"{damage['part']}:{damage['type']}" in agreement["damages"]["shared"]
                expect(cells.nth(0)).to_have_class("agree" if shared else "differ")
            expect(column.locator(".severity")).to_contain_text(assessment["overall_severity"])
            cost = assessment["cost_estimate"]
            expect(column.locator(".cost")).to_contain_text(f"{cost['min']:,.0f} USD")
            expect(column.locator(".fraud")).to_contain_text(assessment["fraud"]["level"])
            expect(column.locator(".signals li")).to_have_text(assessment["fraud"]["signals"])
            expect(column.locator("dl.timings dt")).to_have_text(list(assessment["timings_ms"]))
        # the hood dent both found is marked; only the fine-tuned model saw the bumper scratch
        assert agreement["damages"]["shared"] == ["hood:dent"]
        assert agreement["fraud_level"]["equal"] is False
        agentic = page.locator('[data-approach="agentic"]')
        expect(agentic.locator(".fraud")).to_have_class(re.compile("differ"))
        expect(agentic.locator(".cite code")).to_have_text(["blk-hood-dent", "blk-torque"])

        # at phone width the columns stack and nothing scrolls sideways
        page.set_viewport_size({"width": 375, "height": 800})
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        finetuned_box = page.locator('[data-approach="finetuned"]').bounding_box()
        assert agentic.bounding_box()["y"] > finetuned_box["y"]


def test_a_corrupt_photo_shows_the_api_message(make_app, page, tmp_path):
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg(size=(320, 240))[:-200])
    with serving(make_app()) as url:
        response = page.goto(f"{url}/ui/")
        headers = response.headers
        assert headers["content-security-policy"] == content_security_policy()
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        page.get_by_label("Photos").set_input_files(cut)
        page.get_by_label("Agentic").check()
        with page.expect_response("**/v1/assessments") as answer:
            page.get_by_role("button", name="Assess").click()
        assert answer.value.status == 400
        error = answer.value.json()["error"]
        assert error["message"].startswith("cut.jpg: the JPEG data is corrupt or cut off")
        expect(page.get_by_role("alert")).to_have_text(error["message"])
        expect(page.locator("#results section")).to_have_count(0)


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
        expect(page.locator('[data-mode="rag"] .meta')).to_contain_text("blk-hood-dent")


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
