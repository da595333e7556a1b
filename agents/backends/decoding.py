"""The token loop both in-process backends share (transformers, ONNX Runtime GenAI).

A backend supplies the logits after the prompt and a step that feeds one token and returns the
next logits; :class:`TokenDecoder` does the rest: the grammar mask (llguidance) for tool calls
and JSON answers, the push to close a JSON answer in the last tokens of the budget, greedy or
seeded sampling, stop sequences, streaming without splitting a character or a stop prefix, the
deadline between tokens, and the final events (tool calls, or the rest of the text; the end with
exact usage).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agents.backends.base import (
    ChatRequest,
    ContextLengthExceeded,
    DeadlineExceeded,
    Event,
    GenerationError,
    Usage,
)
from agents.backends.chat_format import (
    CALL_CLOSE,
    grammar,
    parse_tool_calls,
    render_messages,
    supports_tools,
)
from finetune.artifact import read_manifest
from finetune.constrained import GrammarError, allowed_logits, ll_tokenizer
from finetune.constrained import matcher as new_matcher

Step = Callable[[int], Any]  # feed one token, get the logits (1-D) after it
_CACHES = threading.Lock()  # builds the lazy caches once when batched requests start together


class TokenDecoder:
    """What a backend with its own forward pass inherits: the decode loop and its caches.

    The backend sets ``context_window``, ``_lock`` (one request at a time), ``tokenizer`` (the base's), ``_tokenizers`` (adapter name or None -> the
    tokenizer that answers), ``_eos`` (end-of-turn ids), ``_ll_tokenizer = None`` and
    ``_closing_tokens = None``."""

    tokenizer: Any
    context_window: int | None
    _lock: threading.Lock
    _tokenizers: dict[str | None, Any]
    _eos: set[int]
    _ll_tokenizer: Any
    _closing_tokens: Any

    def adapters(self) -> list[str]:
        return [a for a in self._tokenizers if a is not None]

    def count_tokens(self, request: ChatRequest) -> int:
        """The prompt's length in tokens, rendered as generation renders it (chat template,
        tools, the adapter's tokenizer). Takes no lock: it may run while another request
        generates."""
        return len(self._prompt(request))

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        # counted before waiting for the lock: a prompt that cannot fit never waits
        prompt = self._prompt(request)
        window = self.context_window
        if window is not None:
            if len(prompt) >= window:
                raise ContextLengthExceeded(len(prompt), request.max_tokens, window)
            if len(prompt) + request.max_tokens > window:
                # the answer ends at the window (finish_reason "length"), as a server's would
                request = dataclasses.replace(request, max_tokens=window - len(prompt))
        with self._admission():
            yield from self._generate(request, prompt)

    def _admission(self) -> contextlib.AbstractContextManager[Any]:
        """Held while a request generates: by default the backend's lock (one at a time)."""
        return self._lock

    def _generate(self, request: ChatRequest, prompt: list[int]) -> Iterator[Event]:
        raise NotImplementedError  # the backend's forward pass, ending in self._decode(...)

    def _prompt(self, request: ChatRequest) -> list[int]:
        if request.adapter is not None and request.adapter not in self._tokenizers:
            known = ", ".join(self.adapters()) or "none loaded"
            raise GenerationError(f"unknown adapter {request.adapter!r} (adapters: {known})")
        tokenizer = self._tokenizers[request.adapter]
        messages, tools = render_messages(request, supports_tools(tokenizer.chat_template))
        return tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]

    def _decode(
        self, request: ChatRequest, prompt: list[int], logits: Any, step: Step
    ) -> Iterator[Event]:
        """The answer's events, from ``logits`` (after the prompt) on, feeding each chosen
        token to ``step``."""
        import torch

        tokenizer = self._tokenizers[request.adapter]
        matcher = self._matcher(grammar(request))
        sampler = None
        if request.temperature > 0:
            sampler = torch.Generator().manual_seed(request.seed or 0)
        ids: list[int] = []
        text = ""  # the answer so far
        sent = ""  # text already streamed
        mode = "text" if matcher is None or request.response_schema is not None else None
        finish = "length"
        for position in range(request.max_tokens):
            check_deadline(request)
            logits = logits.float()
            if matcher is not None:
                closing = mode != "text" or request.response_schema is not None
                closing = closing and request.max_tokens - position <= closing_reserve(request)
                if closing:
                    # Inside a string "}" is just text: close the string first, then brackets.
                    quoted, brackets = self._closers(tokenizer)
                    first = quoted if in_json_string(text) else brackets
                    logits = prefer(allowed_logits(logits, matcher, first), quoted | brackets)
                else:
                    logits = allowed_logits(logits, matcher)
            token = pick(logits, request, sampler)
            if token in self._eos:
                finish = "stop"
                break
            if matcher is not None and not matcher.consume_token(token):
                raise GenerationError(f"grammar rejected a token: {matcher.get_error()}")
            ids.append(token)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if mode is None and text.strip():
                mode = "tools" if text.lstrip().startswith("<") else "text"
            if mode == "text":
                cut = stop_at(text, request.stop)
                if cut is not None:
                    if cut > len(sent):
                        yield Event(text=text[len(sent) : cut])
                    sent = text[:cut]
                    finish = "stop"
                    break
                # Hold back an unfinished multi-byte character and a possible stop prefix.
                safe = len(text) - held_back(text, request.stop)
                if safe > len(sent) and not text.endswith("\ufffd"):
                    yield Event(text=text[len(sent) : safe])
                    sent = text[:safe]
            if matcher is not None and matcher.is_stopped():
                finish = "stop"
                break
            if position + 1 < request.max_tokens:  # the last token needs no forward pass
                logits = step(token)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        yield from _final_events(request, text, sent, mode, finish, Usage(len(prompt), len(ids)))

    def _closers(self, tokenizer: Any) -> tuple[Any, Any]:
        """Tokens that end structure, made only of ``"``, ``}`` and ``]``: those with a quote
        (they end a string), and the brackets with the end of turn."""
        with _CACHES:
            if self._closing_tokens is None:
                import torch

                texts = [
                    t.strip() for t in tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
                ]
                closers = [bool(t) and set(t) <= set('"}]') for t in texts]
                quoted = torch.tensor([c and '"' in t for c, t in zip(closers, texts, strict=True)])
                brackets = torch.tensor(
                    [c and '"' not in t for c, t in zip(closers, texts, strict=True)]
                )
                brackets[sorted(self._eos)] = True
                self._closing_tokens = quoted, brackets
            return self._closing_tokens

    def _matcher(self, lark: str | None) -> Any:
        if lark is None:
            return None
        with _CACHES:
            if self._ll_tokenizer is None:
                self._ll_tokenizer = ll_tokenizer(self.tokenizer, sorted(self._eos)[0])
        try:
            return new_matcher(self._ll_tokenizer, lark)
        except GrammarError as exc:
            raise GenerationError(str(exc)) from None


def _final_events(
    request: ChatRequest, text: str, sent: str, mode: str | None, finish: str, usage: Usage
) -> Iterator[Event]:
    """The events after the last token: the tool calls, or the rest of the text; the end."""
    if mode == "tools":
        if finish == "length":
            # Small models may start one call too many: keep the complete ones.
            complete = text.rfind(CALL_CLOSE)
            if complete < 0:
                raise GenerationError(
                    f"the tool call was cut at max_tokens={request.max_tokens}; raise max_tokens"
                )
            text = text[: complete + len(CALL_CLOSE)]
        for call in parse_tool_calls(text):
            yield Event(tool_call=call)
        yield Event(finish_reason="tool_calls", usage=usage)
        return
    if request.response_schema is not None and finish == "length":
        raise GenerationError(
            f"the JSON answer was cut at max_tokens={request.max_tokens}; raise max_tokens"
        )
    final = text if stop_at(text, request.stop) is None else sent
    if len(final) > len(sent):
        yield Event(text=final[len(sent) :])
    yield Event(finish_reason=finish, usage=usage)


def check_adapter(name: str, path: Path, base_name: str) -> None:
    """An adapter folder that can be loaded on ``base_name``, or a GenerationError saying why."""
    if not (path / "adapter_config.json").exists():
        raise GenerationError(
            f"adapter {name!r}: no adapter_config.json in {path}; "
            "train one with `tunegraph finetune text` or fix the path"
        )
    manifest = read_manifest(path)
    if manifest is not None and manifest.base_model and manifest.base_model != base_name:
        raise GenerationError(
            f"adapter {name!r} was trained on {manifest.base_model!r}, "
            f"not on the loaded base {base_name!r}"
        )


def check_deadline(request: ChatRequest) -> None:
    if request.deadline is not None and time.monotonic() > request.deadline:
        raise DeadlineExceeded("the answer took longer than the request timeout")


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    ids.discard(None)
    return ids


def in_json_string(text: str) -> bool:
    r"""Whether ``text`` (JSON, or tool calls) ends inside a string.

    >>> in_json_string('{"a": "b\\"c'), in_json_string('{"a": "b"')
    (True, False)
    """
    inside = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = inside
        elif char == '"':
            inside = not inside
    return inside


def prefer(logits: Any, tokens: Any) -> Any:
    """``logits`` with only the allowed (finite) ones among ``tokens`` (a bool per token) left,
    when there are any; else unchanged."""
    import torch

    n = min(len(tokens), logits.shape[0])
    keep = torch.zeros(logits.shape[0], dtype=torch.bool)
    keep[:n] = tokens[:n]
    keep &= torch.isfinite(logits).cpu()
    return logits.masked_fill(~keep.to(logits.device), float("-inf")) if keep.any() else logits


def closing_reserve(request: ChatRequest) -> int:
    """The last tokens of the budget, in which a JSON answer is steered to its end: closing
    quotes and brackets, and the end of turn, win over anything else the grammar allows."""
    return max(4, min(64, request.max_tokens // 4))


def pick(logits: Any, request: ChatRequest, generator: Any) -> int:
    import torch

    if request.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / request.temperature, dim=-1)
    if request.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(0) - sorted_probs < request.top_p
        keep[0] = True  # the likeliest token always stays: top_p=0 would keep none
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def stop_at(text: str, stops: list[str]) -> int | None:
    """Where the first stop sequence starts in ``text``, if any."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could be the start of a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(1, len(stop)):
            if text.endswith(stop[:size]):
                longest = max(longest, size)
    return longest
