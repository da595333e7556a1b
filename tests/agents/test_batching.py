"""The batcher's scheduling, on a fake engine whose logits say which row and step they are for:
who shares a batch, what each row gets back, and how waiting, stalled and failing rows end."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from agents.backends import batching
from agents.backends.base import DeadlineExceeded, GenerationError
from agents.backends.batching import Batcher, Row

VOCAB = 8


class FakeEngine:
    """Logits whose argmax is (the row's last token + 1) % VOCAB: a row's answer counts on from
    its prompt's last token, so a row that got another row's logits would show it. ``gate``
    holds each batch's prefill until the test opens it."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.fed: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()

    def start(self, rows, check):
        self.gate.wait()
        if len(rows) == 1:
            check()
        return FakeBatch(self), onehot([row.prompt[-1] + 1 for row in rows])


class FakeBatch:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def advance(self, tokens):
        self.engine.fed.append(list(tokens))
        if self.engine.fail_at is not None and len(self.engine.fed) >= self.engine.fail_at:
            raise RuntimeError("out of memory")
        return onehot([t + 1 for t in tokens])


def onehot(tokens):
    logits = np.zeros((len(tokens), VOCAB), dtype=np.float32)
    logits[np.arange(len(tokens)), [t % VOCAB for t in tokens]] = 1.0
    return logits


def decode(batcher: Batcher, prompt, steps, adapter=None, deadline=None, out=None):
    """A row's thread: join, then feed back the argmax ``steps`` times; its tokens."""
    row = Row(prompt, steps + 1, adapter, deadline, filler=0)
    tokens = []
    try:
        logits = batcher.join(row)
        for step in range(steps + 1):
            tokens.append(int(logits.argmax()))
            if step < steps:
                logits = row.step(tokens[-1])
    finally:
        row.leave()
    if out is not None:
        out.append((prompt[-1], tokens))
    return tokens


def together(batcher, jobs):
    """Run ``jobs`` (prompt, steps, adapter) in threads queued while the batcher is held, so
    the batches they form do not depend on timing; {last prompt token: tokens}."""
    out = []
    batcher.engine.gate.clear()
    blocker = threading.Thread(target=decode, args=(batcher, [0], 0))
    blocker.start()
    while not batcher.batches:
        time.sleep(0.001)
    threads = []
    for job in jobs:  # one at a time: the queue's order is the jobs' order
        threads.append(threading.Thread(target=decode, args=(batcher, *job), kwargs={"out": out}))
        threads[-1].start()
        while len(batcher._pending) < len(threads):
            time.sleep(0.001)
    batcher.engine.gate.set()
    for thread in [blocker, *threads]:
        thread.join(5)
    return dict(out)


def test_rows_of_different_lengths_share_a_batch_and_each_gets_its_own_logits():
    batcher = Batcher(FakeEngine(), max_batch=4, window=None)
    result = together(batcher, [([3], 2, None), ([1, 1, 5], 5, None), ([2, 6], 0, None)])
    assert result == {3: [4, 5, 6], 5: [6, 7, 0, 1, 2, 3], 6: [7]}
    assert list(batcher.batches) == [1, 3]
    # rows that had left were fed the filler while the longest went on
    assert batcher.engine.fed[-1] == [0, 2, 0]


def test_a_batch_holds_one_adapter_and_at_most_max_batch_rows():
    batcher = Batcher(FakeEngine(), max_batch=2, window=None)
    jobs = [([1], 1, "a"), ([2], 1, None), ([3], 1, "a"), ([4], 1, "a")]
    assert together(batcher, jobs) == {1: [2, 3], 2: [3, 4], 3: [4, 5], 4: [5, 6]}
    assert list(batcher.batches) == [1, 2, 1, 1]  # a+a, then None, then the last a


def test_long_prompts_run_alone_and_rows_must_fit_the_window_together(monkeypatch):
    monkeypatch.setattr(batching, "LONG_PROMPT", 4)
    batcher = Batcher(FakeEngine(), max_batch=4, window=8)
    jobs = [([1] * 5, 1, None), ([2], 1, None), ([3] * 4, 3, None), ([4] * 4, 4, None)]
    together(batcher, jobs)
    # the long prompt alone; [2] with [3]*4 (4 + 4 new <= 8); [4]*4 would need 4 + 5 > 8
    assert list(batcher.batches) == [1, 1, 2, 1]


def test_a_deadline_passing_in_the_queue_takes_the_row_off_it():
    engine = FakeEngine()
    batcher = Batcher(engine, max_batch=1, window=None)
    engine.gate.clear()
    blocker = threading.Thread(target=decode, args=(batcher, [0], 0))
    blocker.start()
    with pytest.raises(DeadlineExceeded):
        decode(batcher, [1], 3, deadline=time.monotonic() + 0.05)
    assert batcher._pending == []
    engine.gate.set()
    blocker.join(5)
    assert decode(batcher, [2], 1) == [3, 4]  # the batcher goes on


def test_a_lone_rows_prefill_checks_the_deadline():
    engine = FakeEngine()
    batcher = Batcher(engine, max_batch=4, window=None)
    engine.gate.clear()
    row = Row([1], 2, None, time.monotonic() + 0.1, filler=0)
    errors = []

    def run() -> None:
        try:
            batcher.join(row)
        except DeadlineExceeded as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    while not batcher.batches:  # admitted: the prefill has started
        time.sleep(0.001)
    time.sleep(0.15)
    engine.gate.set()
    thread.join(5)
    assert len(errors) == 1 and row._admitted


def test_an_engine_failure_ends_every_row_of_the_batch_and_not_the_batcher():
    engine = FakeEngine(fail_at=2)
    batcher = Batcher(engine, max_batch=4, window=None)
    errors = []

    def run(prompt):
        try:
            decode(batcher, prompt, 4)
        except GenerationError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=run, args=([i],)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert errors == ["the engine failed: out of memory"] * 2
    engine.fail_at = None
    assert decode(batcher, [5], 1) == [6, 7]


def test_a_row_that_stops_reading_is_dropped_and_the_others_finish():
    batcher = Batcher(FakeEngine(), max_batch=2, window=None, stall_s=0.2)
    stuck = Row([1], 5, None, None, filler=0)
    results = []
    other = threading.Thread(target=lambda: results.append(decode(batcher, [3], 3)))
    batcher.engine.gate.clear()
    holder = threading.Thread(target=batcher.join, args=(stuck,))
    holder.start()
    other.start()
    while len(batcher._pending) < 2 and not batcher.batches:
        time.sleep(0.001)
    batcher.engine.gate.set()
    other.join(5)
    holder.join(5)
    assert results == [[4, 5, 6, 7]]
    with pytest.raises(GenerationError, match="read no token for 0 s"):
        stuck.step(2)


def test_a_row_whose_deadline_passes_mid_batch_leaves_it_and_the_others_go_on():
    batcher = Batcher(FakeEngine(), max_batch=2, window=None, stall_s=60)
    stuck = Row([1], 5, None, None, filler=0)  # its reader stopped: it never steps again
    late = Row([3], 5, None, time.monotonic() + 0.3, filler=0)
    batcher.engine.gate.clear()
    firsts = []
    threads = [
        threading.Thread(target=lambda r=r: firsts.append(batcher.join(r))) for r in (stuck, late)
    ]
    for thread in threads:
        thread.start()
    while len(batcher._pending) < 2 and not batcher.batches:
        time.sleep(0.001)
    batcher.engine.gate.set()
    for thread in threads:
        thread.join(5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        late.step(4)  # the batch waits for the stuck row; this row's deadline does not
    assert time.monotonic() - started < 5 and late._left
    stuck.leave()
    assert decode(batcher, [5], 1) == [6, 7]


def test_rows_past_their_deadline_are_not_admitted():
    engine = FakeEngine()
    batcher = Batcher(engine, max_batch=4, window=None)
    engine.gate.clear()
    blocker = threading.Thread(target=decode, args=(batcher, [0], 0))
    blocker.start()
    while not batcher.batches:
        time.sleep(0.001)
    expired = Row([1], 2, None, time.monotonic() + 0.05, filler=0)
    with batcher._cond:  # queued without its thread's own wait (which would also time out)
        expired._batcher = batcher
        batcher._pending.append(expired)
    time.sleep(0.1)
    engine.gate.set()
    blocker.join(5)
    assert expired._ready.wait(5) and isinstance(expired._error, DeadlineExceeded)
    assert list(batcher.batches) == [1]
