"""The child-process runner that jobs and the demo's side-by-side training share."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from api.jobs.child import ChildFailed, ChildProcess, ChildStopped, ReportingBar

HERE = "tests.api.test_jobs_child:"


# ---- worker functions run in the children below ------------------------------------------------


def chatty(params, progress, log):
    with progress(total=params["n"], unit="step") as bar:
        for i in range(params["n"]):
            log(f"line {i} " + "x" * 200)
            bar.update(1)
    return {"lines": params["n"]}


def raises(params, progress, log):
    raise ValueError("bad input: name the file")


def with_grandchild(params, progress, log):
    # a grandchild that inherits the pipes, as a tool a library runs might
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    log("started")
    time.sleep(60)


# ---- the runner ----------------------------------------------------------------------------------


def test_the_result_progress_and_log_lines_come_back():
    lines, fractions = [], []
    child = ChildProcess(
        HERE + "chatty", {"n": 50}, on_log=lines.append,
        on_progress=lambda event: fractions.append(event.fraction),
    )  # fmt: skip
    assert child.wait() == {"lines": 50}
    assert len(lines) == 50 and lines[0].startswith("line 0 ")
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_a_callback_that_raises_neither_hangs_the_child_nor_loses_its_result():
    def failing(_value):
        raise RuntimeError("database is locked")

    # 2,000 lines of 200 characters fill the pipe many times over
    child = ChildProcess(HERE + "chatty", {"n": 2000}, on_log=failing, on_progress=failing)
    done = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: (result.update(child.wait()), done.set()))
    thread.start()
    assert done.wait(60), "the child blocked on a pipe nobody read"
    assert result == {"lines": 2000}


def test_an_error_is_reported_with_its_type_and_message_and_no_traceback():
    lines: list[str] = []
    with pytest.raises(ChildFailed, match="ValueError: bad input: name the file") as failed:
        ChildProcess(HERE + "raises", {}, on_log=lines.append).wait()
    assert failed.value.code == 1
    assert not any("Traceback" in line for line in lines)


def test_cancel_ends_the_child_and_what_it_started():
    started = threading.Event()
    child = ChildProcess(HERE + "with_grandchild", {}, on_log=lambda _line: started.set())
    cancel = threading.Event()
    outcome = []

    def run():
        try:
            child.wait(cancel)
        except ChildStopped:
            outcome.append("stopped")

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(30)
    began = time.perf_counter()
    cancel.set()
    thread.join(30)
    assert outcome == ["stopped"] and time.perf_counter() - began < 20


def test_the_training_loop_reports_through_the_childs_progress_bars(tmp_path):
    """The bar a job follows for fine-tuning is the training loop's `step` bar (the loop also
    calls set_postfix on it, which tqdm has and the child's bar must accept)."""
    import torch

    from finetune.trainer import TrainArgs, train_loop

    sent: list[dict] = []
    model = torch.nn.Linear(2, 1)

    def step(groups):
        loss = model(torch.ones(len(groups[0]), 2)).pow(2).mean()
        loss.backward()
        return loss.item(), len(groups[0])

    train_loop(
        TrainArgs(epochs=1, batch_size=2, save_every=100, log_every=1),
        model, 6, step, lambda: {"eval_loss": 0.0}, tmp_path,
        progress=lambda *a, **k: ReportingBar(sent.append, *a, **k),
    )  # fmt: skip
    steps = [m["progress"] for m in sent if m["progress"]["unit"] == "step"]
    assert steps[-1]["n"] == steps[-1]["total"] == 3
