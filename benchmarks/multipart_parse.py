"""What parsing an assessment upload costs: the API's multipart fast path against Werkzeug's
parser (the baseline, what Flask uses by default).

Each round builds the body an HTTP client sends (httpx: ``approach`` and one JPEG of the given
size, a new random boundary each time, as real clients do) and parses it with both parsers, in
turns, through the same ``FormDataParser.parse`` call Flask makes.

    python benchmarks/multipart_parse.py [--quick] [--rounds N] [--image-kb KB]

Last line: {"fast_parse_ratio": ..., "werkzeug_p50_us": ..., "fast_p50_us": ...}: the fast
path's median time over Werkzeug's (below 1: faster).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time


def body(image: bytes) -> tuple[bytes, str]:
    import httpx

    request = httpx.Request(
        "POST",
        "http://bench/v1/assessments",
        data={"approach": "agentic"},
        files=[("images", ("car.jpg", image, "image/jpeg"))],
    )
    return request.read(), request.headers["content-type"]


def parse_us(parser_class: type, data: bytes, content_type: str) -> float:
    from werkzeug.http import parse_options_header

    started = time.perf_counter()
    mimetype, options = parse_options_header(content_type)
    _, form, files = parser_class().parse(io.BytesIO(data), mimetype, len(data), options)
    files["images"].read()
    elapsed = (time.perf_counter() - started) * 1e6
    assert form["approach"] == "agentic"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds [5000]")
    parser.add_argument("--image-kb", type=int, default=5, help="upload size [5 KB]")
    args = parser.parse_args()
    rounds = args.rounds or (500 if args.quick else 5000)

    from werkzeug.formparser import FormDataParser

    from api.server.multipart import FastFormDataParser

    image = os.urandom(args.image_kb * 1024)
    baseline, fast = [], []
    for round_ in range(rounds + 20):
        data, content_type = body(image)
        pair = [(FormDataParser, baseline), (FastFormDataParser, fast)]
        for parser_class, times in pair if round_ % 2 else pair[::-1]:
            value = parse_us(parser_class, data, content_type)
            if round_ >= 20:  # warm-up
                times.append(value)
    werkzeug_p50, fast_p50 = statistics.median(baseline), statistics.median(fast)
    print(
        f"{rounds} uploads of {args.image_kb} KB: Werkzeug p50 {werkzeug_p50:.0f} us, "
        f"fast path p50 {fast_p50:.0f} us"
    )
    print(
        json.dumps(
            {
                "fast_parse_ratio": round(fast_p50 / werkzeug_p50, 3),
                "werkzeug_p50_us": round(werkzeug_p50, 1),
                "fast_p50_us": round(fast_p50, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
