"""The graphs on the embedded models: SmolLM2 with a LoRA adapter trained here, MiniLM
retrieval over LanceDB, the SQLite claims history, and a damage model trained here on a tiny
demo corpus."""

from __future__ import annotations

import dataclasses

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agents.backends.transformers import TransformersBackend
from agents.chat_model import LocalChatModel
from agents.context import AgentContext
from agents.graphs import assess_agentic, assess_finetuned, service_chat
from finetune.recipes.text_lora import run
from ingest.assessment import Assessment
from rag.embeddings import Embedder
from rag.retrieval import Retriever
from rag.stores.base import Document
from rag.stores.lancedb import LanceDBStore
from tests.agents.conftest import INCIDENT, PHOTOS, VIN
from tests.agents.fakes import FakeDamageModel
from tests.finetune.test_text_lora import EXAMPLES, _config

pytestmark = pytest.mark.real_model

BASE = "smollm2-135m-instruct"
BLOCKS = [
    Document("spec-wheel", "Wheel nut torque: 110 Nm.", {"kind": "SPEC", "source": "m.pdf"}),
    Document(
        "spec-oil", "Engine oil capacity with filter: 4.2 L.", {"kind": "SPEC", "source": "m.pdf"}
    ),
    Document(
        "proc-hood",
        "Hood dent repair: dents up to 30 mm without paint damage are repaired paintless; "
        "larger dents need filler and refinish.",
        {"kind": "PROCEDURE", "source": "m.pdf"},
    ),
    Document(
        "ts-p0117",
        "P0117 engine coolant temperature sensor circuit low: check connector EM-C3 for a short.",
        {"kind": "TROUBLESHOOTING", "source": "m.pdf"},
    ),
]


@pytest.fixture(scope="module")
def llm(model_store, tmp_path_factory):
    """SmolLM2 with an adapter trained for a few steps by the text recipe."""
    model, tokenizer = model_store.load_causal_lm(BASE)
    config = dataclasses.replace(_config(epochs=1), base_model=BASE)
    out = tmp_path_factory.mktemp("adapter-run")
    result = run(config, model, tokenizer, EXAMPLES, EXAMPLES[:2], out, data_hash="h")
    base, tokenizer = model_store.load_causal_lm(BASE)
    backend = TransformersBackend(base, tokenizer, BASE, {"ft": result.adapter_dir})
    return LocalChatModel(backend=backend, max_tokens=48)


@pytest.fixture(scope="module")
def manuals(model_store, tmp_path_factory):
    embedder = Embedder(model_store.load_embedder("all-minilm-l6-v2"), "all-minilm-l6-v2")
    store = LanceDBStore(tmp_path_factory.mktemp("lancedb"), "manuals", embedder.dim)
    store.upsert(BLOCKS, embedder.embed([b.text for b in BLOCKS]))
    return Retriever(embedder, store)


def test_service_chat_finetuned_rag_answers_from_retrieved_blocks(llm, manuals):
    context = AgentContext(llm=llm, finetuned_adapter="ft", manuals=manuals, manual_k=2)
    state = service_chat.graph.invoke(
        {"messages": [HumanMessage("What is the wheel nut torque?")], "mode": "finetuned-rag"},
        context=context,
    )
    assert state["context"][0]["id"] == "spec-wheel"
    reply = state["messages"][-1]
    assert isinstance(reply, AIMessage) and reply.content.strip()
    assert reply.usage_metadata["output_tokens"] > 0
    assert state["models"]["chat"] == f"{BASE}+ft"


@pytest.mark.parametrize("router", ["rules", "model"])
def test_service_chat_agent_mode_ends_with_an_answer(llm, manuals, router):
    context = AgentContext(
        llm=llm, finetuned_adapter="ft", manuals=manuals, max_tool_rounds=1, router=router
    )
    state = service_chat.graph.invoke(
        {"messages": [HumanMessage("What does fault code P0117 mean?")], "mode": "agent"},
        context=context,
    )
    final = state["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls and final.content.strip()
    # Every call the model made was well-formed and named an offered tool.
    names = {"search_manual", "lookup_spec", "lookup_fault_code"}
    calls = [c for m in state["messages"] if isinstance(m, AIMessage) for c in m.tool_calls]
    assert calls and all(c["name"] in names and isinstance(c["args"], dict) for c in calls)


def test_assess_agentic_with_the_real_report_model(llm, manuals, claims_db):
    context = AgentContext(
        llm=llm,
        finetuned_adapter="ft",
        manuals=manuals,
        claims_db=claims_db,
        damage_model=FakeDamageModel.of_hood_dent(),
        open_photo=lambda path: PHOTOS[path],
    )
    claim = {"vin": VIN, "policy_id": "POL-1", "incident_date": INCIDENT.isoformat()}
    state = assess_agentic.graph.invoke(
        {"images": [PHOTOS["p/own.png"]], "claim": claim}, context=context
    )
    assessment = Assessment.model_validate(state["assessment"])
    assert assessment.report.strip()
    assert set(state["cited"]) <= {e.id for e in assessment.evidence}
    assert assessment.repair_recommendations[0].reference == "proc-hood"
    assert assessment.models["report"] == f"{BASE}+ft"


@pytest.fixture(scope="module")
def damage_run(tmp_path_factory):
    """The damage model recipe, briefly trained on a tiny demo corpus: its folder and the
    decoded training pairs."""
    from finetune.config import load_config
    from finetune.recipes.image_classifier import ImageClassifierConfig
    from finetune.recipes.image_classifier import run as train_classifier
    from finetune.vision_datasets import damage_examples, decode
    from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus
    from tests.finetune.test_image_classifier import TINY

    root = tmp_path_factory.mktemp("damage") / "demo"
    generate_demo_corpus(
        root, DemoCorpusConfig(seed=5, n_claims=60, n_images=24, n_scanned_pages=0)
    )
    examples, _ = damage_examples("train", demo_dir=root)
    config = load_config(ImageClassifierConfig, None, [*TINY, "train.epochs=1"])
    pairs = decode(examples).items
    result = train_classifier(config, pairs, [], root.parent / "run", data_hash="t")
    return result.model_dir, pairs


@pytest.fixture(scope="module")
def damage_model(damage_run):
    """The damage model and one of its training photos."""
    from finetune.vision_models import DamageDetector

    model_dir, pairs = damage_run
    return DamageDetector.load(model_dir), pairs[0][1].path.read_bytes()


def test_assess_agentic_with_the_real_damage_and_report_models(
    llm, manuals, claims_db, damage_model
):
    detector, photo = damage_model
    context = AgentContext(
        llm=llm,
        finetuned_adapter="ft",
        manuals=manuals,
        claims_db=claims_db,
        damage_model=detector,
        open_photo=lambda path: PHOTOS[path],
    )
    claim = {"vin": VIN, "policy_id": "POL-1", "incident_date": INCIDENT.isoformat()}
    state = assess_agentic.graph.invoke({"images": [photo], "claim": claim}, context=context)
    assessment = Assessment.model_validate(state["assessment"])
    assert assessment.damages and all(d.bbox for d in assessment.damages)
    assert assessment.models["damage"] == detector.name
    assert {r.part for r in assessment.repair_recommendations} <= {
        d.part for d in assessment.damages
    }
    assert assessment.cost_estimate.max >= assessment.cost_estimate.min > 0
    assert assessment.report.strip() and not state.get("errors")


def test_assess_finetuned_with_a_vision_language_model_on_smollm2(
    model_store, damage_run, tmp_path
):
    """The fine-tuned approach end to end: the VLM recipe (the damage model as encoder, the
    embedded SmolLM2 as decoder) briefly trained, loaded, and called by the graph."""
    from finetune.config import load_config
    from finetune.recipes.vision_lm import VisionLMConfig
    from finetune.recipes.vision_lm import run as train_vlm
    from finetune.vision_lm import VisionLM, VisionLMAssessor

    encoder_dir, pairs = damage_run
    config = load_config(
        VisionLMConfig,
        None,
        ["align.max_steps=2", "align.batch_size=4", "train.max_steps=8", "train.batch_size=4"],
    )
    decoder, tokenizer = model_store.load_causal_lm(BASE)
    result = train_vlm(
        config, decoder, tokenizer, encoder_dir, pairs, pairs[:4], tmp_path, data_hash="v"
    )
    vision = VisionLMAssessor(VisionLM.load(result.model_dir, model_store.load_causal_lm))
    photo = pairs[0][1].path.read_bytes()
    state = assess_finetuned.graph.invoke(
        {"images": [photo, photo], "claim": {"vin": VIN}}, context=AgentContext(vision=vision)
    )
    assessment = Assessment.model_validate(state["assessment"])
    assert assessment.approach == "finetuned"
    assert assessment.models["vision"] == vision.name
    assert assessment.cost_estimate.max >= assessment.cost_estimate.min
    assert set(assessment.timings_ms) >= {"vision", "total"}
