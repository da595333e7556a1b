"""The demo's second process: vision training beside the text model."""

import sys
import time

from api.cli.demo import PROFILES, SideProcess, _vision_command, last_lines, torch_threads_set


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_chain_runs_in_order_with_its_thread_count_and_logs(tmp_path):
    side = SideProcess(
        [
            ("first", _python("import os; print('threads', os.environ['OMP_NUM_THREADS'])")),
            ("second", _python("import sys; print('step 1/2', end='\\r'); print('done')")),
        ],
        tmp_path,
        threads=1,
    )
    side.start()
    seen: list[str] = []
    side.wait(seen.append, every=0.05)
    assert side.failed is None
    assert list(side.timings) == ["first", "second"]
    assert last_lines(tmp_path / "first.log", 1) == ["threads 1"]
    assert last_lines(tmp_path / "second.log", 2) == ["step 1/2", "done"]


def test_a_failing_stage_stops_the_chain_and_names_its_log(tmp_path):
    side = SideProcess(
        [
            ("bad", _python("import sys; print('no encoder'); sys.exit(2)")),
            ("never", _python("print('ran')")),
        ],
        tmp_path,
        threads=1,
    )
    side.start()
    side.wait()
    assert side.failed == ("bad", tmp_path / "bad.log")
    assert last_lines(tmp_path / "bad.log", 1) == ["no encoder"]
    assert not (tmp_path / "never.log").exists()


def test_stop_ends_the_running_child(tmp_path):
    side = SideProcess([("slow", _python("import time; time.sleep(60)"))], tmp_path, threads=1)
    started = time.perf_counter()
    side.start()
    while side.current is None:
        time.sleep(0.01)
    side.stop()
    assert time.perf_counter() - started < 30
    assert side.timings["slow"] < 30 and side.failed == ("slow", tmp_path / "slow.log")


def test_the_vision_stages_are_the_cli_commands_from_scratch():
    command = _vision_command("vision/damage_quick.yaml", ("train.epochs=1",))
    assert command[:5] == [sys.executable, "-m", "api.cli.main", "finetune", "vision"]
    assert command[-2:] == ["--no-resume", "train.epochs=1"]
    assert command[command.index("--config") + 1].endswith("configs/vision/damage_quick.yaml")
    assert PROFILES["quick"].side_by_side and not PROFILES["full"].side_by_side


def test_torch_threads_come_back_after_the_block():
    import torch

    before = torch.get_num_threads()
    with torch_threads_set(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
