"""The composed vision-language model's architecture: a small LLaVA-style assessor for CPUs.

An image encoder (a trained tunegraph image model, frozen) turns a photo into a grid of feature
vectors plus their mean (the vector the image model's own head reads); a two-layer projector maps
each to one "visual token" in the decoder's embedding space;
the decoder (SmolLM2 by default, with a LoRA adapter) reads

    <chat template prefix> [visual tokens] <instruction, assistant turn opens> answer <eos>

and answers with the Assessment's photo fields as compact JSON, whose schema is
:func:`answer_schema` (decoding under its grammar: :mod:`finetune.vision_lm.generation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import torch

from finetune.trainer import IGNORE
from finetune.vision_data import split_damage_logits
from ingest.assessment import Action
from ingest.taxonomy import DAMAGE_TYPES, OVERALL_SEVERITIES, PARTS, SEVERITIES

IMAGE_MARK = "<image>"
SYSTEM = "You assess car damage."  # short: every training example carries it
TAGS_LEAD = "Damage model: "  # before the encoder's detections (tags), after the visual tokens
MAX_DAMAGES = 8
MAX_COST = 1_000_000
# the sharpness of the words objective's softmax over cosine similarities (CLIP's is ~0.01)
WORD_TEMPERATURE = 0.05


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

    def __init__(
        self, decoder: Any, tokenizer: Any, feature_dim: int, cells: int, visual_norm: float = 0.0
    ) -> None:
        super().__init__()
        hidden = decoder.config.hidden_size
        self.decoder = decoder
        self.cells = cells
        # > 0: every visual token is scaled to this length (the decoder's mean word-embedding
        # length), so that tokens aligned to words (align_target: words) read like words
        self.visual_norm = visual_norm
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
        learn: Sequence[Sequence[bool]] | None = None,
    ) -> tuple[Any, Any, Any]:
        """inputs_embeds, attention mask and labels for a batch; rows are right-padded and
        only the answers' tokens carry labels (the prompt and the visual tokens never do).
        ``tags``: each row's tag tokens (:meth:`tag_ids`), between the visual tokens and the
        rest of the prompt. ``learn``: per row, which answer tokens carry a label (None: all)."""
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
            if learn is not None:
                skipped = ~torch.tensor(list(learn[row]), dtype=torch.bool)
                labels[row, start : start + len(answer)][skipped] = IGNORE
            attention[row, : start + len(answer)] = 1
        device = next(self.projector.parameters()).device
        embeds = self.causal_lm.get_input_embeddings()(ids.to(device))
        visual = self.visual(features.to(device)).to(embeds.dtype)
        embeds = torch.cat(
            [embeds[:, : len(before)], visual, embeds[:, len(before) + self.cells :]], dim=1
        )
        return embeds, attention.to(device), labels.to(device)

    def visual(self, features: Any) -> Any:
        """[B, cells, feature_dim] encoder features -> [B, cells, hidden] visual tokens."""
        tokens = self.projector(features)
        if self.visual_norm:
            tokens = torch.nn.functional.normalize(tokens, dim=-1) * self.visual_norm
        return tokens

    def word_embedding_norm(self) -> float:
        """The mean length of the decoder's input word embeddings."""
        with torch.no_grad():
            return float(self.causal_lm.get_input_embeddings().weight.float().norm(dim=-1).mean())

    def word_loss_sum(
        self,
        features: Any,
        targets: Sequence[Sequence[Sequence[int]]],
        vocabulary: Any = None,
    ) -> Any:
        """The align stage's ``words`` objective, summed over visual tokens: each token, as a
        direction in the decoder's word-embedding space, should point at the words of what its
        cell shows (``targets[row][cell]``: token ids, :func:`cell_words`) — a softmax over the
        vocabulary by cosine similarity, cross-entropy against those words, equally weighted.
        No decoder pass: the projector learns to write words the frozen decoder already reads.
        ``vocabulary``: sorted token ids the softmax runs over (all of them when None; a
        sample of the others beside every target word makes a step several times cheaper).
        """
        functional = torch.nn.functional
        weight = self.causal_lm.get_input_embeddings().weight.detach()
        if vocabulary is None:
            vocabulary = torch.arange(weight.shape[0])
        vocab = functional.normalize(weight[vocabulary].float(), dim=-1)
        tokens = functional.normalize(self.projector(features).float(), dim=-1)
        logits = tokens.flatten(0, 1) @ vocab.T / WORD_TEMPERATURE  # [B * cells, vocabulary]
        wanted = torch.zeros_like(logits)
        for index, ids in enumerate(ids for row in targets for ids in row):
            columns = torch.searchsorted(vocabulary, torch.tensor(ids))
            if not torch.equal(
                vocabulary[columns.clamp(max=len(vocabulary) - 1)], torch.tensor(ids)
            ):
                raise ValueError("the vocabulary must hold every target word's token id")
            wanted[index, columns] = 1.0 / len(ids)
        return -(wanted * functional.log_softmax(logits, dim=-1)).sum()

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


# ---- the decoder's depth ---------------------------------------------------------------------


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
