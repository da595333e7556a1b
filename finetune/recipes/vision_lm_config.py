"""The config of ``task: assess``, read by both of its recipes: the composed model
(``vision_lm.py``) and LoRA on any ``AutoModelForImageTextToText`` (``image_text_lora.py``, when
``hf_model`` is set). It lives apart from both so that neither recipe imports the other's module
for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from finetune.recipes.image_classifier import ImageClassifierConfig
from finetune.trainer import LoraArgs, TrainArgs
from finetune.vision_datasets import VisionDataArgs


@dataclass
class VisionLMConfig:
    task: Literal["assess"] = "assess"
    name: str = "damage-vlm"
    base_model: str = "smollm2-135m-instruct"  # the decoder: embedded name, folder or hub id
    # a trained tunegraph image model: a folder, or a name under TUNEGRAPH_HOME/vision; or
    # "own": this recipe first trains its own encoder (own_encoder) on the same training split,
    # as LLaVA starts from a pretrained CLIP, and the model it saves depends on no other model
    encoder: str = "damage-model"
    # encoder: own — the image-classifier recipe's config of that first stage (task damage: a
    # from-scratch ResNet learns the training split's damage labels; its head is never read by
    # the decoder, only its feature map); its `data` is this config's data
    own_encoder: ImageClassifierConfig = field(
        default_factory=lambda: ImageClassifierConfig(name="encoder")
    )
    # the align stage's target: "caption" (the frozen decoder writes the photo's damages in
    # words from the visual tokens) or "words" (each visual token, as a direction in the
    # decoder's word-embedding space, points at the words of what its cell shows; no decoder
    # pass, so it costs seconds; the tokens are then scaled to the word embeddings' length)
    align_target: Literal["caption", "words"] = "caption"
    # visual tokens per photo: rows x columns of feature cells, and one for the whole photo
    grid: tuple[int, int] = (2, 2)
    instruction: str = "Assess the damage. Answer in JSON."
    # Instead of the composed model: a folder or hub id of any AutoModelForImageTextToText
    # (LLaVA-1.5, Llama 3.2 Vision, Qwen2-VL, SmolVLM, Llama 4), LoRA on its language model
    # (finetune/recipes/image_text_lora.py). QLoRA: train.quantization=nf4 or int8 (the composed
    # model's decoder or hf_model, through bitsandbytes: pip install 'tunegraph[qlora]').
    hf_model: str = ""
    # False: the instruct stage trains LoRA only, with the projector as the align stage left it;
    # with lora.last_layers=N the backward pass then stops below those N layers (much faster)
    instruct_projector: bool = True
    # the instruct stage's loss: on every answer token ("all"), or only where the answer
    # grammar leaves a choice ("free": the damage types, parts, severities, costs... about 3
    # in 10 tokens); decoding under the grammar forces the others, so the model's guess there
    # is never read and "free" spends the whole gradient on what the photo decides
    instruct_loss: Literal["all", "free"] = "all"
    # N > 0: keep only the decoder's first N layers (its norm and head stay): each token then
    # costs about N / all of the layers' compute in both stages and at inference. The answer is
    # a short JSON over a closed vocabulary, constrained by a grammar, so a shallow decoder can
    # write it; the layer count is saved with the model and applied again when it loads.
    decoder_layers: int = 0
    # True: LoRA trains in the align stage too (the instruct stage goes on with the same
    # adapter). A decoder cut by decoder_layers cannot caption with its frozen layers alone, so
    # the projector cannot align to it without this.
    align_lora: bool = False
    # True (a damage model as the encoder): the visual tokens also carry the damage head's
    # presence and severity probabilities (see finetune.vision_lm.ImageEncoder)
    head_scores: bool = False
    # True (a damage model as the encoder): the prompt also carries the damage model's
    # detections in words after the visual tokens ("Damage model: minor dent on hood"), as
    # Oscar-style models read object tags; the instruct stage reads them, the align stage does
    # not (its captions would be copied from them, and the projector would learn nothing)
    tags: bool = False
    # N > 0: each stage's eval loss on the first N validation photos only (0: all of them)
    val_examples: int = 0
    lora: LoraArgs = field(default_factory=LoraArgs)
    align: TrainArgs = field(
        default_factory=lambda: TrainArgs(lr=1e-3, batch_size=16, max_length=128)
    )
    train: TrainArgs = field(
        default_factory=lambda: TrainArgs(lr=1e-3, batch_size=16, max_length=256)
    )
    data: VisionDataArgs = field(default_factory=VisionDataArgs)

    def __post_init__(self) -> None:
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid={list(self.grid)}: give [rows, columns], each >= 1")
        if self.decoder_layers < 0:
            raise ValueError(f"decoder_layers={self.decoder_layers}: use 0 (all) or a count")
        if self.encoder == "own":
            detector = [name for name in ("head_scores", "tags") if getattr(self, name)]
            if detector:
                raise ValueError(
                    f"encoder=own with {' and '.join(detector)}: those feed the encoder's own "
                    "damage head to the decoder (a detector's outputs); with an own encoder the "
                    "decoder reads its features only: set them false"
                )
            if self.own_encoder.task != "damage":
                raise ValueError(
                    f"own_encoder.task={self.own_encoder.task}: the encoder learns the photos' "
                    "damages; use damage"
                )
        if self.val_examples < 0:
            raise ValueError(f"val_examples={self.val_examples}: use 0 (all) or a count")

    @property
    def reads_damage_model(self) -> bool:
        """Whether the model reads a trained damage model (as its encoder, or its detections),
        so that the damage model must be trained first.

        >>> VisionLMConfig().reads_damage_model, VisionLMConfig(encoder="own").reads_damage_model
        (True, False)
        """
        return self.encoder != "own" or self.head_scores or self.tags
