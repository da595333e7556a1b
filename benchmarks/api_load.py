"""The HTTP API under load: concurrent clients on loopback against /v1/chat/completions and
/v1/assessments (approach=agentic), first over instant fake models, then over the real embedded
models.

The server is what `tunegraph serve` runs: gunicorn, one worker process with 8 threads, malloc
arenas capped, in a child process of this one (so the clients here share no interpreter lock
with it); its memory is the worker's VmRSS from /proc.

Baseline, measured in the same run: the same fake graphs called directly in-process, one call
at a time. ``overhead_p50_ms`` is what the API adds to a request (loopback HTTP, gunicorn,
Flask, validation of the body and photos, JSON): the p50 of one client's sequential requests
minus the p50 of the direct calls, the larger of the two endpoints. The load runs then report
requests/s, p50/p95/p99, errors and the worker's RSS growth from after warm-up to the end.

The real run needs `make demo` (the manual and claims indexes, the demo photos); without them
it says what is missing and is skipped (``--fake-only`` skips it always).

    python benchmarks/api_load.py [--quick] [--fake-only] [--clients N] [--seconds S]

Last line: {"errors": ..., "p95_ms": ..., "overhead_p50_ms": ..., "rss_growth_pct": ...} with
p95 and RSS growth of the fake load run; ``errors`` counts every run's failed requests.

Over 400 lines on purpose: a benchmark is one script that a reader runs and audits; its fake
models, its server (this same script in a child process, ``--serve``) and its measurements are
read together.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from agents.backends.base import ChatRequest, Event, Usage
from agents.chat_model import LocalChatModel
from agents.context import AgentContext
from api.server.app import create_app
from api.server.gunicorn import serve
from api.settings import Settings
from ingest.assessment import Damage
from ingest.claims import Claim
from rag.claims_db import ClaimsDatabase
from rag.stores.base import Hit

QUESTION = "What is the hood hinge bolt torque?"
CHAT_MODEL = "rag"
REAL_MAX_TOKENS = 16  # keeps a real chat answer to a few seconds on CPU


# ---- the fake models ---------------------------------------------------------------------------


class InstantBackend:
    """Answers every request at once with a report the assessment graph accepts."""

    name = "instant"

    def adapters(self) -> list[str]:
        return ["ft"]

    def stream(self, request: ChatRequest):
        yield Event(text=json.dumps({"report": "Hood dent; repair per the manual.", "cited": []}))
        yield Event(finish_reason="stop", usage=Usage(10, 12))


class InstantDamage:
    name = "instant-damage"

    def detect(self, images):
        return [Damage(type="dent", part="hood", severity="moderate", confidence=0.9)]


class InstantRetriever:
    def search(self, query, k=5, filter=None, mode="hybrid"):
        return [Hit("blk-1", "Hood hinge bolt torque 24 Nm; dent repair procedure.", 0.9, {})]


def fake_context(folder: Path) -> AgentContext:
    database = ClaimsDatabase(f"sqlite:///{folder / 'claims.db'}")
    database.upsert(
        [
            Claim(f"C-{i}", f"POL-{i % 7}", f"2FTRX18W1XCA{i:05d}", date(2025, 1, 1 + i % 28),
                  "hood dent", "hood", "dent", "moderate", 700.0 + i,
                  policy_start=date(2020, 1, 1))
            for i in range(1, 200)
        ]
    )  # fmt: skip
    return AgentContext(
        llm=LocalChatModel(backend=InstantBackend()),
        finetuned_adapter="ft",
        manuals=InstantRetriever(),
        claims_db=database,
        claims_index=InstantRetriever(),
        damage_model=InstantDamage(),
        open_photo=lambda path: b"",
    )


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (150, 80, 120)).save(buffer, "JPEG")
    return buffer.getvalue()


# ---- measuring -------------------------------------------------------------------------------


@dataclass
class Requests:
    """One client's (or one run's) latencies per endpoint and its failures."""

    ms: dict[str, list[float]] = field(default_factory=lambda: {"chat": [], "assess": []})
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Requests) -> None:
        for name, values in other.ms.items():
            self.ms[name] += values
        self.errors += other.errors

    @property
    def all_ms(self) -> list[float]:
        return self.ms["chat"] + self.ms["assess"]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)


def rss_mb(pid: int) -> float:
    """A process's resident memory, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status (Linux only)")


def send(http: httpx.Client, kind: str, image: bytes, max_tokens: int | None) -> httpx.Response:
    if kind == "chat":
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": QUESTION}]}
        return http.post(
            "/v1/chat/completions", json=body | ({"max_tokens": max_tokens} if max_tokens else {})
        )
    return http.post(
        "/v1/assessments",
        data={"approach": "agentic"},
        files=[("images", ("car.jpg", image, "image/jpeg"))],
    )


def client_loop(
    url: str, until: float, image: bytes, offset: int, max_tokens: int | None, out: Requests
) -> None:
    """Alternate chat and assessment requests until ``until`` (time.monotonic())."""
    with httpx.Client(base_url=url, timeout=300) as http:
        i = offset
        while time.monotonic() < until:
            kind = ("chat", "assess")[i % 2]
            i += 1
            started = time.perf_counter()
            try:
                response = send(http, kind, image, max_tokens)
                ok = response.status_code == 200
                detail = f"{kind}: HTTP {response.status_code} {response.text[:120]}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{kind}: {type(exc).__name__}: {exc}"
            if ok:
                out.ms[kind].append((time.perf_counter() - started) * 1000)
            else:
                out.errors.append(detail)


def load(
    server: Server, clients: int, seconds: float, image: bytes, max_tokens: int | None
) -> dict:
    """``clients`` threads for ``seconds``: throughput, latency percentiles, errors, RSS."""
    url = server.url
    rss_start = server.rss_mb()
    until = time.monotonic() + seconds
    results = [Requests() for _ in range(clients)]
    threads = [
        threading.Thread(target=client_loop, args=(url, until, image, i, max_tokens, results[i]))
        for i in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total = Requests()
    for result in results:
        total.merge(result)
    rss_end = server.rss_mb()
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(total.all_ms),
        "requests_per_s": round(len(total.all_ms) / elapsed, 2),
        "p50_ms": percentile(total.all_ms, 50),
        "p95_ms": percentile(total.all_ms, 95),
        "p99_ms": percentile(total.all_ms, 99),
        "chat_p50_ms": percentile(total.ms["chat"], 50),
        "assess_p50_ms": percentile(total.ms["assess"], 50),
        "errors": len(total.errors),
        "error_samples": total.errors[:3],
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_pct": round((rss_end - rss_start) / rss_start * 100, 2),
    }


def timed(call: Callable[[], Any], n: int) -> list[float]:
    values = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        values.append((time.perf_counter() - started) * 1000)
    return values


def overhead(url: str, context: AgentContext, image: bytes, n: int) -> dict:
    """p50 of sequential HTTP requests against p50 of the same graph called directly."""
    from langchain_core.messages import HumanMessage

    from agents.graphs import assess_agentic, service_chat

    direct = {
        "chat": lambda: service_chat.graph.invoke(
            {"messages": [HumanMessage(QUESTION)], "mode": CHAT_MODEL}, context=context
        ),
        "assess": lambda: assess_agentic.graph.invoke(
            {"images": [image], "claim": None}, context=context
        ),
    }
    figures = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for kind, call in direct.items():
            call(), send(http, kind, image, None)  # warm-up
            # alternated, one of each at a time, so that drift in the machine's speed
            # weighs on both the same
            direct_ms, http_ms = [], []
            for _ in range(n):
                direct_ms += timed(call, 1)
                http_ms += timed(lambda k=kind: send(http, k, image, None), 1)
            direct_p50, http_p50 = statistics.median(direct_ms), statistics.median(http_ms)
            figures[kind] = {
                "direct_p50_ms": round(direct_p50, 2),
                "http_p50_ms": round(http_p50, 2),
                "overhead_p50_ms": round(http_p50 - direct_p50, 2),
            }
        # the floor: a route that does nothing (gunicorn, loopback, Flask, the client)
        figures["healthz"] = {"http_p50_ms": round(statistics.median(timed(
            lambda: http.get("/healthz"), n)), 2)}  # fmt: skip
    return figures


class Server:
    """``tunegraph serve``'s gunicorn (one worker, 8 threads) in a child process running this
    script with ``--serve fake|real``, on a free loopback port."""

    THREADS = 8

    def __init__(self, kind: str, folder: Path, timeout_s: int = 60) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, __file__, "--serve", kind, "--folder", str(folder),
            "--port", str(self.port), "--timeout", str(timeout_s),
        ]  # fmt: skip
        self.log = folder / f"server-{kind}.log"

    def __enter__(self) -> Server:
        with self.log.open("w") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600  # the real models load in the worker first
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.process.kill()
        raise RuntimeError(f"the server did not answer in 600 s: {self.log.read_text()[-2000:]}")

    def worker_pid(self) -> int:
        """gunicorn's one worker: the child of the master process."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = children.read_text().split()
        if len(pids) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {pids}")
        return int(pids[0])

    def rss_mb(self) -> float:
        return rss_mb(self.worker_pid())

    def __exit__(self, *_exc: object) -> None:
        self.process.terminate()  # SIGTERM: gunicorn stops gracefully
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def serve_child(kind: str, folder: Path, port: int, timeout_s: int) -> None:
    """The server side of :class:`Server` (``--serve``): the app built in the worker."""

    def factory():
        if kind == "fake":
            context = fake_context(folder)
            settings = Settings(home=folder / "home", rate_limit_per_minute=0, log_level="WARNING")
        else:
            from api import composition

            settings = Settings.from_env(
                rate_limit_per_minute=0, log_level="WARNING", generation_timeout_s=timeout_s
            )
            context = composition.agent_context(settings)
        return create_app(settings=settings, context_factory=lambda _: context, job_kinds={})

    serve(
        factory,
        host="127.0.0.1",
        port=port,
        threads=Server.THREADS,
        timeout_s=timeout_s + 30,
        log_level="WARNING",
    )


# ---- the two runs ----------------------------------------------------------------------------


def fake_run(clients: int, seconds: float, n_overhead: int, folder: Path) -> dict:
    (folder / "direct").mkdir()
    (folder / "server").mkdir()
    context = fake_context(folder / "direct")
    image = photo()
    with Server("fake", folder / "server") as server:
        figures = overhead(server.url, context, image, n_overhead)
        # warm-up under load (thread pools, allocator) before RSS is taken as the start
        load(server, clients, min(3.0, seconds / 5), image, None)
        result = load(server, clients, seconds, image, None)
    return {"overhead": figures, "load": result}


def missing_for_real(settings: Settings) -> list[str]:
    """What `make demo` would have produced and the real run needs."""
    needs = {
        "the manuals and claims indexes": settings.indexes_dir / "lancedb",
        "the demo photos": settings.demo_dir / "damage" / "images",
    }
    return [f"{what} ({path})" for what, path in needs.items() if not path.is_dir()]


def real_run(clients: int, seconds: float, timeout_s: int, folder: Path) -> dict:
    settings = Settings.from_env()
    missing = missing_for_real(settings)
    if missing:
        return {"skipped": "missing " + "; ".join(missing) + ": run `make demo` first"}
    image = next(iter(sorted((settings.demo_dir / "damage" / "images").glob("*.jpg")))).read_bytes()
    started = time.perf_counter()
    with Server("real", folder, timeout_s) as server:
        with httpx.Client(base_url=server.url, timeout=300) as http:  # loads the models
            send(http, "chat", image, REAL_MAX_TOKENS)
            send(http, "assess", image, REAL_MAX_TOKENS)
        load_s = time.perf_counter() - started
        result = load(server, clients, seconds, image, REAL_MAX_TOKENS)
    return {"start_and_warm_up_s": round(load_s, 1), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (<= 5 minutes)")
    parser.add_argument("--fake-only", action="store_true", help="skip the real-model run")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (fake run)")
    parser.add_argument("--seconds", type=float, default=None, help="length of the fake load run")
    # internal: the server side, started by Server
    parser.add_argument("--serve", choices=("fake", "real"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=int, default=60, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_child(args.serve, args.folder, args.port, args.timeout)
        return
    clients = args.clients or 4
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    # the real run's request timeout bounds how long the last in-flight assessment may take
    real_clients, real_seconds, real_timeout = (2, 20.0, 90) if args.quick else (4, 120.0, 300)
    with tempfile.TemporaryDirectory() as folder:
        fake = fake_run(clients, seconds, 30 if args.quick else 100, Path(folder))
    worst = max(
        (fake["overhead"][kind] for kind in ("chat", "assess")), key=lambda f: f["overhead_p50_ms"]
    )
    fl = fake["load"]
    print(f"fake models: overhead p50 chat {fake['overhead']['chat']['overhead_p50_ms']} ms, "
          f"assess {fake['overhead']['assess']['overhead_p50_ms']} ms (GET /healthz round trip "
          f"{fake['overhead']['healthz']['http_p50_ms']} ms); load with {clients} "
          f"clients: {fl['requests_per_s']} req/s, p50 {fl['p50_ms']} / p95 {fl['p95_ms']} / "
          f"p99 {fl['p99_ms']} ms, {fl['errors']} errors, RSS {fl['rss_start_mb']} -> "
          f"{fl['rss_end_mb']} MB")  # fmt: skip
    print(json.dumps({"fake": fake}, indent=2))

    if args.fake_only:
        real = {"skipped": "--fake-only"}
    else:
        with tempfile.TemporaryDirectory() as folder:
            real = real_run(real_clients, real_seconds, real_timeout, Path(folder))
    if "skipped" in real:
        print(f"real models: skipped ({real['skipped']})")
    else:
        print(f"real models with {real_clients} clients: {real['requests_per_s']} req/s, "
              f"p50 {real['p50_ms']} / p95 {real['p95_ms']} / p99 {real['p99_ms']} ms, "
              f"{real['errors']} errors, RSS growth {real['rss_growth_pct']} %")  # fmt: skip
        print(json.dumps({"real": real}, indent=2))

    print(json.dumps({
        "errors": fl["errors"] + real.get("errors", 0),
        "p95_ms": fl["p95_ms"],
        "overhead_p50_ms": worst["overhead_p50_ms"],
        "rss_growth_pct": fl["rss_growth_pct"],
        "requests_per_s": fl["requests_per_s"],
        "real_p95_ms": real.get("p95_ms"),
        "real_requests_per_s": real.get("requests_per_s"),
        "real_rss_growth_pct": real.get("rss_growth_pct"),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
