"""A fast path for the small multipart uploads the API mostly gets.

Werkzeug's multipart parser compiles two regular expressions around each request's boundary
(clients pick a random boundary per request, so ``re``'s cache never helps) and walks the body
as a stream of events: about a millisecond for a 5 KB photo, most of what an assessment's
upload adds to a request. A body of the plain shape every HTTP client writes (``--boundary``
CRLF, ``Name: value`` header lines, a blank line, the data, CRLF ``--boundary``, ...,
``--boundary--``) is split here with ``bytes`` operations instead. Anything else — a preamble,
whitespace after a boundary, folded headers, a field with its own charset, a body above
:data:`FAST_LIMIT`, no Content-Length — goes to Werkzeug unchanged, so its results and its
errors stay the reference (``tests/test_api_multipart.py`` holds both parsers to the same
results).
"""

from __future__ import annotations

import io
from typing import IO, Any

from flask import Request
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

FAST_LIMIT = 1 << 20  # bytes; above this the fixed cost saved here no longer matters

Parts = tuple[list[tuple[str, str]], list[tuple[str, FileStorage]]]


def split_multipart(
    body: bytes, boundary: bytes, max_parts: int | None, max_field_bytes: int | None
) -> Parts | None:
    """(fields, files) of a plain multipart body, or None when it is not of the plain shape
    (or breaks a limit: Werkzeug then parses it and raises its own error)."""
    delimiter = b"--" + boundary
    close = b"\r\n" + delimiter + b"--"
    if body.startswith(b"\r\n" + delimiter):  # Werkzeug's own test client writes one
        body = body[2:]
    if not body.startswith(delimiter + b"\r\n") or not body.endswith((close, close + b"\r\n")):
        return None
    inner = body[len(delimiter) + 2 : body.rindex(close)]
    sections = inner.split(b"\r\n" + delimiter + b"\r\n")
    # every occurrence of CRLF--boundary must be one of the separators or the close: no
    # boundary followed by anything else (whitespace, a second close) hides in a part
    if body.count(b"\r\n" + delimiter) != len(sections):
        return None
    if max_parts is not None and len(sections) > max_parts:
        return None
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, FileStorage]] = []
    for section in sections:
        head, blank, data = section.partition(b"\r\n\r\n")
        if not blank:
            return None
        headers = _headers(head)
        if headers is None or "content-disposition" not in headers:
            return None
        disposition, extra = parse_options_header(headers["content-disposition"])
        name = extra.get("name")
        if disposition != "form-data" or name is None:
            return None
        filename = extra.get("filename")
        if filename is not None:
            stream = io.BytesIO(data)
            files.append((name, FileStorage(stream, filename, name, headers=headers)))
            continue
        if "content-type" in headers:  # a field with its own type (and maybe charset)
            return None
        if max_field_bytes is not None and len(data) > max_field_bytes:
            return None
        fields.append((name, data.decode("utf-8", "replace")))
    return fields, files


def _headers(head: bytes) -> Headers | None:
    """``Name: value`` lines; None for anything else (folded lines, bare CR/LF, no colon)."""
    pairs = []
    for line in head.split(b"\r\n"):
        if not line or line[0] in b" \t" or b"\r" in line or b"\n" in line:
            return None
        try:
            name, colon, value = line.decode().partition(":")
        except UnicodeDecodeError:
            return None
        if not colon:
            return None
        pairs.append((name.strip(" \t"), value.strip(" \t")))
    return Headers(pairs)


class FastFormDataParser(FormDataParser):
    """Werkzeug's form parser, with :func:`split_multipart` tried first on small bodies."""

    def _parse_multipart(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str],
    ) -> Any:
        boundary = options.get("boundary", "")
        if not (
            boundary.isascii() and boundary and content_length and content_length <= FAST_LIMIT
        ):
            return super()._parse_multipart(stream, mimetype, content_length, options)
        body = stream.read()  # the stream is limited to content_length
        parsed = None
        if len(body) == content_length:
            parsed = split_multipart(
                body, boundary.encode("ascii"), self.max_form_parts, self.max_form_memory_size
            )
        if parsed is None:
            return super()._parse_multipart(io.BytesIO(body), mimetype, len(body), options)
        fields, files = parsed
        return stream, self.cls(fields), self.cls(files)


class APIRequest(Request):
    form_data_parser_class = FastFormDataParser
