"""The vision-language models of the fine-tuned approach: a small composed LLaVA-style model for
CPUs, and any LoRA-tuned ``AutoModelForImageTextToText``.

- :mod:`~finetune.vision_lm.model`: the composed model's parts (image encoder, projector +
  decoder) and the schema of its answer;
- :mod:`~finetune.vision_lm.generation`: grammar-constrained decoding of that answer;
- :mod:`~finetune.vision_lm.loading`: a saved model, loaded and answering photos;
- :mod:`~finetune.vision_lm.assessor`: a loaded model as the agents' fine-tuned assessor.

The recipes that train them are ``finetune/recipes/vision_lm.py`` and
``finetune/recipes/image_text_lora.py``. The public names of the four modules are importable
from here (importing the package imports torch: the composed model is a ``torch.nn.Module``).
"""

from finetune.trainer import IGNORE
from finetune.vision_lm.assessor import RETRY_TEMPERATURE, VisionLMAssessor, merge_answers
from finetune.vision_lm.generation import Generated, generate, grammar_processor
from finetune.vision_lm.loading import (
    CONFIG_FILE,
    PROJECTOR_FILE,
    ImageTextToTextLM,
    VisionLM,
)
from finetune.vision_lm.model import (
    IMAGE_MARK,
    MAX_COST,
    MAX_DAMAGES,
    SYSTEM,
    TAGS_LEAD,
    ComposedVLM,
    ImageEncoder,
    VisionLMError,
    answer_schema,
    keep_first_layers,
    tag_text,
)

__all__ = [
    "CONFIG_FILE",
    "IGNORE",
    "IMAGE_MARK",
    "MAX_COST",
    "MAX_DAMAGES",
    "PROJECTOR_FILE",
    "RETRY_TEMPERATURE",
    "SYSTEM",
    "TAGS_LEAD",
    "ComposedVLM",
    "Generated",
    "ImageEncoder",
    "ImageTextToTextLM",
    "VisionLM",
    "VisionLMAssessor",
    "VisionLMError",
    "answer_schema",
    "generate",
    "grammar_processor",
    "keep_first_layers",
    "merge_answers",
    "tag_text",
]
