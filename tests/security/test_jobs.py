"""Issue 28's findings about jobs, one test each: every one failed on the code before the fix.

Jobs read only their owner's uploads, the data root and TUNEGRAPH_INPUT_ROOTS; write only under
the data root; belong to the key that created them; fine-tune over HTTP to the end; see an index
ingested while the server runs; and never outlive a killed server process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agents.context import AgentContext, MissingDependencyError
from api.jobs.confine import Roots
from api.server.app import create_app
from api.server.protection import key_id
from tests.api.conftest import checked

KEYS = {"one": "k-one", "two": "k-two", "admin": "k-admin"}


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


@pytest.fixture
def secret(tmp_path) -> Path:
    """A folder outside the data root with a file nobody may read through the API."""
    folder = tmp_path / "secret"
    folder.mkdir()
    (folder / "notes.md").write_text("# Secrets\n\nThe vault code is 7731.\n")
    (folder / "claims.csv").write_text("claim_id,vin\nC-1,VIN1\nC-2,VIN2\n")
    return folder


@pytest.fixture
def keyed(settings, context):
    """The real job kinds behind two keys and an admin key."""
    app = create_app(
        {"TESTING": True},
        settings=settings.replace(api_keys=(KEYS["one"], KEYS["two"]), admin_keys=(KEYS["admin"],)),
        context_factory=lambda _: context,
    )
    yield checked(app).test_client()
    app.extensions["tunegraph"].jobs.shutdown()


def submit(client, who: str, kind: str, **params):
    return client.post("/v1/jobs", json={"kind": kind, "params": params}, headers=auth(who))


def wait(client, who: str, job_id: str, timeout_s: float) -> dict:
    """The job once it has succeeded or failed (asked with ``who``'s key)."""
    deadline = time.monotonic() + timeout_s
    while (job := client.get(f"/v1/jobs/{job_id}", headers=auth(who)).get_json())["state"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def upload(client, who: str, files: dict[str, bytes], folder: str = ""):
    data = {"file": [(_bytes(content), name) for name, content in files.items()]}
    if folder:
        data["folder"] = folder
    return client.post(
        "/v1/files", data=data, headers=auth(who), content_type="multipart/form-data"
    )


def _bytes(content: bytes):
    import io

    return io.BytesIO(content)


def test_no_job_reads_or_writes_outside_the_data_root(keyed, secret):
    """Finding 1: ingest-manuals indexed a folder outside the data root; ingest-claims,
    ingest-coco, finetune-text and compare opened /etc/passwd; name=/tmp/anywhere wrote there."""
    cases = [
        ("ingest-manuals", {"paths": [str(secret)]}),
        ("ingest-manuals", {"paths": ["../../../secret"]}),
        ("ingest-claims", {"file": "/etc/passwd"}),
        ("ingest-claims", {"file": str(secret / "claims.csv")}),
        ("ingest-coco", {"annotations": "/etc/passwd"}),
        ("ingest-coco", {"annotations": "a.json", "images": str(secret)}),
        ("finetune-text", {"config": "/etc/passwd"}),
        ("finetune-text", {"overrides": ["data.train_file=/etc/passwd"]}),
        ("finetune-text", {"overrides": ["base_model=/etc"]}),
        ("finetune-text", {"overrides": ["base_model=~root/models"]}),
        ("ingest-coco", {"annotations": "~nosuchuser/x.json"}),
        ("finetune-text", {"overrides": ["data.blocks_file=../../../secret/notes.md"]}),
        ("finetune-vision", {"train": "/etc/passwd"}),
        ("compare", {"prices": "/etc/passwd"}),
        # the data root holds other keys' uploads and reports, the models and the database:
        # only its demo corpus and ingested datasets are shared inputs
        ("ingest-manuals", {"paths": ["../.."]}),
        ("ingest-manuals", {"paths": [".."]}),
        ("ingest-coco", {"annotations": "a.json", "images": "../../runs"}),
        ("ingest-claims", {"file": "../../tunegraph.db"}),
    ]
    for kind, params in cases:
        response = submit(keyed, "one", kind, **params)
        assert response.status_code == 400, (kind, params)
        message = response.get_json()["error"]["message"]
        assert "outside the folders jobs may read" in message, message
        # nothing about the file: not whether it exists, not its size or lines
        assert "line" not in message and "exist" not in message and "root:" not in message
    for kind, params, wanted in [
        ("finetune-text", {"overrides": ["name=/tmp/anywhere"]}, "is not a plain name"),
        ("finetune-text", {"overrides": ["name=../x"]}, "is not a plain name"),
        ("finetune-vision", {"out": "/tmp/anywhere"}, "is not a plain name"),
        ("finetune-vision", {"out": "../../x"}, "is not a plain name"),
        ("finetune-vision", {"out": ".."}, "is not a plain name"),  # the data root itself
        ("finetune-vision", {"out": "."}, "is not a plain name"),  # every vision model
        ("ingest-manuals", {"paths": ["\ud800"]}, "is not a usable file or folder name"),
    ]:
        response = submit(keyed, "one", kind, **params)
        assert response.status_code == 400 and wanted in response.get_json()["error"]["message"]
    assert keyed.get("/v1/jobs", headers=auth("admin")).get_json()["data"] == []


def test_a_config_file_cannot_lead_a_job_outside_either(keyed, secret):
    """A YAML config the caller uploads may name files too: the job checks the loaded config
    in its worker before it reads any of them."""
    config = f"data:\n  source: jsonl\n  train_file: {secret / 'notes.md'}\n".encode()
    assert upload(keyed, "one", {"evil.yaml": config}).status_code == 201
    job = submit(keyed, "one", "finetune-text", config="evil.yaml").get_json()
    job = wait(keyed, "one", job["id"], timeout_s=120)
    assert job["state"] == "failed"
    assert "outside the folders jobs may read" in job["error"]
    assert "vault" not in json.dumps(job)


def test_jobs_belong_to_the_key_that_created_them(make_app, fake_compare):
    """Finding 2: a second key listed, read and cancelled the first key's job."""
    app = make_app(
        kinds={"compare": fake_compare},
        api_keys=(KEYS["one"], KEYS["two"]),
        admin_keys=(KEYS["admin"],),
    )
    client = app.test_client()
    done = submit(client, "one", "compare", name="mine").get_json()
    url = f"/v1/jobs/{done['id']}"
    assert wait(client, "one", done["id"], timeout_s=10)["state"] == "succeeded"
    held = submit(client, "one", "release").get_json()  # runs until cancelled
    for path in (f"/v1/jobs/{held['id']}", url, url + "/report"):
        response = client.get(path, headers=auth("two"))
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "job_not_found"
    assert client.delete(f"/v1/jobs/{held['id']}", headers=auth("two")).status_code == 404
    assert client.get("/v1/jobs", headers=auth("two")).get_json()["data"] == []
    # the owner and the admin see both; the stored owner is a key id, never the key
    for who in ("one", "admin"):
        listed = client.get("/v1/jobs", headers=auth(who)).get_json()["data"]
        assert {j["id"] for j in listed} == {held["id"], done["id"]}
        assert "k-one" not in json.dumps(listed) and "owner" not in listed[0]
    assert client.get(url + "/report", headers=auth("one")).status_code == 200
    assert client.delete(f"/v1/jobs/{held['id']}", headers=auth("admin")).status_code == 202
    store = app.extensions["tunegraph"].jobs.store
    assert store.get(done["id"]).owner not in KEYS.values()


def test_uploads_are_a_keys_own_and_its_jobs_read_them(keyed, settings):
    manual = b"# Brakes\n\n## Specifications\n\nCaliper bolt torque: 31 Nm\n"
    response = upload(keyed, "one", {"brakes.md": manual}, folder="manuals")
    assert response.status_code == 201
    assert response.get_json()["data"] == [
        {"object": "file", "path": "manuals/brakes.md", "bytes": len(manual)}
    ]
    assert [f["path"] for f in keyed.get("/v1/files", headers=auth("one")).get_json()["data"]] == [
        "manuals/brakes.md"
    ]
    assert keyed.get("/v1/files", headers=auth("two")).get_json()["data"] == []
    # the owner's job finds it by that path; the other key's job does not find it at all
    ok = submit(keyed, "one", "ingest-manuals", paths=["manuals"], namespace="mine")
    assert ok.status_code == 202
    theirs = submit(keyed, "two", "ingest-manuals", paths=["manuals"])
    assert theirs.status_code == 400 and "no such file or folder manuals" in theirs.text
    stored = next((settings.home / "uploads").glob("*/manuals/brakes.md"))
    other = submit(keyed, "two", "ingest-manuals", paths=[str(stored)])
    assert other.status_code == 400 and "outside the folders jobs may read" in other.text
    for files, folder, wanted in [
        ({}, "", "missing_file"),
        ({"a.md": b"x"}, "../up", "invalid_value"),
        ({"..": b"x"}, "", "invalid_value"),
    ]:
        response = upload(keyed, "one", files, folder)
        assert response.status_code == 400 and response.get_json()["error"]["code"] == wanted


def test_input_roots_open_server_folders_to_jobs(settings, secret):
    roots = Roots.of(settings.replace(input_roots=(str(secret),)), "local")
    assert roots.readable(str(secret / "notes.md"), "paths") == secret / "notes.md"
    with pytest.raises(ValueError, match="TUNEGRAPH_INPUT_ROOTS"):
        roots.readable("/etc/passwd", "paths")


@pytest.mark.real_model
def test_a_fine_tune_job_over_http_runs_to_completion(keyed, settings, model_store):
    """Finding 5: a fine-tune job always failed (its progress bar lacked set_postfix)."""
    from tests.finetune.test_text_lora import save_tiny_model

    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    owner = Roots.of(settings, key_id(KEYS["one"])).uploads
    save_tiny_model(tokenizer, owner / "tiny")  # as if uploaded: a local base model
    rows = [
        {"messages": [{"role": "user", "content": f"[SPEC] Torque {i}?"},
                      {"role": "assistant", "content": f"{10 + i} Nm"}]}
        for i in range(8)
    ]  # fmt: skip
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    assert upload(keyed, "one", {"train.jsonl": data}, folder="data").status_code == 201
    overrides = [
        "base_model=tiny", "name=tiny-lora", "data.source=jsonl",
        "data.train_file=data/train.jsonl", "data.spec_paraphrases=0", "lora.last_layers=2",
        "train.epochs=1", "train.batch_size=4", "train.log_every=1", "train.precision=fp32",
    ]  # fmt: skip
    job = submit(keyed, "one", "finetune-text", overrides=overrides).get_json()
    job = wait(keyed, "one", job["id"], timeout_s=240)
    assert job["state"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["result"]["steps"] >= 1
    assert (settings.home / "adapters" / "tiny-lora" / "adapter_model.safetensors").is_file()


def test_an_index_ingested_while_the_server_runs_is_used_without_a_restart(tmp_path):
    """Finding 5: the context left out an index that was empty when the models loaded, so
    the running server never used one ingested later."""
    from rag.stores.base import Document
    from rag.stores.lancedb import LanceDBStore

    store = LanceDBStore(tmp_path / "index", "manuals", 4)
    context = AgentContext(manuals=SimpleNamespace(store=store))
    assert not context.available("manuals")
    with pytest.raises(MissingDependencyError, match="manuals"):
        context.require("service chat", "manuals")
    with store.transaction():  # what an ingest job does, in another process
        store.upsert([Document("b1", "Caliper bolt torque: 31 Nm", {})], np.ones((1, 4)))
    assert context.available("manuals")
    context.require("service chat", "manuals")


def sleeper(params, progress, log):
    """A job's work that outlives any test: writes its pid, then waits."""
    Path(params["pid_file"]).write_text(str(os.getpid()))
    time.sleep(120)
    return {}


def test_a_killed_server_leaves_no_job_process_behind(tmp_path):
    """Finding 6: a worker killed with SIGKILL left its job's child process running."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys; from api.jobs.child import ChildProcess\n"
            f"c = ChildProcess('tests.security.test_jobs:sleeper', {{'pid_file': {str(pid_file)!r}}})\n"
            "c.start(); c.wait()\n"
        )],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while _alive(child):
        assert time.monotonic() < deadline, f"job process {child} outlived its server"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by init) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def compare_with_fakes(params, progress, log):
    """The compare job's worker function on the fake models of tests/api/test_compare.py."""
    from api.jobs.worker import compare
    from tests.api.test_compare import fake_context

    return compare(params, progress, log, context_factory=fake_context)


def test_a_compare_job_over_http_runs_to_completion(make_app, settings, monkeypatch):
    """Finding 5's other half: a compare job, submitted over HTTP, runs the real worker in a
    child process to its end and its report downloads (the models are fakes: the real ones
    would need a trained demo)."""
    from api.jobs.kinds import WorkerJob
    from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus

    generate_demo_corpus(
        settings.demo_dir,
        DemoCorpusConfig(seed=3, n_claims=60, n_images=24, n_scanned_pages=0, test_fraction=0.4),
    )
    root = str(Path(__file__).resolve().parents[2])  # the child imports this module
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    job = WorkerJob("compare", settings, function="tests.security.test_jobs:compare_with_fakes")
    client = make_app(kinds={"compare": job}).test_client()
    response = client.post(
        "/v1/jobs",
        json={"kind": "compare", "params": {"name": "http", "images": 2, "questions": 1}},
    )
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    deadline = time.monotonic() + 120
    while (job := client.get(f"/v1/jobs/{job_id}").get_json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["state"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["result"]["photos"] == 2
    report = client.get(f"/v1/jobs/{job_id}/report")
    assert report.status_code == 200 and b"tunegraph compare" in report.data


def test_the_demo_corpus_and_ingested_datasets_are_shared_inputs(settings):
    roots = Roots.of(settings, "someone")
    home = settings.home.resolve()
    for shared in ("demo/manual", "datasets/api-test.jsonl"):
        assert roots.readable(str(home / shared), "paths") == home / shared
    with pytest.raises(ValueError, match="outside the folders jobs may read"):
        roots.readable(str(home / "uploads" / "someone-else" / "a.md"), "paths")


def test_uploads_never_replace_a_folder_or_go_through_a_file(keyed):
    assert upload(keyed, "one", {"a": b"x"}).status_code == 201
    through = upload(keyed, "one", {"b.md": b"x"}, folder="a")
    assert through.status_code == 409 and "folder 'a' is an uploaded file" in through.text
    assert upload(keyed, "one", {"c.md": b"x"}, folder="d").status_code == 201
    onto = upload(keyed, "one", {"d": b"x"})
    assert onto.status_code == 409 and "'d' is a folder of uploads" in onto.text
    twice = keyed.post(
        "/v1/files",
        data={"file": [(_bytes(b"1"), "e.md"), (_bytes(b"2"), "e.md")]},
        headers=auth("one"),
        content_type="multipart/form-data",
    )
    assert twice.status_code == 400 and "two files are named 'e.md'" in twice.text


def test_input_roots_may_not_hold_the_data_root(tmp_path):
    from api.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="holds or lies in the data root"):
        Settings(home=tmp_path / "home", input_roots=(str(tmp_path),))


OLD_TABLE = (
    "CREATE TABLE jobs (id VARCHAR(40) PRIMARY KEY, kind VARCHAR(64), state VARCHAR(16),"
    " params TEXT, progress FLOAT, log TEXT, result TEXT, error TEXT,"
    " cancel_requested BOOLEAN, created_at FLOAT, started_at FLOAT, finished_at FLOAT)"
)


def test_an_old_jobs_table_is_upgraded_once_when_processes_open_it_together(tmp_path):
    """The table from before owners (and before migrations), opened by four processes at once
    (an API and workers starting together): each sees it upgraded, none fails, no job is lost."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(OLD_TABLE)
        db.execute(
            "INSERT INTO jobs VALUES ('job_1', 'count', 'succeeded', '{}', 1.0, '[]', NULL, NULL,"
            " 0, 1.0, 1.0, 2.0)"
        )
    code = (
        "import sys; from api.jobs.store import JobStore\n"
        f"store = JobStore('sqlite:///{path}', interrupt_leftovers=False)\n"
        "print(store.get('job_1').owner)\n"
    )
    root = Path(__file__).resolve().parents[2]
    processes = [
        subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4
    assert outputs == ["local\n"] * 4
    with sqlite3.connect(path) as db:
        indexes = {row[1] for row in db.execute("PRAGMA index_list('jobs')")}
        columns = {row[1] for row in db.execute("PRAGMA table_info('jobs')")}
        version = db.execute("SELECT version_num FROM tunegraph_jobs_version").fetchall()
    assert "ix_jobs_owner" in indexes and {"owner", "heartbeat_at"} <= columns
    assert version == [("0002",)]


def test_compare_reports_of_two_keys_never_replace_each_other(make_app, settings, monkeypatch):
    from api.jobs.kinds import WorkerJob
    from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus

    generate_demo_corpus(
        settings.demo_dir,
        DemoCorpusConfig(seed=3, n_claims=60, n_images=24, n_scanned_pages=0, test_fraction=0.4),
    )
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PYTHONPATH", root)
    kind = WorkerJob("compare", settings, function="tests.security.test_jobs:compare_with_fakes")
    client = make_app(kinds={"compare": kind}, api_keys=(KEYS["one"], KEYS["two"])).test_client()
    ids = {}
    for who in ("one", "two"):  # the same name, one after the other
        ids[who] = submit(client, who, "compare", name="same", images=2, questions=0).get_json()[
            "id"
        ]
        assert wait(client, who, ids[who], timeout_s=120)["state"] == "succeeded"
    for who in ("one", "two"):
        report = client.get(f"/v1/jobs/{ids[who]}/report", headers=auth(who))
        assert report.status_code == 200, report.text


def test_a_config_parameter_names_a_shipped_config_or_else_an_upload(settings):
    from finetune.config import shipped_config

    roots = Roots.of(settings, "someone")
    name = "configs/text/smollm2_quick.yaml"
    assert roots.config_file(name, "config") == shipped_config(name)
    # not shipped (or leaving the shipped folder): the owner's upload of that path, if any
    for raw, upload in [
        ("configs/mine.yaml", "configs/mine.yaml"),
        ("configs/../pyproject.toml", "pyproject.toml"),
    ]:
        assert roots.config_file(raw, "config") == roots.uploads.resolve() / upload
    with pytest.raises(ValueError, match="outside the folders jobs may read"):
        roots.config_file("configs/../../../../../etc/passwd", "config")
