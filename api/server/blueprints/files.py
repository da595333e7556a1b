"""Uploads for jobs: ``POST /v1/files`` stores files in the caller's upload folder,
``GET /v1/files`` lists them.

Jobs read files only from the data root and ``TUNEGRAPH_INPUT_ROOTS`` (:mod:`api.jobs.confine`);
a client on another machine sends its manuals, claims or datasets here first and names them in
a job by the path this answers (``{"paths": ["manuals"]}`` after uploading into the folder
``manuals``). Each API key has its own folder (``TUNEGRAPH_HOME/uploads/<key id>``), which no
other key's jobs can read.

The body is ``multipart/form-data``: one or more ``file`` parts, and optionally a ``folder``
field (plain names joined by ``/``, e.g. ``manuals/brakes``). A file is written to a temporary
name and renamed once complete, so a failed upload leaves nothing behind; an upload replaces a
file of the same name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flask import Blueprint, Response, jsonify, request
from werkzeug.utils import secure_filename

from api.jobs.confine import NAME, Roots
from api.server.errors import APIError
from api.server.protection import caller
from api.server.services import services

bp = Blueprint("files", __name__, url_prefix="/v1")
MAX_DEPTH = 4  # folder levels below the upload folder
MAX_LISTED = 1000
CHUNK = 1 << 20


def _uploads() -> Path:
    return Roots.of(services().settings, caller().id).uploads


def _folder(raw: str) -> Path:
    parts = [part for part in raw.strip().strip("/").split("/") if part]
    if len(parts) > MAX_DEPTH or not all(NAME.fullmatch(p) and ".." not in p for p in parts):
        raise APIError(
            400,
            f"folder {raw[:80]!r}: use at most {MAX_DEPTH} plain names (letters, digits, "
            "'_', '.', '-') joined by '/'",
            param="folder",
            code="invalid_value",
        )
    return Path(*parts) if parts else Path()


@bp.post("/files")
def upload() -> tuple[Response, int]:
    uploads = request.files.getlist("file")
    if not uploads:
        raise APIError(
            400,
            "send multipart/form-data with one or more `file` parts",
            param="file",
            code="missing_file",
        )
    folder = _folder(request.form.get("folder", ""))
    names = []
    for upload in uploads:
        name = secure_filename(upload.filename or "")
        if not name:
            raise APIError(
                400,
                f"file name {(upload.filename or '')[:80]!r} has no usable characters; name "
                "the file with letters, digits, '_', '.' or '-'",
                param="file",
                code="invalid_value",
            )
        names.append(name)
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise APIError(400, f"two files are named {twice!r}", param="file", code="invalid_value")
    root = _uploads()
    target = root / folder
    for parent in [target, *target.parents]:
        if parent == root.parent:
            break
        if parent.is_file():
            raise _conflict(f"folder {parent.relative_to(root).as_posix()!r} is an uploaded file")
    clash = next((name for name in names if (target / name).is_dir()), None)
    if clash is not None:
        raise _conflict(f"{(folder / clash).as_posix()!r} is a folder of uploads")
    target.mkdir(parents=True, exist_ok=True)
    stored = []
    for upload, name in zip(uploads, names, strict=True):
        size = _write(upload.stream, target / name)
        stored.append({"object": "file", "path": (folder / name).as_posix(), "bytes": size})
    return jsonify({"object": "list", "data": stored}), 201


def _conflict(what: str) -> APIError:
    return APIError(409, f"{what}; choose another name", param="folder", code="upload_conflict")


def _write(stream, path: Path) -> int:
    """Copy ``stream`` to ``path`` through a temporary file in the same folder."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
                size += len(chunk)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return size


@bp.get("/files")
def list_files() -> Response:
    """The caller's uploaded files (path relative to its upload folder, size), at most
    :data:`MAX_LISTED`."""
    root = _uploads()
    files = []
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.startswith(".upload-"):
                files.append(
                    {
                        "object": "file",
                        "path": path.relative_to(root).as_posix(),
                        "bytes": path.stat().st_size,
                    }
                )
                if len(files) == MAX_LISTED:
                    break
    return jsonify({"object": "list", "data": files})
