"""Grammar-constrained decoding with llguidance: only tokens the grammar allows next can be
picked, so a JSON answer always parses. Shared by the chat-model backend (``agents``) and the
vision-language model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

# Compact JSON, the way training targets are written: with free whitespace small models loop
# on newlines inside objects.
JSON_OPTIONS = {"whitespace_flexible": False}


class GrammarError(RuntimeError):
    """The grammar does not compile, or the model was made to leave it."""


def json_grammar(schema: dict[str, Any], rules: str = "start: json_body") -> str:
    """An llguidance Lark grammar whose ``json_body`` is JSON that follows ``schema``."""
    schema = {**schema, "x-guidance": {**JSON_OPTIONS, **schema.get("x-guidance", {})}}
    return f"{rules}\njson_body: %json {json.dumps(schema)}\n"


def ll_tokenizer(tokenizer: Any, eos_token_id: int) -> Any:
    """llguidance's view of a Hugging Face tokenizer (build once per tokenizer: it is slow)."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer, eos_token=eos_token_id)


def matcher(ll_tok: Any, lark: str) -> Any:
    """A fresh matcher for one answer."""
    import llguidance

    found = llguidance.LLMatcher(ll_tok, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0)
    if found.is_error():
        raise GrammarError(f"cannot compile the output grammar: {found.get_error()}")
    return found


def free_positions(ll_tok: Any, lark: str, tokens: Sequence[int]) -> list[bool] | None:
    """For each of ``tokens`` (an answer as the model is trained to write it), whether the
    grammar left a choice there (False: the grammar allowed that token only, so decoding under
    it forces the token and the model's guess is never read). None when ``tokens`` leave the
    grammar (an answer it cannot produce)."""
    import numpy as np

    found = matcher(ll_tok, lark)
    free = []
    for token in tokens:
        bits = np.frombuffer(found.compute_bitmask(), dtype=np.uint8)
        free.append(int(np.unpackbits(bits).sum()) > 1)
        if not found.consume_token(token):
            return None
    return free


def allowed_logits(logits: Any, matcher: Any, prefer: Any = None) -> Any:
    """Logits (one row) with every token the grammar forbids next set to -inf; with ``prefer``
    (a bool per token), only the preferred allowed tokens stay when there are any."""
    import numpy as np
    import torch

    bits = np.unpackbits(
        np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little"
    )
    allowed = torch.zeros(logits.shape[0], dtype=torch.bool)
    n = min(len(bits), logits.shape[0])
    allowed[:n] = torch.from_numpy(bits[:n].astype(bool))
    if prefer is not None:
        m = min(len(prefer), logits.shape[0])
        preferred = allowed.clone()
        preferred[:m] &= prefer[:m]
        preferred[m:] = False
        if preferred.any():
            allowed = preferred
    return logits.masked_fill(~allowed.to(logits.device), float("-inf"))
