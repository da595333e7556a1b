"""``/v1/models`` and the OpenAI-compatible ``/v1/chat/completions`` over the service-chat graph.

The five chat models are the graph's modes; ``/v1/models`` also lists the assessment
approaches (``assessment-*``), which chat refuses with a 400 pointing to ``/v1/assessments``. ``stream: true`` answers with server-sent events: one
``chat.completion.chunk`` per text delta of the final answer, a last chunk with the finish
reason, a usage chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``.
An answer's ``tunegraph`` field (the usage chunk's, when streamed) says where time went, the
passages retrieval used and the tools the agent called.

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
from api.server.errors import internal_error
from api.server.generation import api_error, fit_max_tokens, request_model
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
    context = s.runtime.context()
    limit = s.settings.max_tokens_limit
    # without max_tokens the model's default applies, but never above the limit
    default = min(getattr(context.llm, "max_tokens", limit), limit)
    messages = params.langchain_messages()
    max_tokens = fit_max_tokens(context.llm, messages, params.max_tokens, default)
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
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.response_metadata.get("finish_reason", "stop"),
                }
            ],
            "usage": self._usage(final),
            "tunegraph": _details(final),
        }

    def events(self) -> Iterator[str]:
        """The SSE events. When the client goes away the server closes this generator: the
        model then stops at its next token instead of generating for no one."""
        from langchain_core.messages import AIMessageChunk

        from agents.graphs import service_chat

        yield self._chunk({"role": "assistant", "content": ""})
        final: dict[str, Any] = {}
        finish = "stop"
        stream = service_chat.graph.stream(
            self.state, self.config, context=self.context, stream_mode=["messages", "values"]
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
            yield _sse(
                {**self._base(), "choices": [], "usage": usage, "tunegraph": _details(final)}
            )
        yield "data: [DONE]\n\n"

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.params.model,
        }

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


def _details(state: dict[str, Any]) -> dict[str, Any]:
    """tunegraph's additions to an answer: where time went, which models, the manual passages
    retrieval put before the model (``sources``: their ids) and the tools the agent called."""
    from agents.graphs.service_chat import tool_calls

    context = state.get("context", [])
    return {
        "timings_ms": {name: span["ms"] for name, span in state.get("timings", {}).items()},
        "models": state.get("models", {}),
        "sources": [hit["id"] for hit in context],
        "passages": [{"id": h["id"], "text": h["text"], "score": h["score"]} for h in context],
        "tool_calls": tool_calls(state),
    }


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
