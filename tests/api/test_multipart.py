"""The multipart fast path gives Werkzeug's results (or its errors) for every body, and takes
the fast route for what HTTP clients send."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header
from werkzeug.test import EnvironBuilder

from api.server.multipart import FAST_LIMIT, FastFormDataParser, split_multipart
from tests.api.conftest import jpeg

B = "b0undary"
CT = f"multipart/form-data; boundary={B}"


def httpx_body() -> tuple[bytes, str]:
    claim = {"description": "rayure près du phare 🚗", "claimed_amount": 1200}
    request = httpx.Request(
        "POST",
        "http://test/v1/assessments",
        data={"approach": "both", "claim": json.dumps(claim, ensure_ascii=False)},
        files=[
            ("images", ("front.jpg", jpeg(1), "image/jpeg")),
            ("images", ("rear left.png", b"\x89PNG\r\n--not a boundary", "image/png")),
        ],
    )
    return request.read(), request.headers["content-type"]


def werkzeug_body() -> tuple[bytes, str]:
    """What Flask's test client sends."""
    environ = EnvironBuilder(
        method="POST", data={"approach": "agentic", "images": (io.BytesIO(jpeg(2)), "car.jpg")}
    ).get_environ()
    return environ["wsgi.input"].read(), environ["CONTENT_TYPE"]


def plain(*parts: bytes, end: bytes = b"\r\n") -> bytes:
    return b"".join(b"--" + B.encode() + b"\r\n" + p + b"\r\n" for p in parts) + (
        b"--" + B.encode() + b"--" + end
    )


FIELD = b'Content-Disposition: form-data; name="approach"\r\n\r\nboth'
FILE = (
    b'Content-Disposition: form-data; name="images"; filename="a.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n\x00\xff\r\n\r\ndata"
)

# body -> whether the fast route takes it (False: Werkzeug parses it, results must still agree)
CASES = {
    "fields and files": (plain(FIELD, FILE), True),
    "no CRLF after the close": (plain(FIELD, FILE, end=b""), True),
    "empty field and empty file": (
        plain(
            b'Content-Disposition: form-data; name="claim"\r\n\r\n',
            b'Content-Disposition: form-data; name="images"; filename=""\r\n\r\n',
        ),
        True,
    ),
    "utf-8 file name": (
        plain(
            b"Content-Disposition: form-data; name=\"images\"; filename*=UTF-8''voiture%20%C3%A9.jpg"
            b"\r\n\r\nx"
        ),
        True,
    ),
    "invalid utf-8 in a field": (
        plain(b'Content-Disposition: form-data; name="claim"\r\n\r\n\xff\xfe'),
        True,
    ),
    "boundary-like data": (plain(FIELD, FILE + b"\r\n--" + B.encode() + b"X"), False),
    "CRLF before the first boundary": (b"\r\n" + plain(FIELD), True),
    "preamble": (b"preamble\r\n" + plain(FIELD), False),
    "epilogue": (plain(FIELD, end=b"\r\nepilogue"), False),
    "whitespace after a boundary": (
        plain(FIELD).replace(B.encode() + b"\r\n", B.encode() + b" \r\n", 1),
        False,
    ),
    "folded header": (
        plain(b'Content-Disposition: form-data;\r\n name="approach"\r\n\r\nboth'),
        False,
    ),
    "field with its own charset": (
        plain(
            b'Content-Disposition: form-data; name="claim"\r\n'
            b"Content-Type: text/plain; charset=latin-1\r\n\r\npr\xe8s"
        ),
        False,
    ),
    "LF line endings": (plain(FIELD).replace(b"\r\n", b"\n"), False),
    "truncated": (plain(FIELD, FILE)[:-20], False),
    "no content-disposition": (plain(b"Content-Type: text/plain\r\n\r\nx"), False),
    "no name": (plain(b"Content-Disposition: form-data\r\n\r\nx"), False),
    "header without colon": (plain(b"Content-Disposition form-data\r\n\r\nx"), False),
    "no blank line": (plain(b'Content-Disposition: form-data; name="a"'), False),
    "too many parts": (plain(*[FIELD] * 5), False),
    "field above the memory limit": (
        plain(b'Content-Disposition: form-data; name="claim"\r\n\r\n' + b"x" * 300),
        False,
    ),
    "empty": (b"", False),
}
LIMITS = {"max_form_parts": 4, "max_form_memory_size": 200}


def outcome(parser_class: type[FormDataParser], body: bytes, content_type: str, **limits):
    mimetype, options = parse_options_header(content_type)
    parser = parser_class(**limits)
    try:
        _, form, files = parser.parse(io.BytesIO(body), mimetype, len(body), options)
    except HTTPException as exc:
        return type(exc).__name__
    return (
        list(form.items(multi=True)),
        [
            (key, f.filename, f.content_type, list(f.headers.items()), f.read())
            for key, f in files.items(multi=True)
        ],
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_results_as_werkzeug(case):
    body, fast = CASES[case]
    reference = outcome(FormDataParser, body, CT, **LIMITS)
    assert outcome(FastFormDataParser, body, CT, **LIMITS) == reference
    parsed = split_multipart(body, B.encode(), LIMITS["max_form_parts"], 200)
    assert (parsed is not None) == fast
    if fast:  # werkzeug accepts it too (the equality above then compared the fast route)
        assert isinstance(reference, tuple)


@pytest.mark.parametrize("build", [httpx_body, werkzeug_body])
def test_what_clients_send_takes_the_fast_route(build):
    body, content_type = build()
    _, options = parse_options_header(content_type)
    assert split_multipart(body, options["boundary"].encode(), 1000, 500_000) is not None
    reference = outcome(FormDataParser, body, content_type)
    assert reference[1]  # the image arrived
    assert outcome(FastFormDataParser, body, content_type) == reference


def test_large_bodies_go_to_werkzeug(monkeypatch):
    body = plain(FIELD, FILE.replace(b"data", b"x" * (FAST_LIMIT + 1)))
    monkeypatch.setattr("api.server.multipart.split_multipart", lambda *a: pytest.fail("fast path"))
    assert outcome(FastFormDataParser, body, CT) == outcome(FormDataParser, body, CT)


def test_the_app_parses_uploads_with_it(app):
    assert app.request_class.form_data_parser_class is FastFormDataParser
