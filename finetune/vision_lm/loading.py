"""A saved vision-language model, loaded and ready to answer.

A composed model (:class:`VisionLM`, from ``finetune/recipes/vision_lm.py``) is a folder:
``vlm.json`` (layout and prompt), ``encoder/`` (a copy of the image model),
``projector.safetensors``, ``adapter/`` (LoRA adapter and tokenizer with its chat template) and
``tunegraph-manifest.json``; the decoder's base weights come from the model store. A LoRA-tuned
``AutoModelForImageTextToText`` (:class:`ImageTextToTextLM`, from
``finetune/recipes/image_text_lora.py``) keeps ``vlm.json`` and ``adapter/`` and loads its own base.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from finetune.artifact import read_manifest
from finetune.constrained import json_grammar, ll_tokenizer, matcher
from finetune.vision_data import image_messages
from finetune.vision_lm.generation import Generated, generate, grammar_processor
from finetune.vision_lm.model import (
    ComposedVLM,
    ImageEncoder,
    VisionLMError,
    answer_schema,
    keep_first_layers,
)

if TYPE_CHECKING:
    from finetune.vision_lm.engine import EngineDecoder

CONFIG_FILE = "vlm.json"
PROJECTOR_FILE = "projector.safetensors"


class VisionLM:
    """A trained composed vision-language model, ready to assess photos."""

    def __init__(
        self,
        vlm: ComposedVLM,
        encoder: ImageEncoder,
        layout: dict,
        name: str,
        engine: EngineDecoder | None = None,
    ) -> None:
        self.vlm = vlm.eval()
        self.engine = engine  # None: the decoder runs in torch
        self.encoder = encoder
        self.layout = layout
        self.name = name
        self.prompt = vlm.prompt(layout["instruction"])
        self.grammar = json_grammar(answer_schema())
        self._ll_tok = ll_tokenizer(vlm.tokenizer, vlm.eos_id)
        self.last_prompt_tokens = 0  # what the last answer() call read (the cost of its input)

    @classmethod
    def load(
        cls,
        directory: Path,
        load_decoder: Callable[[str], tuple[Any, Any]],
        engine_cache: Path | None = None,
    ) -> VisionLM | ImageTextToTextLM:
        """``load_decoder(base_model)`` returns the base causal LM and tokenizer (the model
        store's ``load_causal_lm``); a LoRA-tuned ``AutoModelForImageTextToText`` loads its
        own base. ``engine_cache`` (the model store's ``onnx`` folder): the composed model's
        decoder runs on the ONNX engine, built there once (~30 s), where the engine is
        installed and the decoder is on a CPU; else (or None) it runs in torch."""
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
        vlm = ComposedVLM(
            decoder,
            tokenizer,
            layout["feature_dim"],
            layout["cells"],
            layout.get("visual_norm", 0.0),
        )
        vlm.projector.load_state_dict(load_file(directory / PROJECTOR_FILE))
        manifest = read_manifest(directory)
        version = manifest.version if manifest else ""
        engine = None
        if engine_cache is not None:
            from finetune.vision_lm.engine import engine_decoder

            engine = engine_decoder(vlm.eval(), engine_cache)
        name = f"{directory.name}@{version}" if version else directory.name
        return cls(vlm, encoder, layout, name, engine)

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
                engine=self.engine,
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
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"  # generation continues every row from its end
        prompt = self.processor.apply_chat_template(
            image_messages(self.layout["instruction"]), add_generation_prompt=True
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
                    logits_processor=[grammar_processor(matchers, width, tokenizer.eos_token_id)],
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                )
            for row, found in enumerate(matchers):
                new = [t for t in out[row, width:].tolist() if t != tokenizer.eos_token_id]
                text = tokenizer.decode(new, skip_special_tokens=True)
                # generate stops at the end of turn before the matcher sees it
                complete = found.is_stopped() or found.is_accepting()
                results.append(Generated(text, len(new), complete))
        return results
