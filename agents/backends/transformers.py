"""In-process generation with transformers: one base model, several LoRA adapters.

Adapters are loaded once beside the base (PEFT multi-adapter) and switched per request, so the
base weights sit in memory once. Each adapter answers with the chat template saved beside it.
Generation is a plain KV-cache loop so that each token can be masked by the grammar (llguidance),
streamed, and checked against stop sequences. Requests run one at a time per backend (a lock):
switching adapters changes shared state, and on CPU concurrent decodes only split the cores.

A prompt is counted before it runs: one that fills the model's context window is refused, and
an answer ends where the window does (:meth:`TransformersBackend.count_tokens` counts without
the lock, so a server can refuse a long prompt while another request generates). The prompt is processed in chunks of
``PREFILL_CHUNK`` tokens, keeping only the last position's logits: memory grows with the prompt
(its KV cache), not with prompt x vocabulary, and the request's deadline is checked between
chunks as between tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agents.backends.base import (
    ChatRequest,
    Event,
)
from agents.backends.decoding import TokenDecoder, check_adapter, check_deadline, eos_ids

PREFILL_CHUNK = 512  # prompt tokens per forward pass: bounds memory and the deadline's overshoot
UNSET_LENGTH = 10**9  # a tokenizer's model_max_length above this is transformers' "not set"


class TransformersBackend(TokenDecoder):
    """A base causal LM with named LoRA adapters, e.g. ``{"finetuned": Path("adapters/x")}``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        adapters: Mapping[str, Path] | None = None,
    ) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self._tokenizers: dict[str | None, Any] = {None: tokenizer}
        self._lock = threading.Lock()
        self._ll_tokenizer: Any = None
        self._closing_tokens: Any = None
        adapters = dict(adapters or {})
        if adapters:
            model = self._load_adapters(model, name, adapters)
        self.model = model.eval()
        self._eos = eos_ids(model, tokenizer)
        self.context_window = context_window(model, tokenizer)

    # ---- generation ---------------------------------------------------------------------------

    def _prefill(self, prompt: list[int], request: ChatRequest, device: Any) -> Any:
        """The model's output after the whole prompt: its KV cache and the last logits."""
        import torch

        output = None
        for start in range(0, len(prompt), PREFILL_CHUNK):
            check_deadline(request)
            output = self.model(
                input_ids=torch.tensor([prompt[start : start + PREFILL_CHUNK]], device=device),
                past_key_values=None if output is None else output.past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )
        return output

    def _generate(self, request: ChatRequest, prompt: list[int]) -> Iterator[Event]:
        import torch

        check_deadline(request)  # it may have passed while this request waited for the lock
        device = next(self.model.parameters()).device
        with torch.no_grad(), self._use(request.adapter):
            output = self._prefill(prompt, request, device)

            def step(token: int) -> Any:
                nonlocal output
                output = self.model(
                    input_ids=torch.tensor([[token]], device=device),
                    past_key_values=output.past_key_values,
                    use_cache=True,
                    logits_to_keep=1,
                )
                return output.logits[0, -1]

            yield from self._decode(request, prompt, output.logits[0, -1], step)

    # ---- adapters -------------------------------------------------------------------------------

    def _load_adapters(self, model: Any, base_name: str, adapters: dict[str, Path]) -> Any:
        from peft import PeftModel
        from transformers import AutoTokenizer

        peft_model = None
        for adapter_name, path in adapters.items():
            path = Path(path)
            check_adapter(adapter_name, path, base_name)
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name)
            else:
                peft_model.load_adapter(str(path), adapter_name=adapter_name)
            has_tokenizer = (path / "tokenizer_config.json").exists()
            self._tokenizers[adapter_name] = (
                AutoTokenizer.from_pretrained(str(path)) if has_tokenizer else self.tokenizer
            )
        return peft_model

    @contextmanager
    def _use(self, adapter: str | None) -> Iterator[None]:
        if not self.adapters():
            yield
            return
        if adapter is None:
            with self.model.disable_adapter():
                yield
            return
        self.model.set_adapter(adapter)
        yield


def context_window(model: Any, tokenizer: Any) -> int | None:
    """The most tokens (prompt and answer) the model takes: the smaller of its config's
    ``max_position_embeddings`` and the tokenizer's ``model_max_length``, counting only the
    ones that are set (a tokenizer without one says ~1e30); None when neither is."""
    limits = [
        getattr(getattr(model, "config", None), "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    real = [n for n in limits if isinstance(n, int) and 0 < n < UNSET_LENGTH]
    return min(real) if real else None
