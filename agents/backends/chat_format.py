"""Tool calls as text: how they are prompted, constrained and parsed for local models.

Tool calls use the Hermes convention that Qwen2.5, Hermes and SmolLM3 templates also use:
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one per call. A chat template that
knows about tools (its source mentions ``tools``) renders them itself; for one that does not
(SmolLM2's), the tool list goes into the system prompt and earlier calls and tool results are
written into the conversation as text. Either way the grammar from :func:`grammar` makes the
model's output parse: an answer, or one or more well-formed calls of the offered tools.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

from agents.backends.base import ChatRequest, GenerationError, ToolCall
from finetune.constrained import json_grammar

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.S)
MAX_ARGUMENT_CHARS = 100  # tool-argument strings that declare no maxLength


def supports_tools(chat_template: str | None) -> bool:
    return bool(chat_template) and "tools" in chat_template


def text_content(content: Any) -> str:
    """Message content as text (LangChain/OpenAI content parts are joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text", "") if isinstance(part, dict) else str(part) for part in content
    )


def render_messages(
    request: ChatRequest, template_knows_tools: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Messages (and tools) to hand to ``apply_chat_template``."""
    hints = []
    if request.tools and request.tool_choice != "none" and not template_knows_tools:
        listing = "\n".join(json.dumps(t["function"], separators=(",", ":")) for t in request.tools)
        hints.append(
            f"You can call these tools:\n{listing}\nTo call one, answer only with "
            f'{CALL_OPEN}{{"name": <tool name>, "arguments": {{...}}}}{CALL_CLOSE}'
        )
    if request.response_schema is not None:
        hints.append("Answer with one JSON value only.")
    messages = []
    for message in request.messages:
        role = message["role"]
        content = text_content(message.get("content"))
        if template_knows_tools:
            messages.append({**message, "content": content})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [_call_text(c) for c in message["tool_calls"]]
            messages.append({"role": "assistant", "content": "\n".join([content, *calls]).strip()})
        elif role == "tool":
            messages.append(
                {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
            )
        else:
            messages.append({"role": role, "content": content})
    if hints:
        hint = "\n\n".join(hints)
        if messages and messages[0]["role"] == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{hint}"}
        else:
            messages.insert(0, {"role": "system", "content": hint})
    tools = request.tools if template_knows_tools and request.tool_choice != "none" else None
    return messages, tools or None


def grammar(request: ChatRequest) -> str | None:
    """The llguidance (Lark) grammar the answer must follow, or None for free text."""
    if request.response_schema is not None:
        schema = _closed(copy.deepcopy(request.response_schema), None)
        return json_grammar(schema)
    if not request.tools or request.tool_choice == "none":
        return None
    tools = _chosen_tools(request)
    calls = {"anyOf": [_call_schema(t["function"]) for t in tools]}
    if request.tool_choice == "auto":
        # An answer cannot start with "<" or a space, so the first token decides which it is.
        rules = "start: calls | answer\nanswer: ANSWER\nANSWER: /[^<\\s][^\\x00]*/"
    else:
        rules = "start: calls"
    repeat = ' ("\\n" call)*' if request.parallel_tool_calls else ""
    rules += f'\ncalls: call{repeat}\ncall: "{CALL_OPEN}" json_body "{CALL_CLOSE}"'
    return json_grammar(calls, rules)


def grammar_problem(request: ChatRequest) -> str | None:
    """Why :func:`grammar` cannot constrain ``request``'s answer — a tool choice that names no
    offered tool, an invalid JSON schema, or a schema feature llguidance does not implement
    (``not``, ``if``/``then``, ``uniqueItems``, look-around in a ``pattern``...) — or None when
    it can. Checked without a tokenizer, so a server refuses such a request before it queues.

    >>> grammar_problem(ChatRequest([], response_schema={"type": "array", "uniqueItems": True}))
    'Unimplemented keys: ["uniqueItems"]'
    """
    import llguidance

    try:
        lark = grammar(request)
    except GenerationError as exc:
        return str(exc)
    if lark is None:
        return None
    error = llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(lark))
    if not error:
        return None
    # "at 2(12): failed to compile JSON schema: <why>\n   1 | <grammar lines>...": keep <why>
    why = re.sub(r"^at \d+\(\d+\): ", "", re.split(r"\n *\d+ \| ", error)[0])
    return " ".join(why.removeprefix("failed to compile JSON schema: ").split())


def parse_tool_calls(text: str) -> list[ToolCall]:
    """The calls in a model's answer (empty when it answered in text); repeats are dropped.

    >>> parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>')[0].arguments
    {'x': 1}
    """
    calls, seen = [], set()
    for body in _CALL.findall(text):
        try:
            data = json.loads(body)
            name, arguments = data["name"], dict(data["arguments"])
        except (ValueError, KeyError, TypeError) as exc:
            raise GenerationError(
                f"the model wrote a malformed tool call {body!r}: {exc}"
            ) from None
        key = json.dumps([name, arguments], sort_keys=True)
        if key not in seen:
            seen.add(key)
            calls.append(ToolCall(name, arguments, new_call_id()))
    return calls


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"


def _chosen_tools(request: ChatRequest) -> list[dict[str, Any]]:
    if request.tool_choice in ("auto", "required", "any"):
        return request.tools
    chosen = [t for t in request.tools if t["function"]["name"] == request.tool_choice]
    if not chosen:
        names = ", ".join(t["function"]["name"] for t in request.tools)
        raise GenerationError(
            f"tool_choice {request.tool_choice!r} is not one of the bound tools ({names}); "
            "use auto, none, required or one of those names"
        )
    return chosen


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    parameters = function.get("parameters") or {"type": "object"}
    parameters = _closed(copy.deepcopy(parameters), MAX_ARGUMENT_CHARS)
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _closed(schema: dict[str, Any], max_chars: int | None) -> dict[str, Any]:
    """Objects without ``additionalProperties`` accept only their declared keys (as in OpenAI's
    strict mode), and with ``max_chars``, strings without ``maxLength`` get one: a small model
    otherwise can run a string, or keep adding keys, until max_tokens."""
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    free_string = schema.get("type") == "string" and not {"maxLength", "enum", "const"} & set(
        schema
    )
    if max_chars and free_string:
        schema["maxLength"] = max_chars
    # a client's schema may be malformed ("properties": 5): llguidance then says what is wrong
    properties, defs, any_of = (schema.get(k) for k in ("properties", "$defs", "anyOf"))
    children = [
        *(properties.values() if isinstance(properties, dict) else ()),
        *(defs.values() if isinstance(defs, dict) else ()),
        *(any_of if isinstance(any_of, list) else ()),
        schema.get("items"),
    ]
    for child in children:
        if isinstance(child, dict):
            _closed(child, max_chars)
    return schema


def _call_text(call: dict[str, Any]) -> str:
    function = call.get("function", call)
    arguments = function.get("arguments", function.get("args", {}))
    if isinstance(arguments, str):
        arguments = json.loads(arguments or "{}")
    payload = {"name": function["name"], "arguments": arguments}
    return f"{CALL_OPEN}{json.dumps(payload)}{CALL_CLOSE}"
