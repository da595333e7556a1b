"""Validation of an OpenAI-style chat completion request.

Every problem is an :class:`APIError` 400 that names the parameter, as OpenAI's API does.

``model=base`` and ``model=finetuned`` also take a client's own tools (``tools``,
``tool_choice``, ``parallel_tool_calls``), a JSON answer (``response_format``), and the
conversation's earlier tool calls and tool results. Each tool's parameters and the answer's
schema must compile to the grammar that constrains the answer
(:func:`agents.backends.chat_format.grammar_problem`), or the request is refused before it
queues. The other models run tunegraph's own retrieval or tools and refuse them.

Over 400 lines on purpose: it is one validator of one body, a check per OpenAI parameter, and the
checks depend on one another (tool_choice on tools, a tool result on an earlier call's id,
response_format on tools and on the model), so they are read in one place.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agents.backends.base import ChatRequest
from agents.backends.chat_format import grammar_problem
from api.server.errors import APIError
from api.settings import Settings

MODES = ("base", "rag", "finetuned", "finetuned-rag", "agent")  # service_chat.MODES
# /v1/models lists the assessment approaches too; they answer on /v1/assessments, not here
ASSESSMENT_MODELS = ("assessment-finetuned", "assessment-agentic", "assessment-both")
ROLES = ("system", "developer", "user", "assistant", "tool")  # developer: OpenAI's newer system
CLIENT_TOOL_MODELS = ("base", "finetuned")  # the models that take a client's tools
TOOL_CHOICES = ("auto", "none", "required")
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for a function's name
JSON_OBJECT = {"type": "object", "additionalProperties": True}  # response_format json_object
MAX_STOP = 4
# OpenAI's range for seed (int64); torch's generator takes it (negative seeds wrap around)
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class ChatParams:
    model: str
    # role and plain-text content; an assistant's ``tool_calls`` (LangChain's shape: name,
    # args, id) and a tool result's ``tool_call_id``
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI function tools
    tool_choice: str = "auto"  # auto, none, required or a tool's name
    parallel_tool_calls: bool = True
    response_schema: dict[str, Any] | None = None  # the JSON schema the answer must follow

    @property
    def client_turn(self) -> bool:
        """Whether this is a turn of the client's own agent (its tools, a JSON answer, or tool
        results in the conversation): the model answers the messages as they were sent, not
        through tunegraph's manual prompt."""
        return bool(
            self.tools
            or self.response_schema is not None
            or any(m["role"] == "tool" or m.get("tool_calls") for m in self.messages)
        )

    def model_options(self) -> dict[str, Any]:
        """The chat model's call options for the client's tools and answer format."""
        options: dict[str, Any] = {}
        if self.tools:
            options.update(
                tools=self.tools,
                tool_choice=self.tool_choice,
                parallel_tool_calls=self.parallel_tool_calls,
            )
        if self.response_schema is not None:
            options["response_schema"] = self.response_schema
        return options

    def langchain_messages(self) -> list[Any]:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

        types = {"system": SystemMessage, "user": HumanMessage}
        messages = []
        for m in self.messages:
            if m["role"] == "assistant":
                messages.append(AIMessage(m["content"], tool_calls=m.get("tool_calls", [])))
            elif m["role"] == "tool":
                messages.append(ToolMessage(m["content"], tool_call_id=m["tool_call_id"]))
            else:
                messages.append(types[m["role"]](m["content"]))
        return messages


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
    for name in ("functions", "function_call"):
        if body.get(name):
            raise _bad(
                f"{name} is OpenAI's deprecated form of tools; send tools and tool_choice", name,
                "unsupported_parameter",
            )  # fmt: skip
    response_format = _response_format(body.get("response_format"))
    if model not in CLIENT_TOOL_MODELS:
        refused = [name for name in ("tools", "tool_choice") if body.get(name)]
        if response_format.get("type", "text") != "text":
            refused.append("response_format")
        if refused:
            raise _bad(_no_client_tools(model, refused[0]), refused[0], "unsupported_parameter")
    if body.get("n") not in (None, 1):  # the SDK may send null
        raise _bad("n must be 1", "n", "unsupported_parameter")
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"), tools)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("parallel_tool_calls must be true or false", "parallel_tool_calls")
    response_schema = _response_schema(response_format)
    if response_schema is not None and tools and tool_choice != "none":
        raise _bad(
            "response_format (a JSON answer) cannot be combined with tools the model may call; "
            "send one of them, or tool_choice none",
            "response_format",
        )

    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages must be a non-empty list", "messages")
    messages: list[dict[str, Any]] = []
    call_ids: set[str] = set()  # the ids of the tool calls so far: tool results answer them
    for i, message in enumerate(raw):
        messages.append(_message(message, i, call_ids))
        if model not in CLIENT_TOOL_MODELS and (call_ids or messages[-1]["role"] == "tool"):
            raise _bad(_no_client_tools(model, "tool calls and tool results"), f"messages[{i}]")
    if not any(m["role"] == "user" for m in messages):
        raise _bad("messages must contain a user message", "messages")
    chars = sum(
        len(m["content"]) + sum(len(json.dumps(c["args"])) for c in m.get("tool_calls", ()))
        for m in messages
    )
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
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel is not False,
        response_schema=response_schema,
    )


def _no_client_tools(model: str, what: str) -> str:
    if model == "agent":
        runs = "runs tunegraph's own manual tools"
    else:
        runs = "answers from the manual passages that tunegraph retrieves"
    return (
        f"model={model} {runs} and takes no client {what}; "
        f"send {what} with model={' or model='.join(CLIENT_TOOL_MODELS)}"
    )


def _message(message: Any, index: int, call_ids: set[str]) -> dict[str, Any]:
    """One message, checked: its role, text content, and the tool calls it makes or answers
    (a tool result must answer a call of an earlier assistant message)."""
    where = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise _bad(f"each message needs a role: one of {', '.join(ROLES)}", where)
    role = "system" if message["role"] == "developer" else message["role"]
    if role == "assistant" and message.get("tool_calls"):
        calls = _tool_calls(message["tool_calls"], where)
        call_ids.update(call["id"] for call in calls)
        content = "" if message.get("content") is None else _content(message, index)
        return {"role": role, "content": content, "tool_calls": calls}
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or call_id not in call_ids:
            ids = ", ".join(sorted(call_ids)) or "there are none"
            raise _bad(
                "a tool message answers a tool call of an earlier assistant message: its "
                f"tool_call_id must be one of those calls' ids ({ids})",
                f"{where}.tool_call_id",
            )
        return {"role": role, "content": _content(message, index), "tool_call_id": call_id}
    return {"role": role, "content": _content(message, index)}


def _tool_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's OpenAI tool calls as LangChain's (name, args, id)."""
    if not isinstance(raw, list):
        raise _bad("tool_calls must be a list of calls", f"{where}.tool_calls")
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(call.get("id"), str)
            or not call["id"]
            or not isinstance(function.get("name"), str)
        ):
            raise _bad(
                'each tool call is {"id": ..., "type": "function", '
                '"function": {"name": ..., "arguments": "<a JSON object>"}}',
                at,
            )
        arguments = function.get("arguments")
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else None
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise _bad("arguments must be a JSON object, as a string", f"{at}.function.arguments")
        calls.append({"name": function["name"], "args": args, "id": call["id"]})
    return calls


def _tools(raw: Any) -> list[dict[str, Any]]:
    """The client's function tools, each one's parameters checked by compiling the grammar
    that will constrain its calls."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad("tools must be a list of function tools", "tools")
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        at = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise _bad(
                'each tool is {"type": "function", "function": {"name": ..., '
                '"description": ..., "parameters": {a JSON schema}}}',
                at,
            )
        name = function.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME.match(name):
            raise _bad(
                "a function's name is 1 to 64 letters, digits, '_' or '-'", f"{at}.function.name"
            )
        if any(t["function"]["name"] == name for t in tools):
            raise _bad(f"two tools are named {name!r}; names must differ", f"{at}.function.name")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise _bad("description must be a string", f"{at}.function.description")
        parameters = function.get("parameters")
        if parameters is not None and (
            not isinstance(parameters, dict) or (parameters and parameters.get("type") != "object")
        ):
            raise _bad(
                'parameters must be a JSON schema of "type": "object" (the call\'s arguments)',
                f"{at}.function.parameters",
            )
        clean = {"name": name, "description": description, "parameters": parameters}
        tool = {"type": "function", "function": {k: v for k, v in clean.items() if v is not None}}
        request = ChatRequest([], tools=[tool], tool_choice="required")
        _check_schema(request, f"{at}.function.parameters")
        tools.append(tool)
    return tools


def _tool_choice(raw: Any, tools: list[dict[str, Any]]) -> str:
    """``auto`` (the default), ``none``, ``required`` or the name of one of ``tools``."""
    if raw is None:
        return "auto"
    named = isinstance(raw, dict) and raw.get("type") == "function"
    function = raw.get("function") if named else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        choice = function["name"]
        names = [t["function"]["name"] for t in tools]
        if choice not in names or choice in (*TOOL_CHOICES, "any"):
            raise _bad(
                f"tool_choice names the function {choice!r}, which is not one of the tools "
                f"({', '.join(names) or 'none sent'}); name one of them, or use auto, none or "
                "required",
                "tool_choice",
            )
        return choice
    if raw not in TOOL_CHOICES:
        raise _bad(
            'tool_choice is "auto", "none", "required" or '
            '{"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    if raw == "required" and not tools:
        raise _bad("tool_choice required needs tools to call: send tools", "tool_choice")
    return raw


def _response_format(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or raw.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad(
            'response_format is {"type": "text"}, {"type": "json_object"} or '
            '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
            "response_format",
        )
    return raw


def _response_schema(response_format: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks the answer to follow (None: free text)."""
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise _bad(
            'json_schema must be an object: {"name": ..., "schema": {a JSON schema}}',
            "response_format.json_schema",
        )
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise _bad("schema must be a JSON schema (an object)", "response_format.json_schema.schema")
    if "x-guidance" in schema:  # the grammar's own options are the server's
        raise _bad("x-guidance is not accepted in a schema", "response_format.json_schema.schema")
    request = ChatRequest([], response_schema=schema)
    _check_schema(request, "response_format.json_schema.schema")
    return schema


def _check_schema(request: ChatRequest, param: str) -> None:
    """A 400 naming ``param`` when the schema in ``request`` cannot constrain its answer (its
    grammar does not compile). The body's nesting is bounded before (``json_body``)."""
    problem = grammar_problem(request)
    if problem:
        raise _bad(
            f"the schema cannot constrain the answer: {problem}. Use what the grammar "
            "supports: type, properties, required, enum, const, anyOf, items, minimum/maximum, "
            "minLength/maxLength, pattern (without look-around) and $ref to $defs",
            param,
            "invalid_schema",
        )
