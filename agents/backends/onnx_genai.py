"""In-process generation with ONNX Runtime GenAI: one base model, several LoRA adapters.

The same contract as :class:`~agents.backends.transformers.TransformersBackend` (prompts from
the HF tokenizer's chat template, llguidance grammars for tool calls and JSON answers, stop
sequences, usage, deadlines, adapters per request), with the engine's graph running the
forward passes: ~10x faster decoding on CPU in fp32. The engine is used as a forward pass with
a KV cache (``append_tokens`` then ``get_logits``); picking the token stays here, so grammar
masking, the JSON closing steer and seeded sampling behave exactly as in the transformers
backend, and fp32 greedy answers are the same tokens. (The engine's own ``set_guidance`` accepts
the same Lark grammar, but it cannot steer an answer to close before ``max_tokens``.)

The model is built once from the checkpoint folder and cached (:mod:`finetune.onnx_build`);
with adapters it is built with LoRA slots and each adapter is exported to ONNX Runtime's
adapter format, all loaded beside one copy of the base weights.

Requests run one at a time per backend (a lock): on CPU concurrent decodes only split the
cores. Batching several requests into one forward pass is a later step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agents.backends.base import (
    ChatRequest,
    ContextLengthExceeded,
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
from agents.backends.transformers import (
    PREFILL_CHUNK,
    _check_deadline,
    _closing_reserve,
    _eos_ids,
    _held_back,
    _pick,
    _stop_at,
    context_window,
)
from finetune.artifact import read_manifest
from finetune.constrained import GrammarError, allowed_logits, ll_tokenizer
from finetune.constrained import matcher as new_matcher
from finetune.onnx_build import Log, OnnxBuild, build_adapter, build_model

logger = logging.getLogger(__name__)


class OnnxGenAIBackend:
    """A built model (:func:`finetune.onnx_build.build_model`) with named adapter files
    (:func:`finetune.onnx_build.build_adapter`); :meth:`from_checkpoint` makes both."""

    def __init__(
        self,
        build: OnnxBuild,
        tokenizer: Any,
        name: str,
        adapters: Mapping[str, tuple[Path, Any]] | None = None,
        window: int | None = None,
        eos_ids: set[int] | None = None,
    ) -> None:
        """``adapters``: name -> (adapter file, the tokenizer its prompts use)."""
        import onnxruntime_genai as og

        self.name = name
        self.build = build
        self.tokenizer = tokenizer
        self.context_window = window
        self._eos = eos_ids or {tokenizer.eos_token_id}
        self._lock = threading.Lock()
        self._ll_tokenizer: Any = None
        self._closing_tokens: Any = None
        self.model = og.Model(str(build.path))
        self._tokenizers: dict[str | None, Any] = {None: tokenizer}
        self._adapters = og.Adapters(self.model) if adapters else None
        for adapter_name, (path, adapter_tokenizer) in (adapters or {}).items():
            self._adapters.load(str(path), adapter_name)
            self._tokenizers[adapter_name] = adapter_tokenizer

    @classmethod
    def from_checkpoint(
        cls,
        source: Path,
        name: str,
        cache_dir: Path,
        adapters: Mapping[str, Path] | None = None,
        precision: str = "fp32",
        log: Log = logger.info,
    ) -> OnnxGenAIBackend:
        """Build (or find cached) the engine's model of the HF checkpoint folder ``source`` and
        its PEFT ``adapters`` (name -> folder) under ``cache_dir``, and load them.

        Raises :class:`finetune.onnx_build.EngineUnavailable` when the engine is missing or
        the model or an adapter cannot be built; :class:`GenerationError` for an adapter that
        is not one or was trained on another base."""
        from transformers import AutoConfig, AutoTokenizer

        folders = {adapter_name: Path(path) for adapter_name, path in (adapters or {}).items()}
        for adapter_name, path in folders.items():
            _check_adapter(adapter_name, path, name)
        build = build_model(source, cache_dir, precision, lora=bool(folders), log=log)
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        loaded = {}
        for adapter_name, path in folders.items():
            own = (path / "tokenizer_config.json").exists()
            adapter_tokenizer = AutoTokenizer.from_pretrained(str(path)) if own else tokenizer
            loaded[adapter_name] = (build_adapter(path, build, cache_dir, log), adapter_tokenizer)
        config = AutoConfig.from_pretrained(str(source), local_files_only=True)
        generation = _generation_config(source)
        window = context_window(SimpleNamespace(config=config), tokenizer)
        eos = _eos_ids(SimpleNamespace(generation_config=generation), tokenizer)
        return cls(build, tokenizer, name, loaded, window, eos)

    def adapters(self) -> list[str]:
        return [a for a in self._tokenizers if a is not None]

    def count_tokens(self, request: ChatRequest) -> int:
        """The prompt's length in tokens, rendered as generation renders it; takes no lock."""
        return len(self._prompt(request))

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        # counted before waiting for the lock: a prompt that cannot fit never waits
        prompt = self._prompt(request)
        window = self.context_window
        if window is not None:
            if len(prompt) >= window:
                raise ContextLengthExceeded(len(prompt), request.max_tokens, window)
            if len(prompt) + request.max_tokens > window:
                request = dataclasses.replace(request, max_tokens=window - len(prompt))
        with self._lock:
            yield from self._generate(request, prompt)

    # ---- generation ---------------------------------------------------------------------------

    def _prompt(self, request: ChatRequest) -> list[int]:
        if request.adapter is not None and request.adapter not in self._tokenizers:
            known = ", ".join(self.adapters()) or "none loaded"
            raise GenerationError(f"unknown adapter {request.adapter!r} (adapters: {known})")
        tokenizer = self._tokenizers[request.adapter]
        messages, tools = render_messages(request, supports_tools(tokenizer.chat_template))
        return tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]

    def _start(self, request: ChatRequest, prompt: list[int]) -> Any:
        """A generator of the engine that has read the prompt (in chunks, checking the
        deadline between them) with the request's adapter active."""
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt) + request.max_tokens)
        generator = og.Generator(self.model, params)
        if request.adapter is not None:
            generator.set_active_adapter(self._adapters, request.adapter)
        for start in range(0, len(prompt), PREFILL_CHUNK):
            _check_deadline(request)
            generator.append_tokens(prompt[start : start + PREFILL_CHUNK])
        return generator

    def _generate(self, request: ChatRequest, prompt: list[int]) -> Iterator[Event]:
        import torch

        _check_deadline(request)  # it may have passed while this request waited for the lock
        tokenizer = self._tokenizers[request.adapter]
        matcher = self._matcher(grammar(request))
        sampler = None
        if request.temperature > 0:
            sampler = torch.Generator().manual_seed(request.seed or 0)
        generator = self._start(request, prompt)
        ids: list[int] = []
        sent = ""  # text already streamed
        mode = "text" if matcher is None or request.response_schema is not None else None
        finish = "length"
        for step in range(request.max_tokens):
            _check_deadline(request)
            logits = torch.from_numpy(generator.get_logits()[0, -1])
            if matcher is not None:
                closing = mode != "text" or request.response_schema is not None
                closing = closing and request.max_tokens - step <= _closing_reserve(request)
                logits = allowed_logits(
                    logits, matcher, self._closers(tokenizer) if closing else None
                )
            token = _pick(logits, request, sampler)
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
            if step + 1 < request.max_tokens:  # the last token needs no forward pass
                generator.append_tokens([token])
        text = tokenizer.decode(ids, skip_special_tokens=True)
        yield from _finish(request, text, sent, mode, finish, Usage(len(prompt), len(ids)))

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


def _finish(
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
    final = text if _stop_at(text, request.stop) is None else sent
    if len(final) > len(sent):
        yield Event(text=final[len(sent) :])
    yield Event(finish_reason=finish, usage=usage)


def _check_adapter(name: str, path: Path, base_name: str) -> None:
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


def _generation_config(source: Path) -> SimpleNamespace | None:
    """The checkpoint's generation config (its end-of-turn ids), without loading the model."""
    path = source / "generation_config.json"
    if not path.is_file():
        return None
    return SimpleNamespace(**json.loads(path.read_text("utf-8")))
