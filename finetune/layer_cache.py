"""Later epochs start at the first trained layer: the frozen layers below it are run once.

With LoRA in the last N decoder layers only, the layers below them have no trainable weights
and no dropout, so each training example's hidden state at the first trained layer is the same
in every epoch. :class:`FrozenLayerCache` keeps it, per example, from the example's first pass;
a batch whose examples are all cached then runs only the trained layers (the decoder's layer
list cut to them, the cached states as ``inputs_embeds``). Packed rows make this exact: their
attention is block-diagonal, so an example's hidden states do not depend on its neighbours.

Only decoders whose forward is embeddings -> layers -> norm with nothing in between and the
same attention in every layer qualify (:func:`supported`): Llama, Mistral, Qwen2.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


def supported(decoder: Any, first_trained: int) -> bool:
    """Whether ``decoder`` (the causal LM's base model) can start at layer ``first_trained``."""
    config = decoder.config
    if config.model_type not in SUPPORTED_MODEL_TYPES or not 0 < first_trained < len(
        decoder.layers
    ):
        return False
    layer_types = getattr(config, "layer_types", None) or []
    return len(set(layer_types)) <= 1  # one attention kind (no sliding-window mixes)


class FrozenLayerCache:
    """Each example's input to ``decoder.layers[first_trained]``, by example index."""

    def __init__(self, decoder: Any, first_trained: int) -> None:
        if not supported(decoder, first_trained):
            raise ValueError(
                f"cannot start a {decoder.config.model_type} decoder at layer {first_trained}"
            )
        self.decoder = decoder
        self.first = first_trained
        self.states: dict[int, Any] = {}

    def ready(self, indices: Sequence[int]) -> bool:
        return all(i in self.states for i in indices)

    @contextmanager
    def capture(self, rows: Sequence[Sequence[tuple[int, int, int]]]) -> Iterator[None]:
        """Record, during one forward pass of packed ``rows`` (each a list of
        ``(example index, start, length)``), each example's input to the first trained layer."""

        def hook(_module: Any, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            for r, spans in enumerate(rows):
                for index, start, length in spans:
                    self.states[index] = hidden[r, start : start + length].detach().clone()

        handle = self.decoder.layers[self.first].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def packed_states(self, rows: Sequence[Sequence[tuple[int, int, int]]], width: int) -> Any:
        """The cached states laid out as ``rows`` (zeros where a row is padding)."""
        import torch

        sample = next(iter(self.states.values()))
        states = torch.zeros((len(rows), width, sample.shape[-1]), dtype=sample.dtype)
        for r, spans in enumerate(rows):
            for index, start, length in spans:
                states[r, start : start + length] = self.states[index]
        return states.to(sample.device)

    @contextmanager
    def trained_layers_only(self) -> Iterator[None]:
        """The decoder with its frozen layers taken out (pass the cached states as
        ``inputs_embeds``)."""
        layers = self.decoder.layers
        self.decoder.layers = layers[self.first :]
        try:
            yield
        finally:
            self.decoder.layers = layers
