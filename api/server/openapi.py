"""The OpenAPI 3.1 description of every route (served at ``/openapi.json``).

The Assessment and ClaimContext schemas come from the pydantic records themselves; limits and
model names from the running app's settings, so the spec says what this server accepts.

Over 400 lines on purpose: it is the API's description (schemas and route documents), data
rather than logic, kept in one file so that it reads as one document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from api.jobs.kinds import INT_RANGE, KINDS
from api.jobs.store import STATES
from api.server.assessing import APPROACHES, CHOICES, EVENTS
from api.server.blueprints.assessments import STREAM
from api.server.blueprints.jobs import MAX_LIST, REPORT_KIND, REPORT_TYPES
from api.server.chat_request import (
    ASSESSMENT_MODELS,
    CLIENT_TOOL_MODELS,
    MAX_STOP,
    MODES,
    ROLES,
    SEED_MAX,
    SEED_MIN,
    TOOL_CHOICES,
)
from api.settings import Settings

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "invalid request",
        401: "missing or invalid API key",
        404: "not found",
        409: "conflict",
        413: "body or image too large",
        414: "URL too long",
        429: "rate limit reached, or too many failed API-key checks from this address",
        431: "request headers too large or too many",
        500: "internal error",
        503: "a model or store is unavailable",
        504: "generation timeout",
    }
    headers = {
        401: {"WWW-Authenticate": {"schema": {"type": "string", "pattern": "^Bearer"}}},
        429: {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}},
    }
    responses = {}
    for status in statuses:
        responses[str(status)] = _json(_ref("Error"), reasons[status])
        if status in headers:
            responses[str(status)]["headers"] = {
                name: {"required": True, **header} for name, header in headers[status].items()
            }
    return responses


def _json_text(schema: dict[str, Any]) -> dict[str, Any]:
    """A string holding JSON that ``schema`` describes."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def _sse(data: dict[str, Any], event: dict[str, Any] | None = None) -> dict[str, Any]:
    """One server-sent event as OpenAPI 3.2 models an event (its ``event`` and ``data``
    fields), which is how schemathesis reads a 3.1 ``text/event-stream`` schema."""
    properties: dict[str, Any] = {"data": data}
    if event is not None:
        properties["event"] = event
    return {"type": "object", "required": ["data"], "properties": properties}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    secured: bool = True,
    errors: Iterable[int] = (),
) -> dict[str, Any]:
    # every request's URL, headers and declared body size are checked first (protection.py)
    refused = _errors(413, 414, 431, *errors)
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **refused}}
    if body:
        operation["requestBody"] = {"required": True, "content": body}
    if secured:
        operation["security"] = [{"bearer": []}]
        operation["responses"].update(_errors(401, 429))
    return operation


def _job_params(job_kinds: list[str]) -> dict[str, Any]:
    """``JobParams-<kind>``: the parameters of each built-in job kind this app offers."""
    types = {
        str: {"type": "string"},
        int: {"type": "integer", "minimum": INT_RANGE[0], "maximum": INT_RANGE[1]},
        bool: {"type": "boolean"},
        float: {"type": "number"},
        list: {"type": "array", "items": {"type": "string"}},
    }
    schemas = {}
    for kind in job_kinds:
        if kind not in KINDS:
            continue  # a kind an embedder registered: its params are its own
        command = KINDS[kind]
        schema: dict[str, Any] = {
            "type": "object",
            "description": f"`tunegraph {command.command}`'s arguments",
            "properties": {name: dict(types[p.type]) for name, p in command.params.items()},
            "additionalProperties": False,
        }
        required = [name for name, p in command.params.items() if p.required]
        if required:
            schema["required"] = required
        schemas[f"JobParams-{kind}"] = schema
    if "JobParams-compare" in schemas:
        compare = schemas["JobParams-compare"]
        compare["description"] += (
            "; the report goes to the key's own folder under TUNEGRAPH_HOME/runs: "
            "GET /v1/jobs/{job_id}/report"
        )
        for name in ("images", "questions"):
            compare["properties"][name]["minimum"] = 0
        compare["properties"]["name"]["pattern"] = "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
        compare["properties"]["prices"]["description"] = "a YAML price table on the server"
    return schemas


def _job_request(job_kinds: list[str]) -> dict[str, Any]:
    """One of the kinds, each with its own params (unknown ones are refused with a 400 that
    lists the valid ones); ``params`` defaults to ``{}``."""
    variants = [
        {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": {"const": kind},
                "params": _ref(f"JobParams-{kind}") if kind in KINDS else {"type": "object"},
            },
        }
        for kind in job_kinds
    ]
    request = {
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": job_kinds}, "params": {"type": "object"}},
    }
    return {**request, "oneOf": variants} if variants else request


def _schemas(settings: Settings, job_kinds: list[str]) -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema

    from ingest.assessment import Assessment, ClaimContext

    _, records = models_json_schema(
        [(Assessment, "serialization"), (ClaimContext, "validation")], ref_template=REF
    )
    nullable_str = {"type": ["string", "null"]}
    text = {"type": "string", "maxLength": settings.max_prompt_chars}
    max_tokens = {"type": "integer", "minimum": 1, "maximum": settings.max_tokens_limit}
    usage = {
        "type": "object",
        "properties": {
            k: {"type": "integer"} for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        },
    }
    passage = {
        "type": "object",
        "required": ["id", "text"],
        "properties": {
            "id": {"type": "string"},
            "text": {"type": "string"},
            "score": {"type": "number"},
        },
    }
    client_only = "model " + " or ".join(CLIENT_TOOL_MODELS) + " only (the others refuse it)"
    call = {
        "type": "object",
        "required": ["id", "type", "function"],
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "required": ["name", "arguments"],
                "properties": {
                    "name": {"type": "string"},
                    "arguments": _json_text({"type": "object"}),
                },
            },
        },
    }
    call_delta = {
        "type": "object",
        "required": ["index"],
        "description": "a streamed tool call: its index, id, type and name first (arguments "
        "empty), then its arguments",
        "properties": {
            "index": {"type": "integer"},
            "id": {"type": "string"},
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
            },
        },
    }
    name = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
    json_schema = {
        "type": "object",
        "description": "a JSON schema the grammar can follow: type, properties, required, enum, "
        "const, anyOf, items, minimum/maximum, minLength/maxLength, pattern (without "
        "look-around), $ref to $defs; others are a 400 naming the field",
    }
    finish_reason = {"enum": ["stop", "length", "tool_calls"]}
    passages_by_id = {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "the text of each manual passage that an Assessment cites as evidence, "
        "by id",
    }
    job = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "job"},
            "kind": {"type": "string"},
            "state": {"enum": list(STATES)},
            "params": {"type": "object"},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "log": {"type": "array", "items": {"type": "string"}},
            "result": {"type": ["object", "null"]},
            "error": nullable_str,
            "cancel_requested": {"type": "boolean"},
            "created_at": {"type": "number"},
            "started_at": {"type": ["number", "null"]},
            "finished_at": {"type": ["number", "null"]},
        },
    }
    error_object = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "message": {"type": "string"},
            "param": nullable_str,
            "code": nullable_str,
        },
        "required": ["type", "message", "param", "code"],
    }
    return {
        **records["$defs"],
        "Error": {"type": "object", "properties": {"error": error_object}, "required": ["error"]},
        "ChatCompletionRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": {"enum": list(MODES)},
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["role"],
                        "description": "content is required, except in an assistant message "
                        "with tool_calls; a tool message answers one of those calls",
                        "properties": {
                            "role": {"enum": list(ROLES)},
                            "tool_calls": {"type": "array", "items": call},
                            "tool_call_id": {"type": "string"},
                            "content": {
                                "oneOf": [
                                    {"type": "null"},
                                    text,
                                    {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["type"],
                                            "properties": {"type": {"const": "text"}, "text": text},
                                        },
                                    },
                                ]
                            },
                        },
                    },
                    "contains": {"properties": {"role": {"const": "user"}}},
                    "description": f"at least one user message; at most "
                    f"{settings.max_prompt_chars} characters in all",
                },
                "max_tokens": max_tokens,
                "max_completion_tokens": {**max_tokens, "description": "max_tokens' newer name"},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "stop": {
                    "oneOf": [
                        {"type": "string", "minLength": 1},
                        {
                            "type": "array",
                            "maxItems": MAX_STOP,
                            "items": {"type": "string", "minLength": 1},
                        },
                    ]
                },
                "seed": {"type": "integer", "minimum": SEED_MIN, "maximum": SEED_MAX},
                "stream": {"type": "boolean", "default": False},
                "stream_options": {
                    "type": "object",
                    "properties": {"include_usage": {"type": "boolean"}},
                },
                "n": {"const": 1},
                "tools": {
                    "type": "array",
                    "description": f"functions the model may call; {client_only}",
                    "items": {
                        "type": "object",
                        "required": ["type", "function"],
                        "properties": {
                            "type": {"const": "function"},
                            "function": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": name,
                                    "description": {"type": "string"},
                                    "parameters": {
                                        **json_schema,
                                        "properties": {"type": {"const": "object"}},
                                    },
                                    "strict": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
                "tool_choice": {
                    "description": f"default auto; a named function must be one of tools; "
                    f"{client_only}",
                    "oneOf": [
                        {"enum": list(TOOL_CHOICES)},
                        {
                            "type": "object",
                            "required": ["type", "function"],
                            "properties": {
                                "type": {"const": "function"},
                                "function": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": name},
                                },
                            },
                        },
                    ],
                },
                "parallel_tool_calls": {"type": "boolean", "default": True},
                "response_format": {
                    "description": f"json_object or json_schema: {client_only}, and not with "
                    "tools unless tool_choice is none",
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": {"enum": ["text", "json_object"]}},
                        },
                        {
                            "type": "object",
                            "required": ["type", "json_schema"],
                            "properties": {
                                "type": {"const": "json_schema"},
                                "json_schema": {
                                    "type": "object",
                                    "required": ["schema"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "schema": json_schema,
                                        "strict": {"type": "boolean"},
                                    },
                                },
                            },
                        },
                    ],
                },
            },
        },
        "ChatCompletion": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "chat.completion"},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": "integer"},
                            "message": {
                                "type": "object",
                                "properties": {
                                    "role": {"const": "assistant"},
                                    "content": {
                                        "type": ["string", "null"],
                                        "description": "null when the model called tools",
                                    },
                                    "tool_calls": {"type": "array", "items": call},
                                },
                            },
                            "finish_reason": finish_reason,
                        },
                    },
                },
                "usage": usage,
                "tunegraph": _ref("ChatDetails"),
            },
        },
        "ChatDetails": {
            "type": "object",
            "description": "tunegraph's additions to an answer",
            "properties": {
                "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
                "models": {"type": "object", "additionalProperties": {"type": "string"}},
                "sources": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "the ids of `passages`",
                },
                "passages": {
                    "type": "array",
                    "description": "the manual passages retrieval put before the model "
                    "(modes rag and finetuned-rag)",
                    "items": passage,
                },
                "tool_calls": {
                    "type": "array",
                    "description": "the tools the agent called (mode agent), in order",
                    "items": {
                        "type": "object",
                        "required": ["name", "arguments", "status", "passages", "message"],
                        "properties": {
                            "name": {"type": "string"},
                            "arguments": {"type": "object"},
                            "status": {
                                "enum": ["success", "error", "not_run"],
                                "description": "error: the tool failed (see message)",
                            },
                            "passages": {"type": "array", "items": passage},
                            "message": {
                                **nullable_str,
                                "description": "the tool's answer when it found no passage",
                            },
                        },
                    },
                },
            },
        },
        "ChatCompletionChunk": {
            "type": "object",
            "description": "one server-sent event `data: {...}`; the stream ends `data: [DONE]`",
            "required": ["id", "object", "choices"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "chat.completion.chunk"},
                "choices": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": "integer"},
                            "delta": {
                                "type": "object",
                                "properties": {
                                    "role": {"type": "string"},
                                    "content": {"type": "string"},
                                    "tool_calls": {"type": "array", "items": call_delta},
                                },
                            },
                            "finish_reason": {"anyOf": [finish_reason, {"type": "null"}]},
                        },
                    },
                },
                "usage": usage,
                "tunegraph": {
                    **_ref("ChatDetails"),
                    "description": "with the usage chunk (stream_options.include_usage)",
                },
            },
        },
        "ModelList": {
            "type": "object",
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"enum": [*MODES, *ASSESSMENT_MODELS]},
                            "object": {"const": "model"},
                            "created": {"type": "integer"},
                            "owned_by": {"type": "string"},
                        },
                    },
                },
            },
        },
        "AssessmentResult": {
            "type": "object",
            "required": [
                "id",
                "object",
                "approach",
                "assessments",
                "errors",
                "notes",
                "passages",
                "agreement",
                "timings_ms",
            ],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "assessment"},
                "approach": {"enum": ["finetuned", "agentic", "both"]},
                "assessments": {"type": "object", "additionalProperties": _ref("Assessment")},
                "errors": {"type": "object", "additionalProperties": error_object},
                "notes": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
                "passages": passages_by_id,
                "agreement": {
                    "type": ["object", "null"],
                    "description": "field-by-field agreement when both succeeded",
                },
                "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        },
        "AssessmentEvent": {
            "description": "the data of one server-sent event of `stream=true` (`event: "
            "<type>`, then `data: <this object>`): an `assessment` or `error` per approach as it "
            "finishes, "
            "`agreement` once both succeeded, then `done` with the answer that the request "
            "without `stream` would have had",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "approach", "assessment", "notes", "ms", "passages"],
                    "properties": {
                        "type": {"const": "assessment"},
                        "approach": {"enum": list(APPROACHES)},
                        "assessment": _ref("Assessment"),
                        "notes": {"type": "array", "items": {"type": "string"}},
                        "ms": {"type": "number"},
                        "passages": passages_by_id,
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "approach", "error"],
                    "properties": {
                        "type": {"const": "error"},
                        "approach": {"enum": list(APPROACHES)},
                        "error": error_object,
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "agreement"],
                    "properties": {"type": {"const": "agreement"}, "agreement": {"type": "object"}},
                },
                {
                    "type": "object",
                    "required": ["type", "status", "body"],
                    "properties": {
                        "type": {"const": "done"},
                        "status": {"type": "integer"},
                        "body": {"anyOf": [_ref("AssessmentResult"), _ref("Error")]},
                    },
                },
            ],
        },
        "JobRequest": _job_request(job_kinds),
        **_job_params(job_kinds),
        "Job": job,
        "FileList": {
            "type": "object",
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "object": {"const": "file"},
                            "path": {"type": "string"},
                            "bytes": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
        },
        "JobList": {
            "type": "object",
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _ref("Job")},
            },
        },
    }


def spec(settings: Settings, job_kinds: list[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for this app's settings and job kinds."""
    ok = {"200": _json({"type": "object"}, "ok")}
    job_id = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    multipart = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["images"],
                "properties": {
                    "images": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": settings.max_images,
                        "items": {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "image/*",
                        },
                        "description": f"JPEG, PNG or WebP; each at most {settings.max_image_bytes} "
                        f"bytes and {settings.max_image_pixels} pixels",
                    },
                    "approach": {"enum": list(CHOICES), "default": "both"},
                    "stream": {
                        "enum": list(STREAM),
                        "default": "false",
                        "description": "true: server-sent events, each approach's result as it "
                        "finishes (AssessmentEvent); errors found before any approach runs "
                        "(uploads, a full queue) answer as without it",
                    },
                    "claim": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": _ref("ClaimContext"),
                    },
                },
            }
        }
    }
    uploads = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "format": "binary"},
                        "description": "each stored under its own (sanitised) name; an upload "
                        "replaces a file of the same name",
                    },
                    "folder": {
                        "type": "string",
                        "description": "plain names (letters, digits, '_', '.', '-') joined by "
                        "'/', at most 4 levels; default: the upload folder itself",
                    },
                },
            }
        }
    }
    chat_ok = {
        "200": {
            "description": "the answer, or server-sent events with `stream: true`",
            "content": {
                "application/json": {"schema": _ref("ChatCompletion")},
                "text/event-stream": {
                    "schema": _sse(
                        {
                            "anyOf": [
                                {"const": "[DONE]", "description": "the stream's end"},
                                _json_text({"anyOf": [_ref("ChatCompletionChunk"), _ref("Error")]}),
                            ]
                        }
                    )
                },
            },
        }
    }
    paths = {
        "/v1/models": {
            "get": _operation(
                "The chat models and the assessment approaches",
                {"200": _json(_ref("ModelList"), "models")},
            )
        },
        "/v1/chat/completions": {
            "post": _operation(
                "OpenAI-compatible chat over the service manuals",
                chat_ok,
                body={"application/json": {"schema": _ref("ChatCompletionRequest")}},
                errors=(400, 404, 413, 500, 503, 504),
            )
        },
        "/v1/assessments": {
            "post": _operation(
                "Assess damage photos with the fine-tuned and/or agentic approach",
                {
                    "200": {
                        "description": "each approach's Assessment or error, or server-sent "
                        "events with `stream=true`",
                        "content": {
                            "application/json": {"schema": _ref("AssessmentResult")},
                            "text/event-stream": {
                                "schema": _sse(
                                    _json_text(_ref("AssessmentEvent")), {"enum": list(EVENTS)}
                                )
                            },
                        },
                    }
                },
                body=multipart,
                errors=(400, 413, 500, 503, 504),
            )
        },
        "/v1/jobs": {
            "post": _operation(
                "Start a background job",
                {"202": _json(_ref("Job"), "queued")},
                body={"application/json": {"schema": _ref("JobRequest")}},
                errors=(400, 413, 503),
            ),
            "get": {
                **_operation(
                    "List jobs, newest first",
                    {"200": _json(_ref("JobList"), "jobs")},
                    errors=(400,),
                ),
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"enum": list(STATES)}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIST,
                            "default": 50,
                        },
                    },
                ],
            },
        },
        "/v1/files": {
            "post": _operation(
                "Upload files for jobs into the caller's upload folder",
                {"201": _json(_ref("FileList"), "the stored files, by path in the folder")},
                body=uploads,
                errors=(400, 409, 413),
            ),
            "get": _operation(
                "The caller's uploaded files", {"200": _json(_ref("FileList"), "files")}
            ),
        },
        "/v1/jobs/{job_id}": {
            "parameters": job_id,
            "get": _operation(
                "A job's state, progress, log tail and result",
                {"200": _json(_ref("Job"), "the job")},
                errors=(404,),
            ),
            "delete": _operation(
                "Cancel a queued or running job",
                {"202": _json(_ref("Job"), "cancel requested")},
                errors=(404, 409),
            ),
        },
        "/v1/jobs/{job_id}/report": {
            "parameters": job_id,
            "get": {
                **_operation(
                    f"A succeeded {REPORT_KIND} job's report, as a download",
                    {
                        "200": {
                            "description": "the report file (Content-Disposition: attachment)",
                            "content": {
                                media: {"schema": {"type": "object" if fmt == "json" else "string"}}
                                for fmt, media in REPORT_TYPES.items()
                            },
                        }
                    },
                    errors=(400, 404, 409),
                ),
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"enum": list(REPORT_TYPES), "default": "html"},
                    }
                ],
            },
        },
        "/healthz": {"get": _operation("Liveness", ok, secured=False)},
        "/readyz": {
            "get": _operation(
                "Readiness: database and models; 503 until the models are loaded (the first "
                "call starts loading them in the background)",
                ok,
                secured=False,
                errors=(503,),
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics (needs an API key with TUNEGRAPH_METRICS_REQUIRE_KEY)",
                {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                secured=settings.metrics_require_key and bool(settings.all_keys),
            )
        },
        "/openapi.json": {"get": _operation("This document", ok, secured=False)},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tunegraph",
            "version": "1",
            "description": "Fine-tuned models versus LangGraph agents over vehicle data. Every "
            "error uses OpenAI's envelope. /v1/* needs `Authorization: Bearer <key>` when "
            "TUNEGRAPH_API_KEYS is set.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(settings, job_kinds),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
