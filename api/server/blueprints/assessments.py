"""``POST /v1/assessments``: damage photos in, an Assessment from each approach out.

Multipart fields: ``images`` (1 to ``max_images`` JPEG/PNG/WebP files), ``approach``
(``finetuned``, ``agentic`` or ``both``, the default), an optional ``claim`` (ClaimContext as
JSON) and ``stream`` (``true``: server-sent events, one per approach as it finishes; see
:mod:`api.server.assessing`). With ``both`` the two approaches run at the same time; one that
fails is reported under ``errors`` beside the other's result. The answer is 200 when at least
one approach succeeded.

Each upload is decoded once, when it is checked; both graphs read that decode. The graphs return
``Assessment`` records, serialised to JSON here.

Each approach takes a place in its model's wait queue first (agentic: the text model that writes
the report; fine-tuned: the vision-language model); a full queue answers 503
``server_overloaded`` before anything runs, with or without ``stream``. No user text reaches a
model's prompt (the claim's description only searches the claims history), so there is no
prompt to count here; the text backend still refuses a report prompt that would not fit its
context window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, g, jsonify, request

from api.server.assessing import CHOICES, Assessing
from api.server.errors import APIError
from api.server.services import services
from api.settings import Settings

if TYPE_CHECKING:
    from ingest.assessment import ClaimContext
    from ingest.images import Photo

bp = Blueprint("assessments", __name__, url_prefix="/v1")
STREAM = {"true": True, "false": False}


@bp.post("/assessments")
def create() -> Response:
    s = services()
    if request.mimetype != "multipart/form-data":
        raise APIError(
            400,
            "send multipart/form-data with one or more `images` files",
            code="invalid_content_type",
        )
    approach = _choice("approach", CHOICES, "both")
    stream = STREAM[_choice("stream", tuple(STREAM), "false")]
    g.metric_model = approach
    claim = _claim(request.form.get("claim"))
    images = _images(s.settings)
    run = Assessing(s, approach, images, claim, g.get("request_id"))  # a 503 when a queue is full
    if stream:
        return Response(
            run.events(),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        return jsonify(run.result())
    finally:
        run.close()


def _choice(field: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.form.get(field, default)
    if value not in allowed:
        raise APIError(
            400,
            f"unknown {field} {value!r}; use one of {', '.join(allowed)}",
            param=field,
            code="invalid_value",
        )
    return value


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
    names = [upload.filename for upload in files]
    for number, upload in enumerate(files, 1):
        name = upload.filename or f"image {number}"
        if upload.filename and names.count(upload.filename) > 1:  # phones name every photo alike
            name = f"{upload.filename} (image {number})"
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
