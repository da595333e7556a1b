"""Backpressure: one request uses a model (the text model: a batch of them) while at most
``max_waiting_requests`` wait; beyond that the API answers 503 ``server_overloaded`` with ``Retry-After`` at once, /readyz says so, and
/healthz answers while the model is busy, even on a server with few threads (gunicorn's gthread
worker serves every connection from a fixed pool of threads)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer

from agents.backends.base import Event, Usage
from agents.chat_model import LocalChatModel
from tests.agents.fakes import ScriptedBackend
from tests.api.conftest import jpeg

CHAT = {"model": "base", "messages": [{"role": "user", "content": "Hood bolt torque?"}]}


@dataclass
class BusyBackend(ScriptedBackend):
    """Answers "ok" to everything, one request at a time (like the transformers backend's
    lock), each only once the test sets ``go``."""

    go: threading.Event = field(default_factory=threading.Event)
    busy: threading.Event = field(default_factory=threading.Event)  # a request holds the model
    lock: threading.Lock = field(default_factory=threading.Lock)
    max_batch: int = 1  # the requests the text queue lets run at once

    def stream(self, request):
        with self.lock:
            self.requests.append(request)
            self.busy.set()
            assert self.go.wait(20), "the test never let the model answer"
            yield Event(text="ok")
            yield Event(finish_reason="stop", usage=Usage(1, 1))


def until(condition, timeout_s: float = 10.0) -> bool:
    """Whether ``condition()`` came true within ``timeout_s``."""
    done = threading.Event()
    deadline = threading.Timer(timeout_s, done.set)
    deadline.start()
    try:
        while not condition():
            if done.wait(0.01):
                return condition()
        return True
    finally:
        deadline.cancel()


def chat_in_background(app, pool: ThreadPoolExecutor, n: int) -> list:
    """``n`` chats, each from its own thread and test client: their futures."""
    return [pool.submit(lambda: app.test_client().post("/v1/chat/completions", json=CHAT))
            for _ in range(n)]  # fmt: skip


def test_a_full_queue_answers_503_at_once_and_readyz_says_so(make_app, context):
    backend = BusyBackend()
    context.llm = LocalChatModel(backend=backend)
    app = make_app(max_waiting_requests=2, max_batch_size=1)
    client = app.test_client()
    queue = app.extensions["tunegraph"].runtime.queues["text"]
    with ThreadPoolExecutor(3) as pool:
        try:
            running = chat_in_background(app, pool, 3)  # one uses the model, two wait
            assert until(lambda: queue.admitted == 3 and backend.busy.is_set())
            refused = client.post("/v1/chat/completions", json=CHAT)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "5"
            error = refused.get_json()["error"]
            assert error["code"] == "server_overloaded"
            assert "TUNEGRAPH_MAX_WAITING_REQUESTS" in error["message"]
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.headers["Retry-After"] == "5"
            assert ready.get_json()["error"]["code"] == "server_overloaded"
            assert client.get("/healthz").status_code == 200
        finally:
            backend.go.set()
        assert [f.result(20).status_code for f in running] == [200, 200, 200]
    assert len(backend.requests) == 3  # the refused one never reached the model
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["queues"]["text"] == {"running": 0, "waiting": 0, "max_waiting": 2}
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_readyz_reports_the_queue_depth(make_app, context):
    backend = BusyBackend()
    context.llm = LocalChatModel(backend=backend)
    app = make_app(max_waiting_requests=3, max_batch_size=1)
    queue = app.extensions["tunegraph"].runtime.queues["text"]
    with ThreadPoolExecutor(2) as pool:
        try:
            running = chat_in_background(app, pool, 2)
            assert until(lambda: queue.admitted == 2 and backend.busy.is_set())
            ready = app.test_client().get("/readyz")
            assert ready.status_code == 200
            queues = ready.get_json()["queues"]
            assert queues["text"] == {"running": 1, "waiting": 1, "max_waiting": 3}
            assert queues["vision"] == {"running": 0, "waiting": 0, "max_waiting": 3}
        finally:
            backend.go.set()
        assert [f.result(20).status_code for f in running] == [200, 200]


def test_the_text_model_runs_a_batch_while_the_others_wait(make_app, context):
    backend = BusyBackend(max_batch=3)
    context.llm = LocalChatModel(backend=backend)
    app = make_app(max_waiting_requests=1, max_batch_size=3)
    client = app.test_client()
    queue = app.extensions["tunegraph"].runtime.queues["text"]
    with ThreadPoolExecutor(4) as pool:
        try:
            running = chat_in_background(app, pool, 4)  # a batch of three, one waits
            assert until(lambda: queue.admitted == 4 and backend.busy.is_set())
            assert queue.describe() == {"running": 3, "waiting": 1, "max_waiting": 1}
            assert client.get("/readyz").status_code == 503
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 503
        finally:
            backend.go.set()
        assert [f.result(20).status_code for f in running] == [200] * 4


def test_a_stream_holds_its_place_until_it_ends_or_closes(make_app, context):
    backend = BusyBackend()
    backend.go.set()
    context.llm = LocalChatModel(backend=backend)
    app = make_app(max_waiting_requests=1, max_batch_size=1)
    client = app.test_client()
    streams = FlaskClient(app, app.response_class)  # reads a body only when asked to
    stream = {**CHAT, "stream": True}
    # an unread stream holds the place in the model; the next one waits for it
    holder = streams.post("/v1/chat/completions", json=stream, buffered=False)
    assert holder.status_code == 200

    first = streams.post("/v1/chat/completions", json=stream, buffered=False)
    assert first.status_code == 200
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 503
    assert first.get_data(as_text=True).endswith("data: [DONE]\n\n")
    first.close()
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200

    # a client that goes away before reading gives the place back too
    unread = streams.post("/v1/chat/completions", json=stream, buffered=False)
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 503
    unread.close()
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    holder.close()
    assert app.extensions["tunegraph"].runtime.queues["text"].admitted == 0


def test_an_agentic_assessment_waits_in_the_text_models_queue(make_app, context):
    backend = BusyBackend()
    context.llm = LocalChatModel(backend=backend)
    app = make_app(max_waiting_requests=1, max_batch_size=1)
    client = app.test_client()
    queues = app.extensions["tunegraph"].runtime.queues
    with ThreadPoolExecutor(2) as pool:
        try:
            running = chat_in_background(app, pool, 2)  # one uses the model, one waits
            assert until(lambda: queues["text"].admitted == 2 and backend.busy.is_set())
            for approach, status, code in (
                ("agentic", 503, "server_overloaded"),
                ("both", 503, "server_overloaded"),
                ("finetuned", 503, "model_not_trained"),  # another model's queue: not full
            ):
                response = client.post(
                    "/v1/assessments",
                    data={"images": [(io.BytesIO(jpeg()), "hood.jpg")], "approach": approach},
                    content_type="multipart/form-data",
                )
                assert response.status_code == status, approach
                assert response.get_json()["error"]["code"] == code, approach
        finally:
            backend.go.set()
        assert [f.result(20).status_code for f in running] == [200, 200]
    assert len(backend.requests) == 2
    assert (queues["text"].admitted, queues["vision"].admitted) == (0, 0)


class PooledServer(BaseWSGIServer):
    """A WSGI server that serves connections from a fixed pool of threads, as gunicorn's
    gthread worker does: when all are busy, a new connection waits for one."""

    def __init__(self, app, threads: int) -> None:
        super().__init__("127.0.0.1", 0, app)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="pooled-server")

    def process_request(self, request, client_address) -> None:
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


@contextmanager
def pooled(app, threads: int) -> Iterator[str]:
    server = PooledServer(app, threads)
    thread = threading.Thread(target=server.serve_forever, name="pooled-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.pool.shutdown(wait=False, cancel_futures=True)
        thread.join(5)


def test_healthz_answers_while_the_model_is_busy_on_a_server_with_four_threads(make_app, context):
    backend = BusyBackend()
    context.llm = LocalChatModel(backend=backend)
    # 1 + 2 threads may be taken by the model's queue
    app = make_app(max_waiting_requests=2, max_batch_size=1)
    answered: list[int] = []

    def post(url: str) -> None:
        response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30)
        answered.append(response.status_code)

    with pooled(app, threads=4) as url, ThreadPoolExecutor(8) as clients:
        try:
            for _ in range(8):
                clients.submit(post, url)
            # the five beyond the queue are refused at once, which frees their threads
            assert until(lambda: answered.count(503) == 5), answered
            health = httpx.get(f"{url}/healthz", timeout=5)
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            assert not backend.go.is_set() and backend.busy.is_set()  # still generating
        finally:
            backend.go.set()
    assert sorted(answered) == [200, 200, 200, 503, 503, 503, 503, 503]


def test_serve_refuses_too_few_threads_for_healthz_beside_full_queues(tmp_path):
    from click.testing import CliRunner

    from api.cli.main import main

    runner = CliRunner(env={"TUNEGRAPH_HOME": str(tmp_path), "TUNEGRAPH_MAX_WAITING_REQUESTS": "2"})
    result = runner.invoke(main, ["serve", "--threads", "6"])
    assert result.exit_code == 2
    assert "--threads 6 leaves no thread for /healthz" in result.output
    assert "use --threads 11 or more" in result.output  # 4 in a batch + 1 + 2 x 2 waiting
    zero = CliRunner(env={"TUNEGRAPH_MAX_WAITING_REQUESTS": "-1"}).invoke(main, ["serve"])
    assert zero.exit_code == 2 and "use 0 (no request waits) or more" in zero.output
