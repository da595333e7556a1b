"""The demo's second process: vision training beside the text model."""

import os
import time
from pathlib import Path

import pytest

from api.cli.demo import (
    PROFILE_NAMES,
    VISION_STAGE,
    DemoProfile,
    last_lines,
    load_profile,
    reads_damage_model,
    torch_threads_set,
    vision_params,
)
from api.jobs.child import ChildChain

STAGES = "tests.api.test_demo_chain:"


# ---- worker functions the chains below run in their child processes ---------------------------


def report_threads(params, progress, log):
    log(f"threads {os.environ['OMP_NUM_THREADS']}")
    return {"threads": int(os.environ["OMP_NUM_THREADS"])}


def count(params, progress, log):
    with progress(total=2, desc="step", unit="step") as bar:
        bar.update(1)
        bar.update(1)
    log("done")
    return {"steps": 2}


def fail(params, progress, log):
    log("no encoder")
    raise ValueError("no encoder in the vision folder")


def sleep(params, progress, log):
    time.sleep(60)


# ---- the chain ---------------------------------------------------------------------------------


def test_the_chain_runs_in_order_with_its_thread_count_and_logs(tmp_path):
    side = ChildChain(
        [("first", STAGES + "report_threads", {}), ("second", STAGES + "count", {})],
        tmp_path,
        threads=1,
    )
    side.start()
    seen: list[str] = []
    side.wait(seen.append, every=0.05)
    assert side.failed is None
    assert list(side.timings) == ["first", "second"]
    assert side.results == {"first": {"threads": 1}, "second": {"steps": 2}}
    assert last_lines(tmp_path / "first.log", 1) == ["threads 1"]
    assert last_lines(tmp_path / "second.log", 2) == ["step: 2/2 step", "done"]


def test_a_failing_stage_stops_the_chain_and_names_its_log(tmp_path):
    side = ChildChain(
        [("bad", STAGES + "fail", {}), ("never", STAGES + "count", {})],
        tmp_path,
        threads=1,
    )
    side.start()
    side.wait()
    assert side.failed == ("bad", tmp_path / "bad.log")
    assert last_lines(tmp_path / "bad.log", 2) == [
        "no encoder",
        "failed: ValueError: no encoder in the vision folder",
    ]
    assert not (tmp_path / "never.log").exists()


def test_stop_ends_the_running_child(tmp_path):
    side = ChildChain([("slow", STAGES + "sleep", {})], tmp_path, threads=1)
    started = time.perf_counter()
    side.start()
    while side.current is None:
        time.sleep(0.01)
    side.stop()
    assert time.perf_counter() - started < 30
    assert side.timings["slow"] < 30 and side.failed == ("slow", tmp_path / "slow.log")


def test_the_vision_stages_are_the_finetune_vision_job_from_scratch():
    assert VISION_STAGE == "api.jobs.worker:finetune_vision"
    params = vision_params("vision/damage_quick.yaml", ("train.epochs=1",))
    assert params["resume"] is False and params["overrides"] == ["train.epochs=1"]
    assert params["config"].endswith("configs/vision/damage_quick.yaml")
    assert load_profile("quick").side_by_side and not load_profile("full").side_by_side
    # the quick VLM trains its own encoder: its damage model may train after the text model
    assert not reads_damage_model(load_profile("quick"))
    assert reads_damage_model(load_profile("full"))


def test_every_demo_profile_is_a_yaml_file_with_known_keys(tmp_path):
    configs = Path(__file__).resolve().parents[2] / "configs" / "demo"
    shipped = {p.stem for p in configs.glob("*.yaml")} - {"corpus"}
    assert shipped == set(PROFILE_NAMES)
    smoke = load_profile("smoke")
    assert smoke.text == ("train.epochs=1", "train.max_steps=4", "data.spec_paraphrases=0")
    assert smoke.corpus == {"n_claims": 300, "n_images": 240, "n_scanned_pages": 2}
    assert (smoke.images, smoke.questions, smoke.max_tokens) == (2, 1, 32)
    assert load_profile("full").max_tokens is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("text_config: a\ndamage_config: b\nvlm_config: c\nimagez: 3\n")
    with pytest.raises(Exception, match="unknown key"):
        DemoProfile.from_yaml(bad)


def test_torch_threads_come_back_after_the_block():
    import torch

    before = torch.get_num_threads()
    with torch_threads_set(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
