"""The web pages in a real browser on the embedded models: the assess page shows exactly what
``POST /v1/assessments`` streamed for a demo photo with both approaches (each approach's event,
the agreement, and the whole answer of ``done``), and one chat question gets an answer from each
of the five modes, each exactly as it streamed, with the passages and tools it used.

The home is built once for the module as a person builds one, through the CLI: the demo corpus
(a small one), the demo manual and claims ingested (MiniLM, LanceDB, SQLite), and the three
models trained from it with the shipped recipes cut to a few steps: the damage model, the
vision-language model (its encoder that damage model, its decoder SmolLM2's first layer) and
the manual LoRA adapter on the real SmolLM2-135M. The models are weak; what is checked is that
the page shows what the API said, not what the models found.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from api.cli.main import main
from api.server.app import create_app
from api.settings import Settings
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus
from tests.api.conftest import serving
from tests.ui.conftest import damage_tag

expect = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is missing: pip install -e '.[dev]' -c constraints.txt",
).expect

pytestmark = pytest.mark.real_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# the shipped recipes, cut to seconds: a 2-stage 64x48 ResNet; 2+2 steps of a 1-layer decoder
DAMAGE = (
    "image.width=64",
    "image.height=48",
    "scratch.widths=8,16",
    "scratch.depths=1,1",
    "train.batch_size=4",
    "train.epochs=2",
    # the barely trained heads put most pairs near 0.5: at the recipe's 0.5 a photo gets ten or
    # more damages, and the report prompt (three manual passages each) takes minutes on a CPU
    "threshold=0.65",
)
VLM = (
    "decoder_layers=1",
    "align_lora=true",
    "lora.r=4",
    "lora.alpha=8",
    "lora.last_layers=1",
    "align.batch_size=4",
    "align.max_steps=2",
    "train.batch_size=4",
    "train.max_steps=2",
    "val_examples=4",
    # its own encoder (encoder: own), as small as the damage model above
    *(f"own_encoder.{item}" for item in DAMAGE),
)
TEXT = (
    "train.epochs=1",
    "train.max_steps=2",
    "train.batch_size=2",
    "lora.r=4",
    "lora.alpha=8",
    "lora.last_layers=1",
    "data.spec_paraphrases=0",
    "data.raft_share=0",
    "data.max_val_examples=2",
    # auto picks bf16 autocast where the CPU has it natively; for two tiny steps fp32 is faster
    "train.precision=fp32",
)
MANUAL_CHAPTERS = ("Brakes", "Body and Closures")
MODES = ["base", "rag", "finetuned", "finetuned-rag", "agent"]
QUESTION = "What is the wheel speed sensor bolt torque?"
MODEL_WAIT_MS = 300_000  # a model answer on a busy 2-core CPU: seconds, sometimes a minute


@pytest.fixture(scope="module")
def demo_home(model_store, tmp_path_factory) -> Path:
    """A TUNEGRAPH_HOME with a demo corpus, its manual and claims ingested, and the damage
    model, vision-language model and text adapter trained from it (through the CLI)."""
    home = tmp_path_factory.mktemp("ui-real-home")
    # the session's model cache: SmolLM2's GGUF is converted once for every real-model test
    model_store.config.cache_dir.mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(model_store.config.cache_dir, target_is_directory=True)
    corpus = DemoCorpusConfig(seed=3, n_claims=60, n_images=24, n_scanned_pages=0)
    generate_demo_corpus(home / "demo", corpus)
    env = {"TUNEGRAPH_HOME": str(home), "TUNEGRAPH_DEVICE": "cpu"}

    def tunegraph(*args: str) -> None:
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == 0, f"tunegraph {' '.join(args)}:\n{result.output}"

    # two chapters of the manual (its Markdown rendering): the damaged body parts' repair
    # procedures and the chat question's answer, ~50 passages instead of ~400 to embed
    manual = (home / "demo" / "manual" / "vehicle_manual.md").read_text("utf-8")
    (home / "manual.md").write_text(_chapters(manual, *MANUAL_CHAPTERS), "utf-8")
    tunegraph("ingest", "manuals", str(home / "manual.md"))
    tunegraph("ingest", "claims", str(home / "demo" / "claims" / "claims.csv"))
    for config, overrides in (("damage_quick", DAMAGE), ("vlm_quick", VLM)):
        tunegraph(
            "finetune", "vision", "--config", str(CONFIGS / f"vision/{config}.yaml"), *overrides
        )
    tunegraph("finetune", "text", "--config", str(CONFIGS / "text/smollm2_quick.yaml"), *TEXT)
    return home


@pytest.fixture(scope="module")
def live(demo_home) -> Iterator[str]:
    """The app on ``demo_home`` over HTTP, its models loaded: its URL. Chat answers stop at 32
    tokens (``max_tokens_limit``), as the smoke demo profile caps them."""
    settings = Settings(
        home=demo_home,
        device="cpu",
        rate_limit_per_minute=0,
        max_tokens_limit=32,
        generation_timeout_s=MODEL_WAIT_MS // 1000,
    )
    app = create_app(settings=settings, job_kinds={})
    try:
        with serving(app) as url:
            ready = _wait_ready(url, timeout_s=600)
            loaded = ready["models"]["components"]
            # every component: SmolLM2 with the adapter, both indexes, damage model, VLM
            assert all(loaded.values()), loaded
            yield url
    finally:
        app.extensions["tunegraph"].jobs.shutdown()


def _chapters(manual: str, *titles: str) -> str:
    """The Markdown manual's title and its chapters ``## N TITLE`` named by ``titles``."""
    head, *chapters = re.split(r"(?m)^(?=## )", manual)
    kept = [c for c in chapters if c.split("\n", 1)[0].split(" ", 2)[-1].strip() in titles]
    assert len(kept) == len(titles), f"the demo manual has no chapter among {titles}"
    return head + "".join(kept)


def _wait_ready(url: str, timeout_s: float) -> dict:
    """/readyz's body once the models are loaded (its first call starts loading them)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(f"{url}/readyz", timeout=30)
        if response.status_code == 200:
            return response.json()
        message = response.json()["error"]["message"]
        assert "load failed" not in message and time.monotonic() < deadline, message
        time.sleep(0.5)


def test_both_approaches_show_what_the_api_answered(live, demo_home, page):
    annotations = json.loads((demo_home / "demo/damage/annotations/test.json").read_text())
    photo = demo_home / "demo/damage/images" / annotations["images"][0]["file_name"]  # held out
    page.goto(f"{live}/ui/")
    page.get_by_label("Photos").set_input_files(photo)
    page.get_by_label("Both, side by side").check()
    with page.expect_response("**/v1/assessments", timeout=MODEL_WAIT_MS) as answer:
        page.get_by_role("button", name="Assess").click()
    assert answer.value.status == 200
    expect(page.locator("#assess-status")).to_have_text("Done.", timeout=MODEL_WAIT_MS)
    events = _events(answer.value.text())
    *finished, agreed, done = events
    assert sorted(e["approach"] for e in finished) == ["agentic", "finetuned"]
    assert [e["type"] for e in finished] == ["assessment", "assessment"], finished
    assert (agreed["type"], done["type"], done["status"]) == ("agreement", "done", 200)
    body = done["body"]
    # what each event showed is what the whole answer says
    for event in finished:
        assert event["assessment"] == body["assessments"][event["approach"]]
        assert event["ms"] == body["timings_ms"][event["approach"]]
        assert event["notes"] == body["notes"].get(event["approach"], [])
    assert agreed["agreement"] == body["agreement"]
    assert body["errors"] == {}, body["errors"]
    assessments = body["assessments"]
    # the embedded models answered: the trained ones under their names, the report by SmolLM2
    # with the fine-tuned adapter
    assert assessments["finetuned"]["models"]["vision"].startswith("damage-vlm@")
    agentic_models = assessments["agentic"]["models"]
    assert agentic_models["damage"].startswith("damage-model@")
    assert agentic_models["report"] == "smollm2-135m-instruct+manual-lora"

    agreement = body["agreement"]
    expect(page.locator("#agreement")).to_have_text(
        f"The approaches agree on {agreement['agreed']} of {agreement['checked']} checks."
    )
    for name in ("finetuned", "agentic"):
        _expect_column(page.locator(f'[data-approach="{name}"]'), name, body, photo.name)


def test_one_question_gets_five_answers_as_they_streamed(live, page):
    streams = []
    page.on(
        "response",
        lambda r: streams.append(r) if r.url.endswith("/v1/chat/completions") else None,
    )
    page.goto(f"{live}/ui/chat")
    columns = page.locator("#answers section")
    expect(columns).to_have_count(5)
    assert [c.get_attribute("data-mode") for c in columns.all()] == MODES
    page.get_by_label("Question").fill(QUESTION)
    page.get_by_role("button", name="Ask all modes").click()
    expect(page.locator("#chat-status")).to_have_text("All modes answered.", timeout=MODEL_WAIT_MS)

    assert sorted(json.loads(r.request.post_data)["model"] for r in streams) == sorted(MODES)
    for response in streams:
        mode = json.loads(response.request.post_data)["model"]
        assert response.status == 200, (mode, response.text())
        text, usage, details = _streamed(response.text())
        assert text.strip(), mode  # every mode answered (the adapter exists: no "not available")
        column = page.locator(f'[data-mode="{mode}"]')
        expect(column.locator(".answer")).to_have_text(text)
        expect(column.locator(".answer")).not_to_have_class(re.compile(r"\berror\b"))
        tokens = usage["completion_tokens"]
        expect(column.locator(".meta")).to_have_text(f"{tokens} token{'' if tokens == 1 else 's'}")
        passages = details["passages"]
        expect(column.locator(".used > .passages > li > details > summary")).to_have_text(
            [p["id"] for p in passages]
        )
        expect(column.locator(".used > .passages > li > details > blockquote")).to_have_text(
            [p["text"] for p in passages]
        )
        if mode in ("rag", "finetuned-rag"):
            assert passages, f"{mode} answered without manual passages"
        calls = column.locator(".tools > li")
        expect(calls).to_have_count(len(details["tool_calls"]))
        for shown, call in zip(calls.all(), details["tool_calls"], strict=True):
            expect(shown.locator("> code")).to_have_text(_call(call))
            found = len(call["passages"])
            if call["status"] == "error":
                expect(shown).to_contain_text(f" failed: {call['message']}")
            elif found:
                expect(shown).to_contain_text(f" found {found} passage{'' if found == 1 else 's'}")
                expect(shown.locator("details > summary")).to_have_text(
                    [p["id"] for p in call["passages"]]
                )
            else:
                expect(shown).to_contain_text(f" found nothing: {call['message']}")
        if mode == "agent":
            assert details["tool_calls"], "the agent answered without calling a tool"


# ---- what the page should show, from the API's JSON (the formatting of ui/*.js) --------------


def _events(body: str) -> list[dict]:
    """The ``data:`` objects of an assessment's SSE body, whose ``type`` is the event's name."""
    events = []
    for event in body.split("\n\n"):
        if event.strip():
            lines = dict(line.split(": ", 1) for line in event.split("\n"))
            events.append(json.loads(lines["data"]))
            assert events[-1]["type"] == lines["event"]
    return events


def _call(call: dict) -> str:
    """A tool call as chat.js writes it: ``name(key=<JSON.stringify(value)>, ...)``."""
    args = ", ".join(
        f"{key}={json.dumps(value, ensure_ascii=False, separators=(',', ':'))}"
        for key, value in call["arguments"].items()
    )
    return f"{call['name']}({args})"


def _streamed(body: str) -> tuple[str, dict, dict]:
    """A chat SSE body's answer text, usage and ``tunegraph`` details."""
    events = [e.removeprefix("data: ") for e in body.split("\n\n") if e.strip()]
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert not [c for c in chunks if "error" in c], chunks
    text = "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"]
    )
    (last,) = [c for c in chunks if c.get("usage")]
    return text, last["usage"], last["tunegraph"]


def _number(value: float) -> str:
    """A JSON number as JavaScript prints it (``String(5.0)`` is ``5``)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _fixed(value: float, digits: int) -> str:
    """``value.toFixed(digits)`` / ``toLocaleString(maximumFractionDigits)``: halves round up."""
    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _money(value: float, currency: str) -> str:
    return f"{int(_fixed(value, 0)):,} {currency}"


def _tag(agree: bool) -> str:
    return " (both agree)" if agree else " (differs)"


def _expect_column(column, name: str, body: dict, photo: str) -> None:
    """Every value of ``body['assessments'][name]`` that the page shows, exactly."""
    a, agreement = body["assessments"][name], body["agreement"]
    expect(column.locator("h2")).to_have_text(
        {"finetuned": "Fine-tuned", "agentic": "Agentic"}[name]
    )
    # the one photo, with a box for each damage that has one, at the damage's [x, y, w, h]
    boxed = [d for d in a["damages"] if d["bbox"]]
    count = len(boxed)
    expect(column.locator("figcaption")).to_have_text(
        f"{photo}: {count} box{'' if count == 1 else 'es'}" if boxed else photo
    )
    boxes = column.locator(".photo .box")
    expect(boxes).to_have_count(count)
    for box, damage in zip(boxes.all(), boxed, strict=True):
        expect(box).to_have_attribute("data-bbox", ",".join(map(_number, damage["bbox"])))
        expect(box).to_have_text(f"{damage['part']} {damage['type']}".replace("_", " "))
    expect(column.locator(".severity")).to_have_text(
        a["overall_severity"] + _tag(agreement["overall_severity"]["equal"])
    )
    cost = a["cost_estimate"]
    expect(column.locator(".cost")).to_have_text(
        f"{_money(cost['min'], cost['currency'])} – {_money(cost['max'], cost['currency'])}"
        + _tag(agreement["cost_estimate"]["overlap"])
    )
    fraud = a["fraud"]
    expect(column.locator(".fraud")).to_have_text(
        f"{fraud['level']} (risk {_fixed(fraud['risk'], 2)})"
        + _tag(agreement["fraud_level"]["equal"])
    )
    expect(column.locator(".signals li")).to_have_text(fraud["signals"])

    rows = column.locator("table.damages tbody tr")
    if not a["damages"]:
        expect(column.get_by_text("No damage found.")).to_be_visible()
    expect(rows).to_have_count(len(a["damages"]))
    for row, damage in zip(rows.all(), a["damages"], strict=True):
        expect(row.locator("td")).to_have_text(
            [
                damage["part"].replace("_", " ") + damage_tag(damage, agreement)[1],
                damage["type"],
                damage["severity"],
                f"{math.floor(damage['confidence'] * 100 + 0.5)} %",  # Math.round
            ]
        )

    actions = set(agreement["repair_actions"]["shared"])
    expect(column.locator("h3:text-is('Repair recommendations') + ul li")).to_have_text(
        [
            f"{r['part'].replace('_', ' ')}: {r['action']}"
            + (f" — {r['reference']}" if r["reference"] else "")
            + _tag(f"{r['part']}:{r['action']}" in actions)
            for r in a["repair_recommendations"]
        ]
    )
    cited = [e["id"] for e in a["evidence"] if e["source"] == "manual"]
    expect(column.locator(".cited code")).to_have_text(cited)
    # each cited passage opens to its text, as the answer's `passages` give it
    expect(column.locator(".cited blockquote")).to_have_text(
        [body["passages"][i] for i in cited if i in body["passages"]]
    )
    if a["report"]:
        expect(column.locator(".report")).to_have_text(a["report"])
    else:
        expect(column.locator(".report")).to_have_count(0)
    expect(column.locator(".note")).to_have_text(
        [f"Note: {n}" for n in body["notes"].get(name, [])]
    )
    expect(column.locator("h3", has_text="Timings")).to_have_text(
        f"Timings ({_number(body['timings_ms'][name])} ms for this approach)"
    )
    expect(column.locator("dl.timings dt")).to_have_text(list(a["timings_ms"]))
    expect(column.locator("dl.timings dd")).to_have_text(
        [f"{_number(ms)} ms" for ms in a["timings_ms"].values()]
    )
