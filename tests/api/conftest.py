"""An app over fakes: the agents' fake chat model, damage model and retrievers, the small
claims database, and fake job kinds; settings under a temp home with small limits."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.serving import make_server

from agents.context import AgentContext
from api.jobs.manager import JobCancelled
from api.server.app import create_app
from api.settings import Settings
from rag.stores.base import Hit
from tests.agents.conftest import DAMAGE, MANUAL, PHOTOS, claims_db  # noqa: F401
from tests.agents.fakes import FakeDamageModel, FakeRetriever, fake_llm, report_json


def jpeg(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (seed % 255, 80, 120)).save(buffer, "JPEG")
    return buffer.getvalue()


class CheckedClient(FlaskClient):
    """A test client that checks every response: no traceback anywhere, and every 4xx/5xx
    exactly OpenAI's error envelope."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        assert "Traceback" not in response.get_data(as_text=True)
        if response.status_code >= 400:
            body = response.get_json()
            assert set(body) == {"error"}
            assert set(body["error"]) == {"type", "message", "param", "code"}
        return response


def checked(app):
    app.test_client_class = CheckedClient
    return app


class Release:
    """A job kind that runs until the test releases or cancels it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, params, progress, log, cancel):
        progress(0.5)
        log("waiting")
        self.started.set()
        while not self.release.wait(0.02):
            if cancel.is_set():
                log("stopping")
                raise JobCancelled
        return {"released": True}


def count_to(params, progress, log, cancel):
    n = params.get("n", 3)
    for i in range(1, n + 1):
        log(f"step {i}")
        progress(i / n)
    return {"counted": n}


def broken(params, progress, log, cancel):
    log("about to fail")
    raise OSError("disk full")


class FakeCompare:
    """A ``compare`` job kind that writes a small report to the settings' runs folder as
    ``tunegraph compare`` does, and returns its folder as ``out``. ``hold``: wait until the
    test sets ``release``; ``fail``: fail instead."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, params, progress, log, cancel):
        if params.get("hold"):
            self.started.set()
            while not self.release.wait(0.02):
                if cancel.is_set():
                    raise JobCancelled
        if params.get("fail"):
            raise RuntimeError("`tunegraph compare` exited with code 1: no demo corpus")
        name = params.get("name", "compare")
        out = self.settings.runs_dir / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(f"# tunegraph compare: {name}\n")
        (out / "report.html").write_text(f"<h1>tunegraph compare: {name}</h1>")
        (out / "report.json").write_text(json.dumps({"title": f"tunegraph compare: {name}"}))
        progress(1.0)
        return {"out": str(out), "photos": 2}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", rate_limit_per_minute=0, generation_timeout_s=10)


@pytest.fixture
def context(claims_db) -> AgentContext:  # noqa: F811
    return AgentContext(
        llm=fake_llm(),
        finetuned_adapter="ft",
        manuals=FakeRetriever(MANUAL),
        claims_db=claims_db,
        claims_index=FakeRetriever([Hit("C-2", "hood dent in a car park", 0.98, {})]),
        damage_model=FakeDamageModel([DAMAGE]),
        open_photo=lambda path: PHOTOS[path],
    )


@pytest.fixture
def release() -> Release:
    return Release()


@pytest.fixture
def make_app(settings, context, release):
    """``make_app(kinds=None, **setting_changes)``: a new app on the same home and database;
    ``kinds``: job kinds beside count, release and broken."""
    apps = []

    def make(kinds=None, **changes):
        app = create_app(
            {"TESTING": True},
            settings=settings.replace(**changes),
            context_factory=lambda _settings: context,
            job_kinds={"count": count_to, "release": release, "broken": broken, **(kinds or {})},
        )
        apps.append(checked(app))
        return app

    yield make
    release.release.set()
    for app in apps:
        app.extensions["tunegraph"].jobs.shutdown()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def fake_compare(settings) -> FakeCompare:
    return FakeCompare(settings)


@pytest.fixture
def compare_app(make_app, fake_compare):
    """The app with a fake ``compare`` job kind beside the others."""
    return make_app(kinds={"compare": fake_compare})


@pytest.fixture
def client(app):
    return app.test_client()


def wait_for(client, job_id: str, *states: str, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").get_json()
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def report(cited=("blk-hood-dent",)) -> str:
    return report_json(cited=list(cited))


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` on a real HTTP server (werkzeug, threaded) on a free loopback port: its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def live(app) -> Iterator[str]:
    """The URL of the fake-model app served over HTTP."""
    with serving(app) as url:
        yield url
