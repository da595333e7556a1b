"""The composed vision-language model: its answer grammar, inputs and labels, the two-stage
recipe with exact resume, loading, constrained answers, and the CLI — on a tiny damage model and
a tiny random-weight decoder with SmolLM2's tokenizer."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from agents.graphs.assess_finetuned import parse_answer
from api.cli.main import main
from finetune.config import load_config
from finetune.constrained import free_positions, json_grammar, ll_tokenizer, matcher
from finetune.recipes.image_classifier import ImageClassifierConfig
from finetune.recipes.image_classifier import run as train_classifier
from finetune.recipes.vision_lm import VisionLMConfig, run
from finetune.trainer import TrainingError
from finetune.vision_data import answer_text, caption
from finetune.vision_lm import (
    IGNORE,
    ComposedVLM,
    ImageEncoder,
    VisionLM,
    VisionLMAssessor,
    VisionLMError,
    answer_schema,
    generate,
)
from finetune.workspace import Workspace
from ingest.images import image_bytes
from tests.finetune.test_image_classifier import TINY, damage_data, tiny_corpus  # noqa: F401
from tests.finetune.test_text_lora import tiny_llama_config, tiny_model

pytestmark = pytest.mark.real_model  # SmolLM2's tokenizer and chat template

STAGES = [
    "grid=2,2",
    "lora.r=4",
    "lora.alpha=8",
    "align.batch_size=4",
    "align.max_steps=3",
    "align.save_every=2",
    "train.batch_size=4",
    "train.epochs=2",
    "train.save_every=2",
    "train.lr=0.005",
]


@pytest.fixture(scope="module")
def tokenizer(model_store):
    return model_store.load_causal_lm("smollm2-135m-instruct")[1]


@pytest.fixture(scope="module")
def encoder_dir(damage_data, tmp_path_factory):  # noqa: F811
    train, _ = damage_data
    config = load_config(ImageClassifierConfig, None, [*TINY, "train.epochs=1"])
    out = tmp_path_factory.mktemp("encoder")
    return train_classifier(config, train, [], out, data_hash="e").model_dir


def _follows_the_schema(text: str | dict) -> dict:
    """The grammar's guarantees (an untrained model may still state max < min, which the
    fine-tuned graph rejects and asks again); the assessor hands over its merged answer read."""
    answer = json.loads(text) if isinstance(text, str) else text
    assert list(answer) == list(answer_schema()["properties"]), text
    kinds = {"dent", "scratch", "crack", "glass_shatter", "lamp_broken", "tire_flat"}
    assert all(d["type"] in kinds for d in answer["damages"]), text
    return answer


def _config(*extra: str) -> VisionLMConfig:
    return load_config(VisionLMConfig, None, [*STAGES, *extra])


def test_the_grammar_accepts_every_training_target(damage_data, tokenizer):  # noqa: F811
    train, val = damage_data
    ll_tok = ll_tokenizer(tokenizer, tokenizer.eos_token_id)
    lark = json_grammar(answer_schema())
    for _, example in [*train, *val]:
        text = answer_text(example)
        found = matcher(ll_tok, lark)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert all(found.consume_token(t) for t in ids), (text, found.get_error())
        assert found.consume_token(tokenizer.eos_token_id) and found.is_stopped(), text
        parse_answer(text)  # and the fine-tuned graph accepts it
    rejected = matcher(ll_tok, lark)
    bad = '{"damages":[{"type":"dent","part":"roof"'
    assert not all(rejected.consume_token(t) for t in tokenizer(bad)["input_ids"])


def test_labels_cover_only_the_answer_and_its_end_of_turn(tokenizer):
    vlm = ComposedVLM(tiny_model(tokenizer), tokenizer, feature_dim=8, cells=4)
    prompt = vlm.prompt("Assess.")
    answers = [vlm.answer_ids('{"a":1}'), vlm.answer_ids("{}")]
    embeds, attention, labels = vlm.inputs(torch.randn(2, 4, 8), prompt, answers)
    start = len(prompt[0]) + 4 + len(prompt[1])
    assert embeds.shape[:2] == labels.shape == attention.shape
    assert (labels[:, :start] == IGNORE).all()
    assert labels[0, start:].tolist() == answers[0]
    assert labels[0, -1] == tokenizer.eos_token_id
    assert labels[1, start : start + len(answers[1])].tolist() == answers[1]
    assert (labels[1, start + len(answers[1]) :] == IGNORE).all()
    assert attention[1].sum() == start + len(answers[1])
    # the visual tokens sit between the two halves of the prompt
    visual = vlm.projector(torch.randn(1, 4, 8))
    embeds, _, _ = vlm.inputs(torch.zeros(1, 4, 8), prompt, [[]])
    cut = len(prompt[0])
    assert torch.allclose(embeds[0, cut : cut + 4], vlm.projector(torch.zeros(4, 8)))
    assert visual.shape == (1, 4, tiny_model(tokenizer).config.hidden_size)


def test_a_batch_answers_as_each_photo_alone(tokenizer):
    """Rows append different numbers of forced tokens per pass: padding and position ids must
    keep each row's answer what it would be on its own."""
    torch.manual_seed(1)
    vlm = ComposedVLM(tiny_model(tokenizer, seed=1), tokenizer, feature_dim=8, cells=3).eval()
    prompt = vlm.prompt("Assess.")
    features = torch.randn(4, 3, 8) * 3
    ll_tok = ll_tokenizer(tokenizer, tokenizer.eos_token_id)
    lark = json_grammar(answer_schema())
    batched = generate(vlm, features, prompt, lark, ll_tok, max_new_tokens=600)
    alone = [generate(vlm, features[i : i + 1], prompt, lark, ll_tok, 600)[0] for i in range(4)]
    assert [a.text for a in batched] == [a.text for a in alone]
    assert len({a.text for a in batched}) > 1  # the rows really differ
    for answer in batched:
        assert answer.complete
        _follows_the_schema(answer.text)
    cut = generate(vlm, features[:1], prompt, lark, ll_tok, max_new_tokens=5)[0]
    assert not cut.complete and cut.tokens == 5


def test_captions_name_every_damage(damage_data):  # noqa: F811
    _, example = damage_data[0][0]
    text = caption(example)
    assert text.count(" on ") == len([d for d in example.damages if d.part])


def _train(tokenizer, encoder_dir, damage_data, out, config=None, **kwargs):  # noqa: F811
    train, val = damage_data
    return run(
        config or _config(),
        tiny_model(tokenizer),
        tokenizer,
        encoder_dir,
        train,
        val,
        out,
        data_hash="d",
        **kwargs,
    )


def test_two_stages_train_save_load_and_answer_valid_json(
    tokenizer,
    encoder_dir,
    damage_data,  # noqa: F811
    tmp_path,
):
    result = _train(tokenizer, encoder_dir, damage_data, tmp_path)
    model_dir = result.model_dir
    for name in ("vlm.json", "projector.safetensors", "tunegraph-manifest.json"):
        assert (model_dir / name).is_file(), name
    assert (model_dir / "encoder" / "labels.json").is_file()
    assert (model_dir / "adapter" / "adapter_config.json").is_file()
    assert (model_dir / "adapter" / "tokenizer_config.json").is_file()  # chat template
    manifest = json.loads((model_dir / "tunegraph-manifest.json").read_text())
    assert manifest["kind"] == "vision-language-model" and manifest["data_sha256"] == "d"
    train, _ = damage_data
    steps = 2 * -(-len(train) // 4)
    assert result.steps == 3 + steps
    assert result.metrics["align"]["steps"] == 3
    for stage in ("align", "instruct"):
        records = [
            json.loads(x) for x in (tmp_path / stage / "metrics.jsonl").read_text().splitlines()
        ]
        assert any("eval_loss" in r for r in records) and any("tokens_per_s" in r for r in records)

    model = VisionLM.load(model_dir, lambda name: (tiny_model(tokenizer), tokenizer))
    assert torch.equal(
        model.vlm.projector[0].weight, load_file(model_dir / "projector.safetensors")["0.weight"]
    )
    pictures = [picture for picture, _ in train[:3]]
    answers = model.answer(pictures, max_new_tokens=600)
    assert len(answers) == 3
    for answer in answers:
        assert answer.complete, answer.text
        _follows_the_schema(answer.text)  # from a barely trained decoder

    assessor = VisionLMAssessor(model)
    photo = Image.open(train[0][1].path)
    merged = _follows_the_schema(assessor.assess([image_bytes(photo), image_bytes(photo, "PNG")]))
    assert merged["overall_severity"] in ("minor", "moderate", "severe", "total_loss")
    assert assessor.name.startswith(model_dir.name)


def test_free_tokens_are_where_the_grammar_leaves_a_choice(damage_data, tokenizer):  # noqa: F811
    ll_tok = ll_tokenizer(tokenizer, tokenizer.eos_token_id)
    lark = json_grammar(answer_schema())
    _, example = damage_data[0][0]
    ids = [*tokenizer(answer_text(example), add_special_tokens=False)["input_ids"]]
    free = free_positions(ll_tok, lark, [*ids, tokenizer.eos_token_id])
    chosen = tokenizer.decode([t for t, f in zip(ids, free, strict=False) if f])
    forced = tokenizer.decode([t for t, f in zip(ids, free, strict=False) if not f])
    damage = json.loads(answer_text(example))["damages"][0]
    assert "damages" in forced and "overall_severity" in forced  # the keys are forced
    assert damage["severity"][:2] in chosen and damage["type"][:2] in chosen  # the rest is forced
    assert 0 < sum(free) < len(free) / 2
    assert free_positions(ll_tok, lark, tokenizer('{"oops"')["input_ids"]) is None


def test_labels_can_skip_the_forced_tokens(tokenizer):
    vlm = ComposedVLM(tiny_model(tokenizer), tokenizer, feature_dim=8, cells=4)
    prompt = vlm.prompt("Assess.")
    answer = vlm.answer_ids('{"a":1}')
    learn = [i % 2 == 0 for i in range(len(answer))]
    _, _, labels = vlm.inputs(torch.randn(1, 4, 8), prompt, [answer], learn=[learn])
    start = len(prompt[0]) + 4 + len(prompt[1])
    kept = labels[0, start : start + len(answer)].tolist()
    assert kept == [t if keep else IGNORE for t, keep in zip(answer, learn, strict=True)]


def test_instruct_loss_free_learns_only_the_chosen_tokens(
    tokenizer,
    encoder_dir,
    damage_data,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    every = _train(tokenizer, encoder_dir, damage_data, tmp_path / "all")
    seen = []  # each instruct batch's answers and the tokens that carry the loss
    inputs = ComposedVLM.inputs

    def recording(self, features, prompt, answers, tags=None, learn=None):
        if learn is not None:
            seen.extend(zip(answers, learn, strict=True))
        return inputs(self, features, prompt, answers, tags, learn)

    monkeypatch.setattr(ComposedVLM, "inputs", recording)
    free = _train(
        tokenizer, encoder_dir, damage_data, tmp_path / "free", config=_config("instruct_loss=free")
    )
    ll_tok = ll_tokenizer(tokenizer, tokenizer.eos_token_id)
    lark = json_grammar(answer_schema())
    assert seen  # the masks reached the batches, and they are the grammar's free tokens
    for answer, learn in seen:
        assert list(learn) == free_positions(ll_tok, lark, answer) and not all(learn)
    # the same steps, the loss averaged over other tokens: the eval losses differ, both finite
    loss_all, loss_free = every.metrics["eval_loss"], free.metrics["eval_loss"]
    assert loss_all == loss_all and loss_free == loss_free and loss_all != loss_free
    manifest = json.loads((free.model_dir / "tunegraph-manifest.json").read_text())
    assert manifest["config"]["instruct_loss"] == "free"


def test_instruct_can_train_lora_in_the_last_layers_only_with_the_projector_frozen(
    tokenizer,
    encoder_dir,
    damage_data,  # noqa: F811
    tmp_path,
):
    config = _config("instruct_projector=false", "lora.last_layers=1")
    result = _train(tokenizer, encoder_dir, damage_data, tmp_path, config=config)
    aligned = tmp_path / "align" / "checkpoints" / "step-000003" / "weights.safetensors"
    after_align = load_file(aligned)
    saved = load_file(result.model_dir / "projector.safetensors")
    assert all(torch.equal(after_align[f"projector.{k}"], v) for k, v in saved.items())
    adapter = load_file(result.model_dir / "adapter" / "adapter_model.safetensors")
    last = tiny_model(tokenizer).config.num_hidden_layers - 1
    assert adapter and all(f".layers.{last}." in name for name in adapter)
    instruct = tmp_path / "instruct" / "checkpoints"
    trained = load_file(max(instruct.iterdir()) / "weights.safetensors")
    assert not any(name.startswith("projector.") for name in trained)


def test_a_shallower_decoder_trains_saves_and_loads_with_its_first_layers(
    tokenizer,
    encoder_dir,
    damage_data,  # noqa: F811
    tmp_path,
):
    config = _config("decoder_layers=1", "align_lora=true")
    result = _train(tokenizer, encoder_dir, damage_data, tmp_path, config=config)
    assert json.loads((result.model_dir / "vlm.json").read_text())["decoder_layers"] == 1
    # align_lora: the adapter trains in the align stage already, and instruct goes on with it
    aligned = load_file(tmp_path / "align" / "checkpoints" / "step-000003" / "weights.safetensors")
    assert any("lora_" in name for name in aligned) and any("projector" in n for n in aligned)
    adapter = load_file(result.model_dir / "adapter" / "adapter_model.safetensors")
    assert adapter and all(".layers.0." in name for name in adapter)
    model = VisionLM.load(result.model_dir, lambda name: (tiny_model(tokenizer), tokenizer))
    assert len(model.vlm.causal_lm.get_decoder().layers) == 1
    train, _ = damage_data
    (answer,) = model.answer([train[0][0]], max_new_tokens=600)
    assert answer.complete, answer.text
    _follows_the_schema(answer.text)
    with pytest.raises(TrainingError, match=r"decoder_layers=3: .* has 2 layers; use 1..2"):
        _train(
            tokenizer, encoder_dir, damage_data, tmp_path / "x", config=_config("decoder_layers=3")
        )


def test_resume_continues_exactly(tokenizer, encoder_dir, damage_data, tmp_path):  # noqa: F811
    straight = _train(tokenizer, encoder_dir, damage_data, tmp_path / "a")
    stopped = _train(tokenizer, encoder_dir, damage_data, tmp_path / "b", stop_after_steps=3)
    assert stopped.metrics == {"stopped_early": True}
    resumed = _train(tokenizer, encoder_dir, damage_data, tmp_path / "b")
    assert resumed.steps == straight.steps
    a = load_file(straight.model_dir / "projector.safetensors")
    b = load_file(resumed.model_dir / "projector.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    a = load_file(straight.model_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed.model_dir / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_fail_clearly(tokenizer, damage_data, tmp_path):  # noqa: F811
    with pytest.raises(TrainingError, match=r"encoder=.*train the damage model first"):
        _train(tokenizer, tmp_path / "missing", damage_data, tmp_path / "run")
    with pytest.raises(VisionLMError, match="not a vision-language model"):
        VisionLM.load(tmp_path, lambda name: (None, None))
    with pytest.raises(ValueError, match="grid"):
        VisionLMConfig(grid=(0, 2))
    with pytest.raises(ValueError, match="val_examples=-1"):
        VisionLMConfig(val_examples=-1)


def test_short_answers_fit_but_long_ones_are_refused(tokenizer, encoder_dir, damage_data, tmp_path):  # noqa: F811
    with pytest.raises(TrainingError, match="max_length=40"):
        _train(tokenizer, encoder_dir, damage_data, tmp_path, config=_config("train.max_length=40"))


def test_the_encoder_pools_cnn_features_to_the_grid(encoder_dir, damage_data):  # noqa: F811
    encoder = ImageEncoder.load(encoder_dir, (2, 3))
    features = encoder.features([p for p, _ in damage_data[0][:5]], batch_size=2)
    assert features.shape == (5, 7, encoder.dim) and features.dtype == torch.float32


def test_head_scores_carry_the_damage_heads_probabilities_in_every_cell(encoder_dir, damage_data):  # noqa: F811
    from finetune.vision_data import split_damage_logits

    pictures = [p for p, _ in damage_data[0][:3]]
    plain = ImageEncoder.load(encoder_dir, (2, 2))
    scored = ImageEncoder.load(encoder_dir, (2, 2), head_scores=True)
    pairs = len(scored.classifier.labels)
    assert scored.dim == plain.dim + pairs * 4  # presence, and 3 severities per pair
    features = scored.features(pictures)
    assert torch.allclose(features[..., : plain.dim], plain.features(pictures), atol=1e-5)
    presence, severity, _ = split_damage_logits(scored.classifier.logits(pictures), pairs)
    expected = torch.cat([presence.sigmoid(), severity.softmax(-1).flatten(1)], dim=1)
    for cell in range(scored.cells):
        assert torch.allclose(features[:, cell, plain.dim :], expected, atol=1e-5)


def test_a_vlm_with_head_scores_trains_saves_and_loads_with_them(
    tokenizer,
    encoder_dir,
    damage_data,  # noqa: F811
    tmp_path,
):
    result = _train(
        tokenizer, encoder_dir, damage_data, tmp_path, config=_config("head_scores=true")
    )
    assert json.loads((result.model_dir / "vlm.json").read_text())["head_scores"] is True
    model = VisionLM.load(result.model_dir, lambda name: (tiny_model(tokenizer), tokenizer))
    assert model.encoder.head_scores
    (answer,) = model.answer([damage_data[0][0][0]], max_new_tokens=600)
    assert answer.complete, answer.text
    _follows_the_schema(answer.text)


def test_head_scores_need_a_damage_model(tokenizer, damage_data, tmp_path):  # noqa: F811
    train, _ = damage_data
    classes = [(picture, "dent" if i % 2 else "scratch") for i, (picture, _) in enumerate(train)]
    config = load_config(ImageClassifierConfig, None, [*TINY, "task=classify", "train.epochs=1"])
    classifier = train_classifier(config, classes, [], tmp_path / "c", data_hash="c").model_dir
    with pytest.raises(TrainingError, match="head_scores needs a damage model"):
        _train(
            tokenizer, classifier, damage_data, tmp_path / "run", config=_config("head_scores=true")
        )


def test_a_step_in_length_groups_has_the_loss_and_gradients_of_one_batch(tokenizer):
    from finetune.recipes.vision_lm import length_groups

    vlm = ComposedVLM(tiny_model(tokenizer), tokenizer, feature_dim=6, cells=2)
    prompt = vlm.prompt("Assess.")
    answers = [vlm.answer_ids("x" * n) for n in (3, 40, 7, 25, 12)]
    features = torch.randn(len(answers), 2, 6)

    def gradients(groups):
        vlm.zero_grad()
        total = 0.0
        for group in groups:
            loss = vlm.loss_sum(*vlm.inputs(features[group], prompt, [answers[i] for i in group]))
            loss.backward()
            total += loss.item()
        return total, [p.grad.clone() for p in vlm.parameters() if p.grad is not None]

    groups = length_groups(list(range(5)), answers)
    assert groups == [[0, 2, 4], [3, 1]]
    whole, whole_grads = gradients([list(range(5))])
    split, split_grads = gradients(groups)
    assert split == pytest.approx(whole, rel=1e-5)
    assert all(
        torch.allclose(a, b, atol=1e-5) for a, b in zip(whole_grads, split_grads, strict=True)
    )


def test_cli_trains_and_evaluates_the_vlm(tokenizer, encoder_dir, tiny_corpus, tmp_path):  # noqa: F811
    base = tmp_path / "tiny-base"
    tiny_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    config = tmp_path / "vlm.yaml"
    config.write_text("task: assess\nname: test-vlm\n")
    env = {"TUNEGRAPH_HOME": str(tmp_path / "home")}
    runner = CliRunner()
    overrides = [
        *STAGES,
        "train.epochs=1",
        f"base_model={base}",
        f"encoder={encoder_dir}",
        f"data.demo_dir={tiny_corpus}",
    ]
    result = runner.invoke(
        main, ["finetune", "vision", "--config", str(config), "--json", *overrides], env=env
    )
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout)
    model_dir = tmp_path / "home" / "vision" / "test-vlm"
    assert trained["model"] == str(model_dir) and (model_dir / "vlm.json").is_file()

    result = runner.invoke(
        main,
        ["eval", "vision", "--task", "damage", "--model", str(model_dir), "--json"],
        env={**env, "TUNEGRAPH_HOME": str(tiny_corpus.parent)},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] > 0 and 0 <= report["invalid_rate"] <= 1
    assert {"type_f1_macro", "part_f1_micro", "severity_accuracy", "latency_ms"} <= set(report)
    assert report["tokens_per_s"] > 0


def test_main_trains_the_composed_model_from_the_workspace(
    tokenizer,
    encoder_dir,
    damage_data,  # noqa: F811
    tiny_corpus,  # noqa: F811
    tmp_path,
):
    from finetune.recipes import vision_lm

    shutil.copytree(encoder_dir, tmp_path / "vision" / "my-encoder")
    asked: list[str] = []

    def load_causal_lm(name, quantization="none"):
        asked.append(f"{name} {quantization}")
        return tiny_model(tokenizer), tokenizer

    workspace = Workspace(
        demo_dir=tiny_corpus,
        runs_dir=tmp_path / "runs",
        adapters_dir=tmp_path / "adapters",
        vision_dir=tmp_path / "vision",
        models=SimpleNamespace(load_causal_lm=load_causal_lm),
    )
    lines: list[str] = []
    config = _config("train.epochs=1", "name=my-vlm", "encoder=my-encoder")
    done = vision_lm.main(config, workspace, log=lines.append)
    train, val = damage_data
    assert asked == ["smollm2-135m-instruct none"]  # train.quantization
    assert lines[0] == f"data: {len(train)} train / {len(val)} val images, 0 rejected"
    model_dir = tmp_path / "vision" / "my-vlm"
    summary = done.summary()
    assert summary["model"] == str(model_dir)
    assert summary["run_dir"] == str(tmp_path / "runs" / "my-vlm")
    assert summary["steps"] == 3 + -(-len(train) // 4) and summary["rejected"] == []
    assert done.headline.startswith(f"{summary['steps']} steps, eval loss ")
    # how the run ended, as every recipe says (issue 25)
    assert done.headline.splitlines()[1] == done.result.metrics["stop_summary"]
    manifest = json.loads((model_dir / "tunegraph-manifest.json").read_text())
    assert manifest["encoder"] == str(tmp_path / "vision" / "my-encoder")  # a name: vision_dir's
    assert (model_dir / "encoder" / "labels.json").is_file()
    assert (tmp_path / "runs" / "my-vlm" / "instruct" / "metrics.jsonl").is_file()


# ---- LoRA on an AutoModelForImageTextToText (a tiny random LLaVA) -------------------------------

CONTENT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}"
    "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_llava(tokenizer, folder, width: int = 32):
    """A 2-layer LLaVA (CLIP tower ``width`` wide on 32x32 images, Llama decoder as wide) with
    SmolLM2's tokenizer, saved in ``folder`` with its processor like a hub checkpoint."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=tiny_llama_config(tokenizer, hidden_size=width, intermediate_size=2 * width),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CONTENT_TEMPLATE,
    )
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llava(model_store, tmp_path_factory):
    """:func:`save_tiny_llava`, 32 wide."""
    tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")[1]
    return save_tiny_llava(tokenizer, tmp_path_factory.mktemp("tiny-llava"))


def test_lora_on_an_image_text_to_text_model_trains_loads_and_answers(
    tiny_llava,
    damage_data,  # noqa: F811
    tmp_path,
):
    from finetune.recipes import image_text_lora
    from finetune.vision_lm import ImageTextToTextLM

    train, val = damage_data
    config = _config(f"hf_model={tiny_llava}", "train.epochs=1")
    model, processor = image_text_lora.load(str(tiny_llava))
    image_id = model.config.image_token_index
    inputs, labels = image_text_lora.batch_inputs(
        processor, config.instruction, [train[0][0], train[1][0]], ['{"a":1}', "{}"]
    )
    assert (inputs["input_ids"] == image_id).sum() == 2 * 16  # the image tokens, expanded
    assert (labels[inputs["input_ids"] == image_id] == IGNORE).all()
    assert (labels != IGNORE).sum(1).tolist()[0] > (labels != IGNORE).sum(1).tolist()[1] > 0

    result = image_text_lora.run(config, train, val, tmp_path, data_hash="h")
    layout = json.loads((result.model_dir / "vlm.json").read_text())
    assert layout["kind"] == "image-text-to-text" and layout["base_model"] == str(tiny_llava)
    adapter = load_file(result.model_dir / "adapter" / "adapter_model.safetensors")
    assert adapter and all("language_model" in name for name in adapter)  # the tower is frozen
    assert result.metrics["eval_loss"] > 0 and result.metrics["tokens_per_s"] > 0

    loaded = VisionLM.load(result.model_dir, load_decoder=None)
    assert isinstance(loaded, ImageTextToTextLM)
    for answer in loaded.answer([p for p, _ in train[:2]], max_new_tokens=600):
        assert answer.complete, answer.text
        _follows_the_schema(answer.text)


def test_image_text_to_text_bad_inputs_fail_clearly(damage_data, tmp_path):  # noqa: F811
    from finetune.recipes import image_text_lora

    train, val = damage_data
    with pytest.raises(TrainingError, match="not an image-text-to-text model"):
        image_text_lora.run(
            _config(f"hf_model={tmp_path / 'nothing'}"), train, val, tmp_path, data_hash="h"
        )


def test_cli_trains_an_image_text_to_text_model(tiny_llava, tiny_corpus, tmp_path):  # noqa: F811
    config = tmp_path / "llava.yaml"
    config.write_text("task: assess\nname: test-llava\n")
    result = CliRunner().invoke(
        main,
        [
            "finetune",
            "vision",
            "--config",
            str(config),
            "--json",
            f"hf_model={tiny_llava}",
            f"data.demo_dir={tiny_corpus}",
            "train.max_steps=2",
            "train.batch_size=4",
        ],
        env={"TUNEGRAPH_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "home" / "vision" / "test-llava"
    assert json.loads(result.stdout)["steps"] == 2
    assert json.loads((model_dir / "vlm.json").read_text())["kind"] == "image-text-to-text"


def test_tags_sit_after_the_visual_tokens_and_each_answer_starts_after_its_own(tokenizer):
    vlm = ComposedVLM(tiny_model(tokenizer), tokenizer, feature_dim=8, cells=3)
    before, after = prompt = vlm.prompt("Assess.")
    tags = [vlm.tag_ids("minor dent on hood; severe crack on windshield"), vlm.tag_ids("x")]
    assert len(tags[0]) > len(tags[1]) > 0
    answers = [vlm.answer_ids('{"a":1}'), vlm.answer_ids('{"b":22}')]
    ids_of = vlm.causal_lm.get_input_embeddings()
    embeds, attention, labels = vlm.inputs(torch.randn(2, 3, 8), prompt, answers, tags)
    for row in range(2):
        start = len(before) + 3 + len(tags[row]) + len(after)
        assert (labels[row, :start] == IGNORE).all()
        assert labels[row, start : start + len(answers[row])].tolist() == answers[row]
        assert (labels[row, start + len(answers[row]) :] == IGNORE).all()
        assert attention[row].sum() == start + len(answers[row])
        # the tag tokens, then the rest of the prompt, right after the visual tokens
        middle = torch.tensor([*tags[row], *after])
        assert torch.equal(embeds[row, len(before) + 3 : start], ids_of(middle))
    assert (
        tokenizer.decode(tags[0]).strip()
        == "Damage model: minor dent on hood; severe crack on windshield"
    )


def test_a_batch_with_tags_of_different_lengths_answers_as_each_photo_alone(tokenizer):
    torch.manual_seed(2)
    vlm = ComposedVLM(tiny_model(tokenizer, seed=2), tokenizer, feature_dim=8, cells=3).eval()
    prompt = vlm.prompt("Assess.")
    features = torch.randn(3, 3, 8) * 3
    tags = [vlm.tag_ids(t) for t in ("minor dent on hood", "no damage", "a; b; c; d; e; f")]
    ll_tok = ll_tokenizer(tokenizer, tokenizer.eos_token_id)
    lark = json_grammar(answer_schema())
    batched = generate(vlm, features, prompt, lark, ll_tok, 600, tags=tags)
    alone = [
        generate(vlm, features[i : i + 1], prompt, lark, ll_tok, 600, tags=tags[i : i + 1])[0]
        for i in range(3)
    ]
    assert [a.text for a in batched] == [a.text for a in alone]
    untagged = generate(vlm, features, prompt, lark, ll_tok, 600)
    assert [a.text for a in untagged] != [a.text for a in batched]  # the tags are read
    for answer in batched:
        assert answer.complete
        _follows_the_schema(answer.text)


def test_a_vlm_with_tags_reads_the_damage_models_detections(
    tokenizer,
    encoder_dir,
    damage_data,  # noqa: F811
    tmp_path,
):
    from finetune.vision_lm import tag_text
    from finetune.vision_models import ImageClassifier

    pictures = [p for p, _ in damage_data[0][:3]]
    tagged = ImageEncoder.load(encoder_dir, (2, 2), tags=True)
    features, tags = tagged.read(pictures)
    assert torch.allclose(features, ImageEncoder.load(encoder_dir, (2, 2)).features(pictures))
    detected = ImageClassifier.load(encoder_dir).damages(pictures)
    assert tags == [tag_text(found) for found in detected] and all(tags)

    train = damage_data[0]
    config = _config("tags=true", "val_examples=2")
    result = _train(tokenizer, encoder_dir, (train, train), tmp_path, config=config)
    assert json.loads((result.model_dir / "vlm.json").read_text())["tags"] is True
    assert result.metrics["val_examples"] == 2 < len(train)  # eval losses on 2 photos only
    model = VisionLM.load(result.model_dir, lambda name: (tiny_model(tokenizer), tokenizer))
    assert model.encoder.tags
    _, tag_ids = model.read(pictures[:1])
    plain = len(model.prompt[0]) + model.vlm.cells + len(model.prompt[1])
    (answer,) = model.answer(pictures[:1], max_new_tokens=600)
    assert model.last_prompt_tokens == plain + len(tag_ids[0])
    assert answer.complete, answer.text
    _follows_the_schema(answer.text)
    # compare counts the tags among the fine-tuned model's input tokens
    from agents.compare.run import vision_token_counter

    assessor = VisionLMAssessor(model)
    count = vision_token_counter(assessor)
    photo = Image.open(damage_data[0][0][1].path)
    text = json.dumps(assessor.assess([image_bytes(photo)]), separators=(",", ":"))
    assert count([image_bytes(photo)], text) == (
        plain + len(model.read([photo.convert("RGB")])[1][0]),
        len(model.vlm.answer_ids(text)),
    )
    with pytest.raises(VisionLMError, match="tags needs a damage model"):
        ImageEncoder(type("C", (), {"task": "classify", "name": "c"})(), (1, 1), tags=True)


def test_only_the_photos_the_steps_reach_are_encoded(
    tokenizer,
    encoder_dir,
    damage_data,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    from finetune.trainer import visited

    train, val = damage_data
    config = _config("tags=true", "align.max_steps=1", "train.max_steps=1")
    reached = sorted(
        set(visited(len(train), config.align)) | set(visited(len(train), config.train))
    )
    assert 0 < len(reached) < len(train)
    read = ImageEncoder.read
    encoded: list[list] = []

    def recording(self, pictures, **kwargs):
        encoded.append(list(pictures))
        return read(self, pictures, **kwargs)

    monkeypatch.setattr(ImageEncoder, "read", recording)
    result = _train(tokenizer, encoder_dir, damage_data, tmp_path, config=config)
    assert result.steps == 2
    assert encoded[0] == [train[i][0] for i in reached]  # the training photos: those reached
    assert encoded[1] == [p for p, _ in val]


# ---- from pixels: an own encoder and visual tokens aligned to words (issue 23) ----------------

OWN_ENCODER = ["encoder=own", *(f"own_encoder.{item}" for item in [*TINY, "train.epochs=1"])]


def test_an_own_encoder_trains_first_and_the_model_depends_on_no_other(
    tokenizer,
    damage_data,  # noqa: F811
    tiny_corpus,  # noqa: F811
    tmp_path,
):
    from finetune.recipes import vision_lm

    workspace = Workspace(
        demo_dir=tiny_corpus,
        runs_dir=tmp_path / "runs",
        adapters_dir=tmp_path / "adapters",
        vision_dir=tmp_path / "vision",  # holds no damage model: nothing to borrow
        models=SimpleNamespace(load_causal_lm=lambda *_: (tiny_model(tokenizer), tokenizer)),
    )
    config = _config("train.epochs=1", "name=pixels", "align_target=words", *OWN_ENCODER)
    done = vision_lm.main(config, workspace)
    run_dir, model_dir = tmp_path / "runs" / "pixels", tmp_path / "vision" / "pixels"
    assert (run_dir / "encoder" / "metrics.jsonl").is_file()  # the first stage's own run
    train, _ = damage_data
    assert done.summary()["steps"] == 3 + -(-len(train) // 4)  # align + instruct steps
    manifest = json.loads((model_dir / "tunegraph-manifest.json").read_text())
    assert manifest["encoder"] == "own"
    layout = json.loads((model_dir / "vlm.json").read_text())
    assert layout["head_scores"] is False and layout["tags"] is False
    assert layout["visual_norm"] > 0
    shutil.rmtree(run_dir)  # the saved model needs nothing of the run
    model = VisionLM.load(model_dir, lambda name: (tiny_model(tokenizer), tokenizer))
    assert model.vlm.visual_norm == pytest.approx(layout["visual_norm"])
    answer = model.answer([train[0][0]], max_new_tokens=600)[0]
    assert answer.complete and _follows_the_schema(answer.text)
    features = model.encoder.features([train[0][0]])
    lengths = model.vlm.visual(features).norm(dim=-1)
    assert torch.allclose(lengths, torch.full_like(lengths, layout["visual_norm"]), rtol=1e-4)


def test_words_alignment_points_each_visual_token_at_its_cells_words(
    tokenizer,
    encoder_dir,
    damage_data,  # noqa: F811
):
    from finetune.recipes.vision_lm import word_ids
    from finetune.vision_data import cell_words

    train, _ = damage_data
    encoder = ImageEncoder.load(encoder_dir, (2, 2))
    features = encoder.features([picture for picture, _ in train])
    targets = [word_ids(tokenizer, cell_words(example, (2, 2))) for _, example in train]
    vlm = ComposedVLM(tiny_model(tokenizer), tokenizer, encoder.dim, encoder.cells)
    vlm.decoder.requires_grad_(False)
    optimizer = torch.optim.Adam(vlm.projector.parameters(), lr=0.01)
    with torch.no_grad():
        before = vlm.word_loss_sum(features, targets).item()
    for _ in range(150):
        optimizer.zero_grad()
        vlm.word_loss_sum(features, targets).backward()
        optimizer.step()
    with torch.no_grad():
        after = vlm.word_loss_sum(features, targets).item()
        vocab = torch.nn.functional.normalize(vlm.causal_lm.get_input_embeddings().weight, dim=-1)
        tokens = torch.nn.functional.normalize(vlm.projector(features), dim=-1)
        nearest = (tokens @ vocab.T).argmax(dim=-1)  # [photos, cells]
    assert after < before / 2
    # a cell that shows no damage points at the word "none" (in 32 random dimensions a mix of
    # several words has closer strangers; SmolLM2's 576 are what the recipe trains against)
    none = word_ids(tokenizer, [["none"]])[0]
    empty = [(i, c) for i, row in enumerate(targets) for c, ids in enumerate(row) if ids == none]
    assert len(empty) >= 10
    hits = [nearest[i, c].item() in none for i, c in empty]
    assert sum(hits) >= 0.9 * len(empty), hits


def test_an_own_encoder_refuses_the_detector_inputs():
    for detector in ("head_scores=true", "tags=true"):
        with pytest.raises(ValueError, match="encoder=own with"):
            _config("encoder=own", detector)
    with pytest.raises(ValueError, match=r"own_encoder\.task=classify"):
        _config("encoder=own", "own_encoder.task=classify")
