"""Grammar-constrained decoding of the vision-language models' answers, under the JSON grammar
of :func:`~finetune.vision_lm.model.answer_schema`: the composed model's own KV-cache loop
(:func:`generate`) and a logits processor for ``transformers``' ``generate``
(:func:`grammar_processor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from finetune.constrained import allowed_logits, matcher
from finetune.vision_lm.model import ComposedVLM

if TYPE_CHECKING:
    from finetune.vision_lm.engine import EngineDecoder


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
    engine: EngineDecoder | None = None,
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

    ``engine`` (:func:`~finetune.vision_lm.engine.engine_decoder`): the decoder runs there, each
    row on its own (the same greedy answers, several times faster on a CPU); sampled answers
    draw from ``seed`` row after row, so they differ from the batched loop's.
    """
    if engine is not None:
        return _generate_on_engine(
            engine,
            vlm,
            features,
            prompt,
            lark,
            ll_tok,
            max_new_tokens,
            temperature,
            seed,
            fast_forward,
            tags,
        )
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
                chunk, done[row] = _next_chunk(
                    vlm, last[row], matchers[row], temperature, sampler, fast_forward
                )
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
    return [_generated(vlm, t, m, max_new_tokens) for t, m in zip(tokens, matchers, strict=True)]


def _generate_on_engine(
    engine: EngineDecoder,
    vlm: ComposedVLM,
    features: Any,
    prompt: tuple[list[int], list[int]],
    lark: str,
    ll_tok: Any,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    fast_forward: bool,
    tags: Sequence[list[int]] | None,
) -> list[Generated]:
    """:func:`generate` with the decoder on the engine, one photo after another."""
    sampler = torch.Generator().manual_seed(seed)
    embed = vlm.causal_lm.get_input_embeddings()
    results = []
    with torch.inference_mode():
        for row in range(len(features)):
            row_tags = None if tags is None else [tags[row]]
            embeds, _, _ = vlm.inputs(features[row : row + 1], prompt, [[]], row_tags)
            found = matcher(ll_tok, lark)
            cache = engine.start(embeds.shape[1] + max_new_tokens)
            last = engine.forward(cache, embeds.float().numpy())
            tokens: list[int] = []
            while len(tokens) < max_new_tokens:
                chunk, done = _next_chunk(vlm, last, found, temperature, sampler, fast_forward)
                tokens += [t for t in chunk if t != vlm.eos_id][: max_new_tokens - len(tokens)]
                if done:
                    break
                last = engine.forward(cache, embed(torch.tensor([chunk])).float().numpy())
            results.append(_generated(vlm, tokens, found, max_new_tokens))
    return results


def _next_chunk(
    vlm: ComposedVLM,
    logits: Any,
    found: Any,
    temperature: float,
    sampler: Any,
    fast_forward: bool,
) -> tuple[list[int], bool]:
    """A row's next tokens: the one picked from ``logits`` under its grammar, then (with
    ``fast_forward``) those the grammar forces after it; and whether the answer has ended."""
    token = _pick(allowed_logits(logits.float(), found), temperature, sampler)
    found.consume_token(token)
    chunk = [token]
    if fast_forward and token != vlm.eos_id and not found.is_stopped():
        forced = found.compute_ff_tokens()
        found.consume_tokens(forced)
        chunk += forced
    return chunk, token == vlm.eos_id or found.is_stopped()


def _generated(vlm: ComposedVLM, tokens: list[int], found: Any, max_new_tokens: int) -> Generated:
    return Generated(
        vlm.tokenizer.decode(tokens, skip_special_tokens=True),
        len(tokens),
        found.is_stopped() and len(tokens) <= max_new_tokens,
    )


def _pick(logits: Any, temperature: float, sampler: Any) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=sampler))


def grammar_processor(matchers: list[Any], prompt_width: int, eos_id: int) -> Any:
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
