"""``/v1/models`` and the OpenAI-compatible ``/v1/chat/completions`` over the service-chat graph.

The five chat models are the graph's modes; ``/v1/models`` also lists the assessment
approaches (``assessment-*``), which chat refuses with a 400 pointing to ``/v1/assessments``. ``stream: true`` answers with server-sent events: one
``chat.completion.chunk`` per text delta of the final answer, a last chunk with the finish
reason, a usage chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``.
An answer's ``tunegraph`` field (the usage chunk's, when streamed) says where time went, the
passages retrieval used and the tools the agent called.

``model=base`` and ``model=finetuned`` also answer a client's own agent: with ``tools``,
``response_format`` or tool results in the messages, the model answers the messages as sent
(no manual prompt, no graph), its output constrained to a call of the offered tools or to the
JSON schema. A call comes back as OpenAI's ``message.tool_calls`` with ``finish_reason:
"tool_calls"``; streamed, each call is a ``tool_calls`` delta with its index, id, type and name,
then one with its arguments, as the openai SDK and langchain-openai accumulate them.

Before anything runs, a request takes a place in the chat model's wait queue (503
``server_overloaded`` when it is full) and its messages are counted in the model's tokens (400
``context_length_exceeded`` when they and ``max_tokens`` do not fit its context window).
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, g, jsonify

from api.server.blueprints import json_body
from api.server.chat_request import ASSESSMENT_MODELS, MODES, ChatParams, parse_chat
from api.server.errors import APIError, internal_error
from api.server.generation import api_error
from api.server.runtime import Ticket
from api.server.services import Services, services

bp = Blueprint("chat", __name__, url_prefix="/v1")
ANSWER_NODES = ("answer", "agent")  # graph nodes whose model output is the reply


@bp.get("/models")
def list_models() -> Response:
    created = services().started
    return jsonify(
        {
            "object": "list",
            "data": [
                {"id": mode, "object": "model", "created": created, "owned_by": "tunegraph"}
                for mode in (*MODES, *ASSESSMENT_MODELS)
            ],
        }
    )


@bp.post("/chat/completions")
def completions() -> Response:
    s = services()
    params = parse_chat(json_body(), s.settings)
    g.metric_model = params.model
    ticket = s.runtime.admit(["text"])["text"]  # a 503 at once when too many wait
    streaming = False
    try:
        run = _prepare(s, params, ticket)
        if not params.stream:
            return jsonify(run.complete())
        response = Response(
            run.events(),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        # the stream gives its place back when it ends; this covers one that never starts
        response.call_on_close(ticket.release)
        streaming = True
        return response
    finally:
        if not streaming:
            ticket.release()


def _prepare(s: Services, params: ChatParams, ticket: Ticket) -> _Run:
    from agents.backends.base import ContextLengthExceeded
    from agents.chat_model import fit_max_tokens, request_model

    context = s.runtime.context()
    limit = s.settings.max_tokens_limit
    # without max_tokens the model's default applies, but never above the limit
    default = min(getattr(context.llm, "max_tokens", limit), limit)
    messages = params.langchain_messages()
    try:
        max_tokens = fit_max_tokens(
            context.llm, messages, params.max_tokens, default, **params.model_options()
        )
    except ContextLengthExceeded as exc:
        raise api_error(exc, s.settings.generation_timeout_s) or exc from None
    if context.llm is None:
        raise APIError(503, "no chat model is configured", code="model_unavailable")
    cancel = threading.Event()  # set when a streamed answer's client goes away
    llm = request_model(
        context.llm,
        time.monotonic() + s.settings.generation_timeout_s,
        cancel,
        max_tokens=max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop=list(params.stop) or None,
        # the backend seeds its sampler with the request's seed (None: 0); without one, each
        # sampled answer would be the same
        seed=params.seed if params.seed is not None else random.randrange(2**31),
    )
    return _Run(s, params, dataclasses.replace(context, llm=llm), cancel, ticket, messages)


class _Run:
    """One chat completion: the graph run, its usage, and its OpenAI-shaped output."""

    def __init__(
        self,
        s: Services,
        params: ChatParams,
        context: Any,
        cancel: threading.Event,
        ticket: Ticket,
        messages: list[Any],
    ) -> None:
        self.s, self.params, self.context, self.cancel = s, params, context, cancel
        self.ticket = ticket  # the request's place in the model's queue
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        # read now: a streamed body is generated after the request context is gone
        self.request_id = g.get("request_id")
        self.created = int(time.time())
        self.state = {"messages": messages, "mode": params.model}
        # no callbacks: usage is read from the run's model replies (callbacks cost ~1 ms a run)
        self.config: dict[str, Any] = {}

    def complete(self) -> dict[str, Any]:
        from agents.graphs import service_chat

        try:
            if self.params.client_turn:
                final = dict(self._client_turn())["values"]  # the last pair: the final state
            else:
                final = service_chat.graph.invoke(self.state, self.config, context=self.context)
        except Exception as exc:
            raise api_error(exc, self.s.settings.generation_timeout_s) or exc from None
        reply = final["messages"][-1]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.params.model,
            "choices": [
                {
                    "index": 0,
                    "message": _message(reply),
                    "finish_reason": reply.response_metadata.get("finish_reason", "stop"),
                }
            ],
            "usage": self._usage(final),
            "tunegraph": _details(final, own_tools=not self.params.client_turn),
        }

    def _client_turn(self) -> Iterator[tuple[str, Any]]:
        """A turn of the client's own agent: the base or fine-tuned model answers the messages
        with the client's tools and answer format. Yields what ``graph.stream`` yields with
        ``stream_mode=["messages", "values"]``: each chunk, then the final state."""
        llm = self.context.chat_model(finetuned=self.params.model == "finetuned")
        messages = self.state["messages"]
        started = time.perf_counter()
        reply = None
        for chunk in llm.stream(messages, **self.params.model_options()):
            reply = chunk if reply is None else reply + chunk
            yield "messages", (chunk, {"langgraph_node": "answer"})
        ms = (time.perf_counter() - started) * 1000
        yield (
            "values",
            {
                "messages": [*messages, reply],
                "timings": {"answer": {"ms": round(ms, 1)}},
                "models": {"chat": llm.model_label},
            },
        )

    def events(self) -> Iterator[str]:
        """The SSE events. When the client goes away the server closes this generator: the
        model then stops at its next token instead of generating for no one."""
        from langchain_core.messages import AIMessageChunk

        from agents.graphs import service_chat

        yield self._chunk({"role": "assistant", "content": ""})
        final: dict[str, Any] = {}
        finish = "stop"
        stream = (
            self._client_turn()
            if self.params.client_turn
            else service_chat.graph.stream(
                self.state, self.config, context=self.context, stream_mode=["messages", "values"]
            )
        )
        try:
            for mode, data in stream:
                if mode == "values":
                    final = data
                    continue
                chunk, meta = data
                if (
                    not isinstance(chunk, AIMessageChunk)
                    or meta.get("langgraph_node") not in ANSWER_NODES
                ):
                    continue
                finish = chunk.response_metadata.get("finish_reason", finish)
                if chunk.text:
                    yield self._chunk({"content": chunk.text})
                if self.params.client_turn:  # the agent's own tool calls are not the client's
                    for part in chunk.tool_call_chunks:
                        yield from self._tool_call_deltas(part)
        except Exception as exc:
            error = api_error(exc, self.s.settings.generation_timeout_s)
            if error is None:
                self.s.log.exception(
                    "chat stream failed",
                    extra={"completion": self.id, "request_id": self.request_id},
                )
                error = internal_error(self.request_id)
            yield _sse(error.body())
            yield "data: [DONE]\n\n"
            return
        finally:
            # Cancel first: closing the graph's stream waits for its running node (the model).
            self.cancel.set()
            stream.close()
            self.ticket.release()
        yield self._chunk({}, finish)
        usage = self._usage(final)
        if self.params.include_usage:
            details = _details(final, own_tools=not self.params.client_turn)
            yield _sse({**self._base(), "choices": [], "usage": usage, "tunegraph": details})
        yield "data: [DONE]\n\n"

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.params.model,
        }

    def _tool_call_deltas(self, part: dict[str, Any]) -> Iterator[str]:
        """One tool call as OpenAI streams it: its index, id, type and name (arguments
        empty), then its arguments."""
        index = part["index"]
        function = {"name": part["name"], "arguments": ""}
        yield self._chunk(
            {
                "tool_calls": [
                    {"index": index, "id": part["id"], "type": "function", "function": function}
                ]
            }
        )
        yield self._chunk(
            {"tool_calls": [{"index": index, "function": {"arguments": part["args"]}}]}
        )

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({**self._base(), "choices": [choice]})

    def _usage(self, final: dict[str, Any]) -> dict[str, int]:
        """Tokens of every model call the run made (the agent may call the model twice): each
        call's reply is a message of the final state, with its usage."""
        calls = [
            m.usage_metadata
            for m in final.get("messages", [])[len(self.state["messages"]) :]
            if getattr(m, "usage_metadata", None)
        ]
        prompt = sum(u.get("input_tokens", 0) for u in calls)
        completion = sum(u.get("output_tokens", 0) for u in calls)
        self.s.metrics.tokens.labels(self.params.model, "prompt").inc(prompt)
        self.s.metrics.tokens.labels(self.params.model, "completion").inc(completion)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }


def _message(reply: Any) -> dict[str, Any]:
    """The OpenAI ``message`` of a model reply: its text, or its tool calls (content null)."""
    if not reply.tool_calls:
        return {"role": "assistant", "content": reply.text}
    calls = [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
        }
        for call in reply.tool_calls
    ]
    return {"role": "assistant", "content": reply.text or None, "tool_calls": calls}


def _details(state: dict[str, Any], own_tools: bool = True) -> dict[str, Any]:
    """tunegraph's additions to an answer: where time went, which models, the manual passages
    retrieval put before the model (``sources``: their ids) and the tools the agent called
    (none in a client's own turn: the calls in its messages are the client's)."""
    from agents.graphs.service_chat import tool_calls

    context = state.get("context", [])
    return {
        "timings_ms": {name: span["ms"] for name, span in state.get("timings", {}).items()},
        "models": state.get("models", {}),
        "sources": [hit["id"] for hit in context],
        "passages": [{"id": h["id"], "text": h["text"], "score": h["score"]} for h in context],
        "tool_calls": tool_calls(state) if own_tools else [],
    }


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
