"""The composed vision-language model: a small LLaVA-style assessor for CPUs.

An image encoder (a trained tunegraph image model, frozen) turns a photo into a grid of feature
vectors plus their mean (the vector the image model's own head reads); a two-layer projector maps
each to one "visual token" in the decoder's embedding space;
the decoder (SmolLM2 by default, with a LoRA adapter) reads

    <chat template prefix> [visual tokens] <instruction, assistant turn opens> answer <eos>

and answers with the Assessment's photo fields as compact JSON. At inference the answer is
decoded under the JSON schema's grammar (:func:`answer_schema`), so it always parses.

A saved model is a folder: ``vlm.json`` (layout and prompt), ``encoder/`` (a copy of the image
model), ``projector.safetensors``, ``adapter/`` (LoRA adapter and tokenizer with its chat
template) and ``tunegraph-manifest.json``. The decoder's base weights come from the model store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch

from finetune.constrained import allowed_logits, json_grammar, ll_tokenizer, matcher
from finetune.trainer import IGNORE
from ingest.assessment import Action
from ingest.taxonomy import DAMAGE_TYPES, OVERALL_SEVERITIES, PARTS, SEVERITIES

CONFIG_FILE = "vlm.json"
PROJECTOR_FILE = "projector.safetensors"
IMAGE_MARK = "<image>"
SYSTEM = "You assess car damage."  # short: every training example carries it
TAGS_LEAD = "Damage model: "  # before the encoder's detections (tags), after the visual tokens
MAX_DAMAGES = 8
MAX_COST = 1_000_000
RETRY_TEMPERATURE = 0.7


class VisionLMError(ValueError):
    """A vision-language model folder or input that cannot be used; the message says why."""


def answer_schema() -> dict[str, Any]:
    """The JSON schema of the model's answer, in the key order of the training targets."""

    def closed(properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    damage = closed(
        {
            "type": {"enum": list(DAMAGE_TYPES)},
            "part": {"enum": list(PARTS)},
            "severity": {"enum": list(SEVERITIES)},
        }
    )
    repair = closed({"part": {"enum": list(PARTS)}, "action": {"enum": list(get_args(Action))}})
    cost = {"type": "integer", "minimum": 0, "maximum": MAX_COST}
    return closed(
        {
            "damages": {"type": "array", "items": damage, "maxItems": MAX_DAMAGES},
            "overall_severity": {"enum": list(OVERALL_SEVERITIES)},
            "cost_estimate": closed({"min": cost, "max": cost}),
            "repair_recommendations": {
                "type": "array",
                "items": repair,
                "maxItems": MAX_DAMAGES,
            },
        }
    )


# ---- the image encoder --------------------------------------------------------------------


class ImageEncoder:
    """Feature grids of a trained tunegraph image model (its backbone before the head): the
    last feature map pooled to ``grid`` cells, then the mean of the whole map.

    ``head_scores`` (a damage model only): each cell's vector also carries what the model's own
    head reads in the photo — the presence probability of every (part, type) pair and its
    severity probabilities — so the decoder can learn to read the damages off its visual tokens
    in far fewer steps than from the feature map alone.

    ``tags`` (a damage model only): :meth:`read` also returns what the damage model detects in
    each photo, in words (:func:`tag_text`) — the object tags of Oscar-style vision-language
    models, which the decoder reads after the visual tokens."""

    def __init__(
        self,
        classifier: Any,
        grid: tuple[int, int],
        head_scores: bool = False,
        tags: bool = False,
    ) -> None:
        self.classifier = classifier
        self.grid = tuple(grid)
        self.cells = grid[0] * grid[1] + 1
        for option, wanted in (("head_scores", head_scores), ("tags", tags)):
            if wanted and classifier.task != "damage":
                raise VisionLMError(
                    f"{option} needs a damage model as the encoder; {classifier.name} is a "
                    f"{classifier.task!r} model"
                )
        self.head_scores = head_scores
        self.tags = tags
        backbone = classifier.model.base_model
        self.backbone = backbone.eval().requires_grad_(False)
        probe = torch.zeros(1, 3, classifier.size[1], classifier.size[0])
        with torch.inference_mode():
            self.dim = int(self._encode(probe)[0].shape[-1])

    @classmethod
    def load(
        cls, directory: Path, grid: tuple[int, int], head_scores: bool = False, tags: bool = False
    ) -> ImageEncoder:
        from finetune.vision_models import ImageClassifier

        return cls(ImageClassifier.load(directory), grid, head_scores, tags)

    def _pooled(self, hidden: Any) -> Any:
        """[B, C, H, W] (CNNs) or [B, tokens, C] (ViTs) -> [B, cells, C]: the grid, then the
        mean."""
        pool = torch.nn.functional
        if hidden.dim() == 4:
            grid = pool.adaptive_avg_pool2d(hidden, self.grid).flatten(2).transpose(1, 2)
            whole = hidden.mean((2, 3))
        else:
            grid = pool.adaptive_avg_pool1d(hidden.transpose(1, 2), self.cells - 1).transpose(1, 2)
            whole = hidden.mean(1)
        return torch.cat([grid, whole[:, None]], dim=1)

    def _encode(self, pixels: Any) -> tuple[Any, Any]:
        """[B, 3, H, W] -> features [B, cells, dim], and the model's logits where its head runs
        (head_scores or tags; else None)."""
        if not (self.head_scores or self.tags):
            return self._pooled(self.backbone(pixel_values=pixels).last_hidden_state), None
        from finetune.recipes.image_classifier import split_damage_logits

        # one pass through the whole model; the backbone's output is caught on the way
        caught = []
        hook = self.backbone.register_forward_hook(lambda _m, _i, out: caught.append(out))
        try:
            logits = self.classifier.model(pixel_values=pixels).logits
        finally:
            hook.remove()
        pooled = self._pooled(caught[0].last_hidden_state)
        if not self.head_scores:
            return pooled, logits
        presence, severity, _ = split_damage_logits(logits, len(self.classifier.labels))
        scores = torch.cat([presence.sigmoid(), severity.softmax(-1).flatten(1)], dim=1)
        return torch.cat([pooled, scores[:, None].expand(-1, self.cells, -1)], dim=2), logits

    def features(
        self,
        pictures: Sequence[Any],
        batch_size: int = 64,
        progress: Callable[..., Any] | None = None,
    ) -> Any:
        """[len(pictures), grid cells, dim] float32."""
        return self.read(pictures, batch_size, progress)[0]

    def read(
        self,
        pictures: Sequence[Any],
        batch_size: int = 64,
        progress: Callable[..., Any] | None = None,
    ) -> tuple[Any, list[str]]:
        """Features (:meth:`features`) and, with ``tags``, each photo's detections in words
        (else empty strings), from one pass of the image model."""
        from finetune.vision_data import image_tensor

        head = self.classifier.head
        starts = range(0, len(pictures), batch_size)
        if progress is not None:
            starts = progress(starts, desc="encode images", unit="batch")
        rows, tags = [], []
        with torch.inference_mode():
            for start in starts:
                chunk = pictures[start : start + batch_size]
                pixels = torch.stack(
                    [
                        image_tensor(p, self.classifier.size, mean=head["mean"], std=head["std"])[0]
                        for p in chunk
                    ]
                )
                features, logits = self._encode(pixels)
                rows.append(features)
                if self.tags:
                    found = self.classifier.decode_damages(logits, [p.size for p in chunk])
                    tags += [tag_text(damages) for damages in found]
                else:
                    tags += [""] * len(chunk)
        if not rows:
            return torch.zeros(0, self.cells, self.dim), []
        return torch.cat(rows).float(), tags


def tag_text(damages: Sequence[Any]) -> str:
    """Damages (with type, part and severity) in words, as the align stage's captions say them.

    >>> from ingest.assessment import Damage
    >>> tag_text([Damage(type="dent", part="hood", severity="minor")])
    'minor dent on hood'
    """
    return "; ".join(f"{d.severity} {d.type} on {d.part}" for d in damages) or "no damage"


# ---- projector + decoder --------------------------------------------------------------------


class ComposedVLM(torch.nn.Module):
    """Projector and decoder; the encoder's features come in precomputed."""

    def __init__(self, decoder: Any, tokenizer: Any, feature_dim: int, cells: int) -> None:
        super().__init__()
        hidden = decoder.config.hidden_size
        self.decoder = decoder
        self.cells = cells
        self.projector = torch.nn.Sequential(
            torch.nn.Linear(feature_dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden)
        )
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    @property
    def causal_lm(self) -> Any:
        """The decoder without its PEFT wrapper (LoRA layers stay in place)."""
        decoder = self.decoder
        return decoder.get_base_model() if hasattr(decoder, "get_base_model") else decoder

    def prompt(self, instruction: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the visual tokens, through the decoder's chat template."""
        text = self.tokenizer.apply_chat_template(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{IMAGE_MARK}\n{instruction}"},
            ],
            add_generation_prompt=True,
            tokenize=False,
        )
        before, after = text.split(IMAGE_MARK)
        encode = self.tokenizer
        return (
            encode(before, add_special_tokens=False)["input_ids"],
            encode(after, add_special_tokens=False)["input_ids"],
        )

    def answer_ids(self, answer: str) -> list[int]:
        """The answer's tokens and the end of turn: what the loss is computed on."""
        return [*self.tokenizer(answer, add_special_tokens=False)["input_ids"], self.eos_id]

    def tag_ids(self, tags: str) -> list[int]:
        """A photo's detections (:func:`tag_text`) as the prompt tokens after its visual tokens."""
        return self.tokenizer(f"\n{TAGS_LEAD}{tags}", add_special_tokens=False)["input_ids"]

    def inputs(
        self,
        features: Any,
        prompt: tuple[list[int], list[int]],
        answers: Sequence[list[int]],
        tags: Sequence[list[int]] | None = None,
    ) -> tuple[Any, Any, Any]:
        """inputs_embeds, attention mask and labels for a batch; rows are right-padded and
        only the answers' tokens carry labels (the prompt and the visual tokens never do).
        ``tags``: each row's tag tokens (:meth:`tag_ids`), between the visual tokens and the
        rest of the prompt."""
        before, after = prompt
        tags = tags or [[] for _ in answers]
        visual_end = len(before) + self.cells
        starts = [visual_end + len(t) + len(after) for t in tags]
        width = max((s + len(a) for s, a in zip(starts, answers, strict=True)), default=0)
        ids = torch.full((len(answers), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(answers), width), IGNORE, dtype=torch.long)
        attention = torch.zeros((len(answers), width), dtype=torch.long)
        for row, (answer, start) in enumerate(zip(answers, starts, strict=True)):
            ids[row, : len(before)] = torch.tensor(before)
            ids[row, visual_end:start] = torch.tensor([*tags[row], *after], dtype=torch.long)
            ids[row, start : start + len(answer)] = torch.tensor(answer, dtype=torch.long)
            labels[row, start : start + len(answer)] = torch.tensor(answer, dtype=torch.long)
            attention[row, : start + len(answer)] = 1
        device = next(self.projector.parameters()).device
        embeds = self.causal_lm.get_input_embeddings()(ids.to(device))
        visual = self.projector(features.to(device)).to(embeds.dtype)
        embeds = torch.cat(
            [embeds[:, : len(before)], visual, embeds[:, len(before) + self.cells :]], dim=1
        )
        return embeds, attention.to(device), labels.to(device)

    def loss_sum(self, embeds: Any, attention: Any, labels: Any) -> Any:
        """Summed next-token cross-entropy at the labelled positions (the vocabulary projection
        runs only there)."""
        hidden = self.causal_lm.get_decoder()(
            inputs_embeds=embeds, attention_mask=attention, use_cache=False
        ).last_hidden_state
        targets = labels[:, 1:]
        selected = targets != IGNORE
        logits = self.causal_lm.get_output_embeddings()(hidden[:, :-1][selected])
        return torch.nn.functional.cross_entropy(logits.float(), targets[selected], reduction="sum")


@dataclass
class Generated:
    text: str
    tokens: int
    complete: bool  # the grammar reached its end (False: max_new_tokens ran out first)


def generate(
    vlm: ComposedVLM,
    features: Any,
    prompt: tuple[list[int], list[int]],
    lark: str,
    ll_tok: Any,
    max_new_tokens: int = 384,
    temperature: float = 0.0,
    seed: int = 0,
    fast_forward: bool = True,
    tags: Sequence[list[int]] | None = None,
) -> list[Generated]:
    """Grammar-constrained answers for a batch of feature grids (one KV-cache loop): greedy,
    or sampled at ``temperature`` > 0. ``tags``: each row's tag tokens (see
    :meth:`ComposedVLM.inputs`); rows of different lengths are right-padded, and each row's
    answer starts after its own last prompt token.

    Tokens the grammar forces (keys, brackets, the rest of an enum value) are not generated one
    by one: each row appends its chosen token and everything forced after it in one forward
    pass, padded to the longest row (padding is masked out, and position ids count each row's
    real tokens only) — most of an Assessment's JSON is forced, so this saves most passes.
    ``fast_forward=False`` generates every token in its own pass (the benchmark's baseline).
    """
    n = len(features)
    sampler = torch.Generator().manual_seed(seed)
    matchers = [matcher(ll_tok, lark) for _ in range(n)]
    tokens: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    with torch.inference_mode():
        embeds, attention, _ = vlm.inputs(features, prompt, [[] for _ in range(n)], tags)
        lengths = attention.sum(1).tolist()
        ends = sorted(set(lengths))  # the vocabulary projection runs at each row's last token
        out = vlm.causal_lm(
            inputs_embeds=embeds,
            attention_mask=attention,
            use_cache=True,
            logits_to_keep=torch.tensor(ends) - 1,
        )
        last = out.logits[torch.arange(n), torch.tensor([ends.index(x) for x in lengths])]
        while not all(done):
            chunks: list[list[int]] = []
            for row in range(n):
                if done[row] or len(tokens[row]) >= max_new_tokens:
                    done[row] = True
                    chunks.append([])
                    continue
                found = matchers[row]
                token = _pick(allowed_logits(last[row].float(), found), temperature, sampler)
                found.consume_token(token)
                chunk = [token]
                if fast_forward and token != vlm.eos_id and not found.is_stopped():
                    forced = found.compute_ff_tokens()
                    found.consume_tokens(forced)
                    chunk += forced
                if token == vlm.eos_id or found.is_stopped():
                    done[row] = True
                real = [t for t in chunk if t != vlm.eos_id]
                tokens[row] += real[: max_new_tokens - len(tokens[row])]
                chunks.append([] if done[row] else chunk)
            width = max(len(c) for c in chunks)
            if width == 0:
                break
            ids = torch.full((n, width), vlm.pad_id, dtype=torch.long)
            fresh = torch.zeros((n, width), dtype=attention.dtype)
            positions = torch.zeros((n, width), dtype=torch.long)
            for row, chunk in enumerate(chunks):
                ids[row, : len(chunk)] = torch.tensor(chunk, dtype=torch.long)
                fresh[row, : len(chunk)] = 1
                positions[row] = lengths[row] + torch.arange(width).clamp(
                    max=max(len(chunk) - 1, 0)
                )
                lengths[row] += len(chunk)
            attention = torch.cat([attention, fresh.to(attention.device)], dim=1)
            out = vlm.causal_lm(
                input_ids=ids.to(attention.device),
                attention_mask=attention,
                position_ids=positions.to(attention.device),
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            ends = torch.tensor([max(len(c) - 1, 0) for c in chunks], device=attention.device)
            last = out.logits[torch.arange(n), ends]
    return [
        Generated(
            vlm.tokenizer.decode(t, skip_special_tokens=True),
            len(t),
            m.is_stopped() and len(t) <= max_new_tokens,
        )
        for t, m in zip(tokens, matchers, strict=True)
    ]


def _pick(logits: Any, temperature: float, sampler: Any) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=sampler))


# ---- the saved model -----------------------------------------------------------------------


def keep_first_layers(causal_lm: Any, count: int) -> Any:
    """Cut ``causal_lm``'s decoder to its first ``count`` layers, in place (its final norm and
    head stay); the config says the new depth, so the model saves and reloads as it is."""
    decoder = causal_lm.get_decoder()
    total = len(decoder.layers)
    if not 1 <= count <= total:
        raise VisionLMError(
            f"decoder_layers={count}: the decoder {causal_lm.config.name_or_path or ''} has "
            f"{total} layers; use 1..{total} (0 keeps all)"
        )
    decoder.layers = decoder.layers[:count]
    causal_lm.config.num_hidden_layers = count
    if getattr(causal_lm.config, "layer_types", None):
        causal_lm.config.layer_types = causal_lm.config.layer_types[:count]
    return causal_lm


class VisionLM:
    """A trained composed vision-language model, ready to assess photos."""

    def __init__(self, vlm: ComposedVLM, encoder: ImageEncoder, layout: dict, name: str) -> None:
        self.vlm = vlm.eval()
        self.encoder = encoder
        self.layout = layout
        self.name = name
        self.prompt = vlm.prompt(layout["instruction"])
        self.grammar = json_grammar(answer_schema())
        self._ll_tok = ll_tokenizer(vlm.tokenizer, vlm.eos_id)
        self.last_prompt_tokens = 0  # what the last answer() call read (the cost of its input)

    @classmethod
    def load(
        cls, directory: Path, load_decoder: Callable[[str], tuple[Any, Any]]
    ) -> VisionLM | ImageTextToTextLM:
        """``load_decoder(base_model)`` returns the base causal LM and tokenizer (the model
        store's ``load_causal_lm``); a LoRA-tuned ``AutoModelForImageTextToText`` loads its
        own base."""
        from peft import PeftModel
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise VisionLMError(
                f"{directory}: not a vision-language model trained by tunegraph (no "
                f"{CONFIG_FILE}); train one with `tunegraph finetune vision --config "
                "configs/vision/vlm_quick.yaml`"
            )
        layout = json.loads(config_file.read_text("utf-8"))
        if layout.get("kind") == "image-text-to-text":
            return ImageTextToTextLM.load(directory, layout)
        encoder = ImageEncoder.load(
            directory / "encoder",
            tuple(layout["grid"]),
            layout.get("head_scores", False),
            layout.get("tags", False),
        )
        base, _ = load_decoder(layout["base_model"])
        if layout.get("decoder_layers"):
            keep_first_layers(base, layout["decoder_layers"])
        tokenizer = AutoTokenizer.from_pretrained(directory / "adapter")
        decoder = PeftModel.from_pretrained(base, directory / "adapter")
        vlm = ComposedVLM(decoder, tokenizer, layout["feature_dim"], layout["cells"])
        vlm.projector.load_state_dict(load_file(directory / PROJECTOR_FILE))
        manifest = directory / "tunegraph-manifest.json"
        version = ""
        if manifest.is_file():
            version = json.loads(manifest.read_text("utf-8")).get("data_sha256", "")[:8]
        return cls(
            vlm, encoder, layout, f"{directory.name}@{version}" if version else directory.name
        )

    def answer(
        self,
        pictures: Sequence[Any],
        batch_size: int = 16,
        max_new_tokens: int = 384,
        temperature: float = 0.0,
    ) -> list[Generated]:
        """One JSON answer per picture (PIL RGB images); ``last_prompt_tokens`` counts the
        prompt tokens read for them."""
        results = []
        before, after = self.prompt
        self.last_prompt_tokens = (len(before) + self.vlm.cells + len(after)) * len(pictures)
        for start in range(0, len(pictures), batch_size):
            features, tags = self.read(pictures[start : start + batch_size])
            self.last_prompt_tokens += sum(len(t) for t in tags or [])
            results += generate(
                self.vlm,
                features,
                self.prompt,
                self.grammar,
                self._ll_tok,
                max_new_tokens,
                temperature,
                seed=start,
                tags=tags,
            )
        return results

    def read(self, pictures: Sequence[Any]) -> tuple[Any, list[list[int]] | None]:
        """The pictures' encoder features and, for a model trained with tags, their tag tokens."""
        features, tags = self.encoder.read(pictures)
        return features, [self.vlm.tag_ids(t) for t in tags] if self.encoder.tags else None


class ImageTextToTextLM:
    """A LoRA-tuned ``AutoModelForImageTextToText`` (``finetune/recipes/image_text_lora.py``),
    answering like :class:`VisionLM`: the same grammar, through ``generate``."""

    def __init__(self, model: Any, processor: Any, layout: dict, name: str) -> None:
        self.model = model.eval()
        self.processor = processor
        self.layout = layout
        self.name = name
        self.grammar = json_grammar(answer_schema())
        tokenizer = processor.tokenizer
        self._ll_tok = ll_tokenizer(tokenizer, tokenizer.eos_token_id)

    @classmethod
    def load(cls, directory: Path, layout: dict) -> ImageTextToTextLM:
        from peft import PeftModel
        from transformers import AutoModelForImageTextToText, AutoProcessor

        base = AutoModelForImageTextToText.from_pretrained(layout["base_model"])
        model = PeftModel.from_pretrained(base, directory / "adapter")
        processor = AutoProcessor.from_pretrained(directory / "adapter")
        return cls(model, processor, layout, directory.name)

    def answer(
        self,
        pictures: Sequence[Any],
        batch_size: int = 8,
        max_new_tokens: int = 384,
        temperature: float = 0.0,
    ) -> list[Generated]:
        from finetune.recipes.image_text_lora import messages

        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"  # generation continues every row from its end
        prompt = self.processor.apply_chat_template(
            messages(self.layout["instruction"]), add_generation_prompt=True
        )
        results = []
        for start in range(0, len(pictures), batch_size):
            chunk = list(pictures[start : start + batch_size])
            inputs = self.processor(
                text=[prompt] * len(chunk), images=chunk, padding=True, return_tensors="pt"
            )
            matchers = [matcher(self._ll_tok, self.grammar) for _ in chunk]
            width = inputs["input_ids"].shape[1]
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature or None,
                    logits_processor=[_grammar_processor(matchers, width, tokenizer.eos_token_id)],
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                )
            for row, found in enumerate(matchers):
                new = [t for t in out[row, width:].tolist() if t != tokenizer.eos_token_id]
                text = tokenizer.decode(new, skip_special_tokens=True)
                # generate stops at the end of turn before the matcher sees it
                complete = found.is_stopped() or found.is_accepting()
                results.append(Generated(text, len(new), complete))
        return results


def _grammar_processor(matchers: list[Any], prompt_width: int, eos_id: int) -> Any:
    """A ``generate`` logits processor: each row's next tokens are those its grammar allows."""
    from transformers import LogitsProcessor

    class GrammarLogits(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            for row, found in enumerate(matchers):
                if input_ids.shape[1] > prompt_width and not found.is_stopped():
                    found.consume_token(int(input_ids[row, -1]))
                if found.is_stopped():
                    scores[row] = torch.full_like(scores[row], float("-inf"))
                    scores[row, eos_id] = 0.0
                else:
                    scores[row] = allowed_logits(scores[row], found)
            return scores

    return GrammarLogits()


class VisionLMAssessor:
    """The fine-tuned approach's model (``agents.context.VisionAssessor``): photos -> the
    Assessment's photo fields as JSON text.

    Each photo is answered on its own (the model is trained on single photos) in one batch, and
    the answers are merged: every damage seen (a part's worst severity per type), the worst
    overall severity, and the estimate of the costliest photo — several photos of one incident
    usually show the same damage from different angles, so the estimates are not summed.
    """

    def __init__(self, model: VisionLM) -> None:
        self.model = model
        self.name = model.name

    def assess(
        self, images: Sequence[bytes], claim: Any = None, feedback: str | None = None
    ) -> str:
        # The model reads photos only: the claim context is not part of its prompt. Its answer
        # always parses, but can break a rule the grammar cannot state (a cost range's max
        # below its min); asked again (``feedback``), it samples instead of answering greedily.
        from ingest.images import load_image

        pictures = [load_image(data, f"image {i + 1}") for i, data in enumerate(images)]
        generated = self.model.answer(pictures, temperature=RETRY_TEMPERATURE if feedback else 0)
        answers = [json.loads(g.text) for g in generated if g.complete]
        if not answers:
            return generated[0].text  # cut off: the graph reports it as invalid
        return json.dumps(merge_answers(answers), separators=(",", ":"))


def merge_answers(answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several photos' answers as one (see :class:`VisionLMAssessor`).

    >>> a = {"damages": [{"type": "dent", "part": "hood", "severity": "minor"}],
    ...      "overall_severity": "minor", "cost_estimate": {"min": 100, "max": 200},
    ...      "repair_recommendations": [{"part": "hood", "action": "repair"}]}
    >>> b = {"damages": [{"type": "dent", "part": "hood", "severity": "severe"}],
    ...      "overall_severity": "severe", "cost_estimate": {"min": 150, "max": 900},
    ...      "repair_recommendations": [{"part": "hood", "action": "replace"}]}
    >>> merged = merge_answers([a, b])
    >>> merged["damages"], merged["overall_severity"], merged["cost_estimate"]
    ([{'type': 'dent', 'part': 'hood', 'severity': 'severe'}], 'severe', {'min': 150, 'max': 900})
    """
    damages: dict[tuple[str, str], dict[str, Any]] = {}
    repairs: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for damage in answer["damages"]:
            key = (damage["part"], damage["type"])
            seen = damages.get(key)
            if seen is None or SEVERITIES.index(damage["severity"]) > SEVERITIES.index(
                seen["severity"]
            ):
                damages[key] = damage
                repairs.update(
                    {r["part"]: r for r in answer["repair_recommendations"] if r["part"] == key[0]}
                )
        for repair in answer["repair_recommendations"]:
            repairs.setdefault(repair["part"], repair)
    return {
        "damages": list(damages.values()),
        "overall_severity": max(
            (a["overall_severity"] for a in answers), key=OVERALL_SEVERITIES.index
        ),
        "cost_estimate": max((a["cost_estimate"] for a in answers), key=lambda c: c["max"]),
        "repair_recommendations": list(repairs.values()),
    }
