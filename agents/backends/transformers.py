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

import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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

PREFILL_CHUNK = 512  # prompt tokens per forward pass: bounds memory and the deadline's overshoot
UNSET_LENGTH = 10**9  # a tokenizer's model_max_length above this is transformers' "not set"


class TransformersBackend:
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
        self._eos = _eos_ids(model, tokenizer)
        self.context_window = context_window(model, tokenizer)

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
        with self._lock:
            yield from self._generate(request, prompt)

    # ---- generation ---------------------------------------------------------------------------

    def _tokenizer(self, request: ChatRequest) -> Any:
        if request.adapter is not None and request.adapter not in self._tokenizers:
            known = ", ".join(self.adapters()) or "none loaded"
            raise GenerationError(f"unknown adapter {request.adapter!r} (adapters: {known})")
        return self._tokenizers[request.adapter]

    def _prompt(self, request: ChatRequest) -> list[int]:
        tokenizer = self._tokenizer(request)
        messages, tools = render_messages(request, supports_tools(tokenizer.chat_template))
        return tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]

    def _prefill(self, prompt: list[int], request: ChatRequest, device: Any) -> Any:
        """The model's output after the whole prompt: its KV cache and the last logits."""
        import torch

        output = None
        for start in range(0, len(prompt), PREFILL_CHUNK):
            _check_deadline(request)
            output = self.model(
                input_ids=torch.tensor([prompt[start : start + PREFILL_CHUNK]], device=device),
                past_key_values=None if output is None else output.past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )
        return output

    def _generate(self, request: ChatRequest, prompt: list[int]) -> Iterator[Event]:
        import torch

        _check_deadline(request)  # it may have passed while this request waited for the lock
        tokenizer = self._tokenizers[request.adapter]
        matcher = self._matcher(grammar(request))
        generator = None
        if request.temperature > 0:
            generator = torch.Generator().manual_seed(request.seed or 0)
        device = next(self.model.parameters()).device
        ids: list[int] = []
        sent = ""  # text already streamed
        mode = "text" if matcher is None or request.response_schema is not None else None
        finish = "length"
        with torch.no_grad(), self._use(request.adapter):
            output = self._prefill(prompt, request, device)
            for step in range(request.max_tokens):
                _check_deadline(request)
                logits = output.logits[0, -1].float()
                if matcher is not None:
                    closing = mode != "text" or request.response_schema is not None
                    closing = closing and request.max_tokens - step <= _closing_reserve(request)
                    logits = allowed_logits(
                        logits, matcher, self._closers(tokenizer) if closing else None
                    )
                token = _pick(logits, request, generator)
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
                    cut = _stop_at(text, request.stop)
                    if cut is not None:
                        if cut > len(sent):
                            yield Event(text=text[len(sent) : cut])
                        sent = text[:cut]
                        finish = "stop"
                        break
                    # Hold back an unfinished multi-byte character and a possible stop prefix.
                    safe = len(text) - _held_back(text, request.stop)
                    if safe > len(sent) and not text.endswith("\ufffd"):
                        yield Event(text=text[len(sent) : safe])
                        sent = text[:safe]
                if matcher is not None and matcher.is_stopped():
                    finish = "stop"
                    break
                output = self.model(
                    input_ids=torch.tensor([[token]], device=device),
                    past_key_values=output.past_key_values,
                    use_cache=True,
                    logits_to_keep=1,
                )
        text = tokenizer.decode(ids, skip_special_tokens=True)
        usage = Usage(len(prompt), len(ids))
        if mode == "tools":
            if finish == "length":
                # Small models may start one call too many: keep the complete ones.
                complete = text.rfind(CALL_CLOSE)
                if complete < 0:
                    raise GenerationError(
                        f"the tool call was cut at max_tokens={request.max_tokens}; "
                        "raise max_tokens"
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
        final = text if _stop_at(text, request.stop) is None else sent
        if len(final) > len(sent):
            yield Event(text=final[len(sent) :])
        yield Event(finish_reason=finish, usage=usage)

    def _closers(self, tokenizer: Any) -> Any:
        """Tokens that end structure: end of turn, and those made only of ``"``, ``}``, ``]``."""
        if self._closing_tokens is None:
            import torch

            texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
            closers = torch.tensor(
                [bool(t.strip()) and set(t.strip()) <= set('"}]') for t in texts]
            )
            closers[sorted(self._eos)] = True
            self._closing_tokens = closers
        return self._closing_tokens

    def _matcher(self, lark: str | None) -> Any:
        if lark is None:
            return None
        if self._ll_tokenizer is None:
            self._ll_tokenizer = ll_tokenizer(self.tokenizer, sorted(self._eos)[0])
        try:
            return new_matcher(self._ll_tokenizer, lark)
        except GrammarError as exc:
            raise GenerationError(str(exc)) from None

    # ---- adapters -------------------------------------------------------------------------------

    def _load_adapters(self, model: Any, base_name: str, adapters: dict[str, Path]) -> Any:
        from peft import PeftModel
        from transformers import AutoTokenizer

        peft_model = None
        for adapter_name, path in adapters.items():
            path = Path(path)
            if not (path / "adapter_config.json").exists():
                raise GenerationError(
                    f"adapter {adapter_name!r}: no adapter_config.json in {path}; "
                    "train one with `tunegraph finetune text` or fix the path"
                )
            manifest = read_manifest(path)
            if manifest is not None:
                trained_on = manifest.base_model
                if trained_on and trained_on != base_name:
                    raise GenerationError(
                        f"adapter {adapter_name!r} was trained on {trained_on!r}, "
                        f"not on the loaded base {base_name!r}"
                    )
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


def _check_deadline(request: ChatRequest) -> None:
    if request.deadline is not None and time.monotonic() > request.deadline:
        raise DeadlineExceeded("the answer took longer than the request timeout")


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    ids.discard(None)
    return ids


def _closing_reserve(request: ChatRequest) -> int:
    """The last tokens of the budget, in which a JSON answer is steered to its end: closing
    quotes and brackets, and the end of turn, win over anything else the grammar allows."""
    return max(4, min(64, request.max_tokens // 4))


def _pick(logits: Any, request: ChatRequest, generator: Any) -> int:
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


def _stop_at(text: str, stops: list[str]) -> int | None:
    """Where the first stop sequence starts in ``text``, if any."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could be the start of a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(1, len(stop)):
            if text.endswith(stop[:size]):
                longest = max(longest, size)
    return longest
