"""``POST /v1/assessments``: damage photos in, an Assessment from each approach out.

Multipart fields: ``images`` (1 to ``max_images`` JPEG/PNG/WebP files), ``approach``
(``finetuned``, ``agentic`` or ``both``, the default) and an optional ``claim`` (ClaimContext as
JSON). With ``both`` the two approaches run at the same time; one that fails is reported under
``errors`` beside the other's result. The answer is 200 when at least one approach succeeded.

Each upload is decoded once, when it is checked; both graphs read that decode. The graphs return
``Assessment`` records, serialised to JSON here.

Each approach takes a place in its model's wait queue first (agentic: the text model that writes
the report; fine-tuned: the vision-language model); a full queue answers 503
``server_overloaded`` before anything runs. No user text reaches a model's prompt (the claim's
description only searches the claims history), so there is no prompt to count here; the text
backend still refuses a report prompt that would not fit its context window.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, g, jsonify, request

from api.server.errors import APIError, internal_error
from api.server.generation import GenerationTimeout, api_error, request_model
from api.server.runtime import Ticket
from api.server.services import Services, services
from api.settings import Settings

if TYPE_CHECKING:
    from ingest.assessment import ClaimContext
    from ingest.images import Photo

bp = Blueprint("assessments", __name__, url_prefix="/v1")
APPROACHES = ("finetuned", "agentic")
QUEUE = {"finetuned": "vision", "agentic": "text"}  # the model queue each approach waits in
CHOICES = (*APPROACHES, "both")
VISION_MISSING = (
    "no fine-tuned vision model is trained: run "
    "`tunegraph finetune vision --config configs/vision/vlm_quick.yaml`"
)


@bp.post("/assessments")
def create() -> Response:
    s = services()
    if request.mimetype != "multipart/form-data":
        raise APIError(
            400,
            "send multipart/form-data with one or more `images` files",
            code="invalid_content_type",
        )
    approach = request.form.get("approach", "both")
    if approach not in CHOICES:
        raise APIError(
            400,
            f"unknown approach {approach!r}; use one of {', '.join(CHOICES)}",
            param="approach",
            code="invalid_value",
        )
    g.metric_model = approach
    claim = _claim(request.form.get("claim"))
    images = _images(s.settings)
    wanted = APPROACHES if approach == "both" else (approach,)
    tickets = s.runtime.admit(QUEUE[name] for name in wanted)  # a 503 at once when full
    try:
        outcomes, started = _run_all(s, wanted, images, claim, tickets)
    finally:
        for ticket in tickets.values():  # those not handed to a run in the pool
            ticket.release()
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, APIError] = {}
    for name in wanted:
        outcome = outcomes[name]
        if isinstance(outcome, APIError):
            failures[name] = outcome
        else:
            results[name] = outcome
    if not results:
        # Nothing to show: answer with the failure itself (the agentic one first with `both`).
        raise next(failures[name] for name in ("agentic", "finetuned") if name in failures)

    body: dict[str, Any] = {
        "id": f"asmt_{uuid.uuid4().hex}",
        "object": "assessment",
        "approach": approach,
        "assessments": {
            name: r["assessment"].model_dump(mode="json") for name, r in results.items()
        },
        "errors": {name: error.body()["error"] for name, error in failures.items()},
        "notes": {name: r["notes"] for name, r in results.items() if r["notes"]},
        "agreement": None,
        "timings_ms": {name: r["ms"] for name, r in results.items()}
        | {"total": round((time.perf_counter() - started) * 1000, 1)},
    }
    if len(results) == len(APPROACHES):
        from agents.compare.agreement import agreement

        body["agreement"] = agreement(
            results["finetuned"]["assessment"], results["agentic"]["assessment"]
        )
    return jsonify(body)


def _run_all(
    s: Services,
    wanted: tuple[str, ...],
    images: list[Photo],
    claim: ClaimContext | None,
    tickets: dict[str, Ticket],
) -> tuple[dict[str, dict[str, Any] | APIError], float]:
    """Each wanted approach's result or error, and when they started (``perf_counter``). A run
    in the pool takes its ticket out of ``tickets`` and gives it back when it ends."""
    context = s.runtime.context()
    started = time.perf_counter()
    deadline = time.monotonic() + s.settings.generation_timeout_s
    # The fine-tuned approach runs in the pool; the agentic one in this thread (its report model
    # stops itself at the deadline, and a hand-off to the pool costs about a millisecond).
    futures = {}
    for name in wanted:
        if name != "agentic":
            futures[name] = s.pool.submit(_run, name, images, claim, context, deadline)
            # released when the run ends, even one that outlives this request's deadline
            ticket = tickets.pop(QUEUE[name])
            futures[name].add_done_callback(lambda _future, t=ticket: t.release())
    outcomes: dict[str, dict[str, Any] | APIError] = {}
    if "agentic" in wanted:
        try:
            outcomes["agentic"] = _run("agentic", images, claim, context, deadline)
        except Exception as exc:
            outcomes["agentic"] = _failure(s, exc)
    outcomes |= {name: _outcome(s, future, deadline) for name, future in futures.items()}
    return outcomes, started


def _claim(raw: str | None) -> ClaimContext | None:
    if not raw:
        return None
    from pydantic import ValidationError

    from ingest.assessment import ClaimContext

    try:
        return ClaimContext.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'claim'}: {e['msg']}" for e in exc.errors()
        )
        raise APIError(
            400,
            "claim must be a JSON object with policy_id, vin, incident_date (YYYY-MM-DD), "
            f"description, claimed_amount ({problems})",
            param="claim",
            code="invalid_claim",
        ) from None


def _images(settings: Settings) -> list[Photo]:
    """The uploaded images, each checked for size, format, integrity and pixels by decoding it
    (the only decode: the graphs read the kept picture)."""
    from ingest.images import ImageError, check_image

    files = request.files.getlist("images")
    if not files:
        raise APIError(
            400, "upload at least one image as `images`", param="images", code="missing_images"
        )
    if len(files) > settings.max_images:
        raise APIError(
            400,
            f"{len(files)} images uploaded; at most {settings.max_images} per assessment",
            param="images",
            code="too_many_images",
        )
    images = []
    for number, upload in enumerate(files, 1):
        name = upload.filename or f"image {number}"
        data = upload.stream.read(settings.max_image_bytes + 1)
        if len(data) > settings.max_image_bytes:
            raise APIError(
                413,
                f"{name}: larger than {settings.max_image_bytes:,} bytes "
                "(TUNEGRAPH_MAX_IMAGE_BYTES); downscale or recompress it",
                param="images",
                code="image_too_large",
            )
        try:
            images.append(check_image(data, name, max_pixels=settings.max_image_pixels))
        except ImageError as exc:
            raise APIError(400, str(exc), param="images", code="invalid_image") from None
        except (OSError, SyntaxError, ValueError):
            # PIL can fail while still reading the header, before load_image's own checks
            raise APIError(
                400,
                f"{name}: the image data is corrupt or cut off; upload the original file again",
                param="images",
                code="invalid_image",
            ) from None
    return images


def _run(
    name: str, images: list[Photo], claim: ClaimContext | None, context: Any, deadline: float
) -> dict[str, Any]:
    """One approach's graph run: its Assessment, the problems it went on without, its time."""
    from agents.graphs import assess_agentic, assess_finetuned

    started = time.perf_counter()
    if name == "finetuned":
        if context.vision is None:
            raise APIError(503, VISION_MISSING, code="model_not_trained")
        graph = assess_finetuned.graph
    else:
        graph = assess_agentic.graph
        if context.llm is not None:
            context = dataclasses.replace(context, llm=request_model(context.llm, deadline))
    state = graph.invoke({"images": images, "claim": claim}, context=context)
    return {
        "assessment": state["assessment"],
        "notes": state.get("errors", []),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }


def _outcome(s: Services, future: Future, deadline: float) -> dict[str, Any] | APIError:
    timeout_s = s.settings.generation_timeout_s
    try:
        # bounds the fine-tuned graph, whose vision model has no deadline of its own
        return future.result(timeout=max(0.0, deadline - time.monotonic()) + 1)
    except FutureTimeout:
        future.cancel()  # still queued behind other requests: never start it
        late = GenerationTimeout("the assessment took longer than the request timeout")
        return api_error(late, timeout_s)
    except Exception as exc:
        return _failure(s, exc)


def _failure(s: Services, exc: Exception) -> APIError:
    """An approach's exception as the API error to report (a 500 for an unexpected one)."""
    error = api_error(exc, s.settings.generation_timeout_s)
    if error is None:
        s.log.exception("assessment failed", extra={"request_id": g.get("request_id")})
        error = internal_error(g.get("request_id"))
    return error
