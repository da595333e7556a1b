"""Generation on an OpenAI-compatible server: vLLM (LoRA adapters served as model names),
llama.cpp server or Ollama with an exported GGUF, or tunegraph's own API.

Tools, ``tool_choice`` and ``response_format: json_schema`` are passed through; the server is
responsible for constraining its output (vLLM and llama.cpp do), and a tool call whose arguments
do not parse is reported as a :class:`GenerationError` naming the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from agents.backends.base import ChatRequest, Event, GenerationError, ToolCall, Usage
from agents.backends.chat_format import new_call_id


class OpenAICompatibleBackend:
    """``base_url`` ends before ``/chat/completions`` (e.g. ``http://localhost:8000/v1``).

    ``adapters`` maps tunegraph adapter names to the server's model names (vLLM serves each
    LoRA adapter under its own name); without an adapter, ``model`` is asked.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        adapters: dict[str, str] | None = None,
        timeout_s: float = 120.0,
        transport: Any = None,
    ) -> None:
        import httpx

        self.name = model
        self.base_url = base_url.rstrip("/")
        self._adapters = dict(adapters or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s, transport=transport)

    def adapters(self) -> list[str]:
        return list(self._adapters)

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        import httpx

        url = f"{self.base_url}/chat/completions"
        try:
            with self._client.stream("POST", url, json=self._payload(request)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise GenerationError(
                        f"{url} answered {response.status_code}: {_error_message(response)}"
                    )
                yield from self._events(response.iter_lines(), url)
        except httpx.HTTPError as exc:
            raise GenerationError(
                f"cannot reach the inference server at {url} ({exc.__class__.__name__}: {exc}); "
                "check that it runs and the base URL setting"
            ) from None

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        if request.adapter is not None and request.adapter not in self._adapters:
            known = ", ".join(self._adapters) or "none configured"
            raise GenerationError(f"unknown adapter {request.adapter!r} (adapters: {known})")
        payload: dict[str, Any] = {
            "model": self._adapters[request.adapter] if request.adapter else self.name,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            payload["stop"] = request.stop
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.tools:
            payload["tools"] = request.tools
            payload["parallel_tool_calls"] = request.parallel_tool_calls
            choice = request.tool_choice
            if choice not in ("auto", "none", "required"):
                choice = {"type": "function", "function": {"name": choice}}
            payload["tool_choice"] = choice
        if request.response_schema is not None:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.response_schema},
            }
        return payload

    def _events(self, lines: Iterator[str], url: str) -> Iterator[Event]:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        usage = None
        for line in lines:
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = Usage(
                    chunk["usage"].get("prompt_tokens", 0),
                    chunk["usage"].get("completion_tokens", 0),
                )
            for choice in chunk.get("choices", []):
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield Event(text=delta["content"])
                for part in delta.get("tool_calls") or []:
                    call = calls.setdefault(
                        part.get("index", 0), {"id": "", "name": "", "args": ""}
                    )
                    function = part.get("function") or {}
                    call["id"] = part.get("id") or call["id"]
                    call["name"] += function.get("name") or ""
                    call["args"] += function.get("arguments") or ""
                finish = choice.get("finish_reason") or finish
        for index in sorted(calls):
            call = calls[index]
            try:
                arguments = json.loads(call["args"] or "{}")
            except ValueError:
                raise GenerationError(
                    f"{url} returned tool call {call['name']!r} with arguments that are not "
                    f"JSON: {call['args']!r}"
                ) from None
            yield Event(tool_call=ToolCall(call["name"], arguments, call["id"] or new_call_id()))
        if calls:
            finish = "tool_calls"
        yield Event(finish_reason=finish or "stop", usage=usage)


def _error_message(response: Any) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
