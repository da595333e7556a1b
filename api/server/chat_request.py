"""Validation of an OpenAI-style chat completion request.

Every problem is an :class:`APIError` 400 that names the parameter, as OpenAI's API does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.server.errors import APIError
from api.settings import Settings

MODES = ("base", "rag", "finetuned", "finetuned-rag", "agent")  # service_chat.MODES
# /v1/models lists the assessment approaches too; they answer on /v1/assessments, not here
ASSESSMENT_MODELS = ("assessment-finetuned", "assessment-agentic", "assessment-both")
ROLES = ("system", "developer", "user", "assistant")  # developer: OpenAI's newer name for system
MAX_STOP = 4
# OpenAI's range for seed (int64); torch's generator takes it (negative seeds wrap around)
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class ChatParams:
    model: str
    messages: list[dict[str, str]]  # role and plain-text content
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False

    def langchain_messages(self) -> list[Any]:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        types = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        return [types[m["role"]](m["content"]) for m in self.messages]


def _bad(message: str, param: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(f"{name} must be a number from {low} to {high}", name)
    return float(value)


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _bad(
                    "only text content parts are accepted; send photos to /v1/assessments",
                    f"messages[{index}].content",
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise _bad("content must be a string or a list of text parts", f"messages[{index}].content")


def parse_chat(body: Any, settings: Settings) -> ChatParams:
    """A validated :class:`ChatParams` from a request body."""
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model is required: one of " + ", ".join(MODES), "model", "missing_model")
    if model in ASSESSMENT_MODELS:
        raise _bad(
            f"{model!r} is an assessment approach: upload photos to POST /v1/assessments with "
            f"approach={model.removeprefix('assessment-')}; chat with one of {', '.join(MODES)}",
            "model",
            "model_not_chat",
        )
    if model not in MODES:
        raise APIError(
            404,
            f"the model {model!r} does not exist; use one of {', '.join(MODES)} (GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    for name in ("tools", "functions", "tool_choice"):
        if body.get(name):
            raise _bad(
                f"{name} is not supported: model=agent runs tunegraph's own manual tools", name,
                "unsupported_parameter",
            )  # fmt: skip
    if body.get("n") not in (None, 1):  # the SDK may send null
        raise _bad("n must be 1", "n", "unsupported_parameter")

    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages must be a non-empty list", "messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _bad(f"each message needs a role: one of {', '.join(ROLES)}", f"messages[{i}]")
        role = "system" if message["role"] == "developer" else message["role"]
        messages.append({"role": role, "content": _content(message, i)})
    if not any(m["role"] == "user" for m in messages):
        raise _bad("messages must contain a user message", "messages")
    chars = sum(len(m["content"]) for m in messages)
    if chars > settings.max_prompt_chars:
        raise _bad(
            f"the messages hold {chars} characters, above the limit of "
            f"{settings.max_prompt_chars} (TUNEGRAPH_MAX_PROMPT_CHARS)",
            "messages",
            "context_length_exceeded",
        )

    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= settings.max_tokens_limit
    ):
        raise _bad(
            f"max_tokens must be a whole number from 1 to {settings.max_tokens_limit} "
            "(TUNEGRAPH_MAX_TOKENS_LIMIT)",
            "max_tokens",
        )
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise _bad(f"stop must be a string or a list of up to {MAX_STOP} strings", "stop")
    seed = body.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not SEED_MIN <= seed <= SEED_MAX
    ):
        raise _bad(f"seed must be a whole number from {SEED_MIN} to {SEED_MAX} (int64)", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("stream_options must be an object", "stream_options")
    return ChatParams(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        stop=tuple(stop or ()),
        seed=seed,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
    )
