"""Decoding several requests in one forward pass: the engine backend's batcher.

On a CPU a small model's decode step is bound by reading the weights, so one pass for four
sequences costs little more than a pass for one. :class:`Batcher` runs the batches in one thread:
requests that arrive while a batch runs wait for the next one (at most ``max_batch`` share the
same adapter and fit the window together); each request's own thread keeps its decode loop
(:meth:`~agents.backends.decoding.TokenDecoder._decode`: grammar, stop sequences, streaming),
hands the batcher its next token with :meth:`Row.step` and gets back the logits after it. The
batcher runs a step once every row of the batch has handed in its token or left; a row that
has left is fed end-of-turn. A row that neither steps nor leaves for ``stall_s`` (a consumer
that stopped reading without closing the stream) is dropped, so it cannot hold the others.

The engine is behind :class:`BatchEngine` (``start`` a batch from prompts, ``advance`` it by
one token per row), so the scheduling is tested without it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agents.backends.base import DeadlineExceeded, GenerationError

LONG_PROMPT = 1024  # a longer prompt runs alone: its prefill is chunked, memory stays bounded
BATCH_CELLS = 8192  # rows x (longest prompt + largest budget): bounds the batch's KV cache
GATHER_S = 0.02  # an idle batcher waits this long for the requests arriving with the first
STALL_S = 30.0  # a row that neither steps nor leaves for this long is dropped from its batch


class Batch(Protocol):
    def advance(self, tokens: list[int]) -> Any:
        """Feed one token per row (in row order); the logits after them, shape (rows, vocab)."""
        ...


class BatchEngine(Protocol):
    def start(self, rows: list[Row], check: Callable[[], None]) -> tuple[Batch, Any]:
        """A batch that has read the rows' prompts (all with ``rows[0].adapter``) and the
        logits after each prompt, shape (rows, vocab). ``check`` is called between chunks of a
        long prompt's prefill; it raises when the only row's deadline has passed."""
        ...


@dataclass(eq=False)
class Row:
    """One request in the batcher: what its thread hands in and gets back."""

    prompt: list[int]
    budget: int  # new tokens at most
    adapter: str | None
    deadline: float | None
    filler: int  # the token fed once the row has left (end of turn)
    _batcher: Batcher | None = None
    _logits: Any = None
    _error: BaseException | None = None
    _token: int | None = None
    _left: bool = False
    _admitted: bool = False
    _since: float = 0.0  # when the batcher last handed this row its logits

    def __post_init__(self) -> None:
        self._ready = threading.Event()

    def step(self, token: int) -> Any:
        """Hand in the next token; the logits after it (blocks for one batch step)."""
        batcher = self._batcher
        assert batcher is not None
        with batcher._cond:
            if self._error is not None:
                raise self._error
            self._token = token
            self._ready.clear()
            batcher._cond.notify_all()
        return self._wait()

    def leave(self) -> None:
        """The row needs no more steps (its answer ended, failed or was abandoned)."""
        batcher = self._batcher
        if batcher is None:
            return
        with batcher._cond:
            self._left = True
            if self in batcher._pending:
                batcher._pending.remove(self)
            batcher._cond.notify_all()

    def _wait(self) -> Any:
        """The logits of the step this row handed its token to; DeadlineExceeded when its
        deadline passes first (it then leaves the batch, which goes on without it)."""
        batcher = self._batcher
        assert batcher is not None
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        if not self._ready.wait(timeout):
            with batcher._cond:
                if not self._ready.is_set():
                    self._left = True
                    batcher._cond.notify_all()
                    raise DeadlineExceeded("the answer took longer than the request timeout")
        if self._error is not None:
            raise self._error
        return self._logits


class Batcher:
    """Runs the batches of ``engine`` in a daemon thread (started on first use)."""

    def __init__(
        self,
        engine: BatchEngine,
        max_batch: int,
        window: int | None,
        name: str = "batcher",
        stall_s: float = STALL_S,
        gather_s: float = GATHER_S,
    ) -> None:
        self.engine = engine
        self.max_batch = max(1, max_batch)
        self.window = window
        self.stall_s = stall_s
        self.gather_s = gather_s
        self._name = name
        self._cond = threading.Condition()
        self._pending: list[Row] = []
        self._thread: threading.Thread | None = None
        self.batches: deque[int] = deque(maxlen=256)  # sizes of the last batches run

    def join(self, row: Row) -> Any:
        """Queue ``row`` and wait for the logits after its prompt. Raises DeadlineExceeded when
        the row's deadline passes while it waits for a batch (it is then taken off the queue)."""
        row._batcher = self
        with self._cond:
            self._pending.append(row)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        while True:
            timeout = None if row.deadline is None else max(0.0, row.deadline - time.monotonic())
            if row._ready.wait(timeout):
                break
            with self._cond:
                if not row._admitted:
                    self._pending.remove(row)
                    row._left = True
                    raise DeadlineExceeded("the answer took longer than the request timeout")
            row._ready.wait()  # admitted meanwhile: its prefill checks the deadline
            break
        if row._error is not None:
            raise row._error
        return row._logits

    # ---- the batcher's thread --------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                self._gather()
                rows = self._take()
            if not rows:
                continue
            try:
                self._run(rows)
            except BaseException as exc:  # each row of the batch gets the error
                self._fail(rows, exc)

    def _gather(self) -> None:
        """Requests sent together arrive a moment apart (each is parsed and rendered first):
        wait while they keep coming, ``gather_s`` for each next one, at most 5 times that in
        all, or until a batch is full (under the lock)."""
        deadline = time.monotonic() + 5 * self.gather_s
        while len(self._pending) < self.max_batch:
            count = len(self._pending)
            wait = min(self.gather_s, deadline - time.monotonic())
            grown = lambda count=count: len(self._pending) > count  # noqa: E731
            if wait <= 0 or not self._cond.wait_for(grown, wait):
                return

    def _take(self) -> list[Row]:
        """The next batch (under the lock): the oldest row, and the rows after it that share
        its adapter, have short prompts and fit the window and the cache bound beside it. Rows
        whose deadline has passed leave the queue with DeadlineExceeded instead."""
        now = time.monotonic()
        for row in [r for r in self._pending if r.deadline is not None and r.deadline < now]:
            self._pending.remove(row)
            row._error = DeadlineExceeded("the answer took longer than the request timeout")
            row._left = True
            row._ready.set()
        if not self._pending:
            return []
        first = self._pending[0]
        rows = [first]
        if len(first.prompt) <= LONG_PROMPT:
            for row in self._pending[1:]:
                if len(rows) == self.max_batch:
                    break
                if row.adapter != first.adapter or len(row.prompt) > LONG_PROMPT:
                    continue
                candidate = [*rows, row]
                length = max(len(r.prompt) for r in candidate) + max(r.budget for r in candidate)
                fits = self.window is None or length <= self.window
                if fits and len(candidate) * length <= BATCH_CELLS:
                    rows = candidate
        for row in rows:
            self._pending.remove(row)
            row._admitted = True
        return rows

    def _run(self, rows: list[Row]) -> None:
        self.batches.append(len(rows))

        def check() -> None:
            deadline = rows[0].deadline
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded("the answer took longer than the request timeout")

        batch, logits = self.engine.start(rows, check)
        self._deliver(rows, logits)
        while True:
            with self._cond:
                while not self._all_in(rows):
                    self._cond.wait(timeout=1.0)
                    self._drop_stalled(rows)
                if all(row._left for row in rows):
                    return
                tokens = [row.filler if row._left else row._token for row in rows]
                for row in rows:
                    row._token = None
            logits = batch.advance(tokens)
            self._deliver([r for r in rows if not r._left], logits, rows)

    def _all_in(self, rows: list[Row]) -> bool:
        return all(row._left or row._token is not None for row in rows)

    def _drop_stalled(self, rows: list[Row]) -> None:
        now = time.monotonic()
        for row in rows:
            if not row._left and row._token is None and now - row._since > self.stall_s:
                row._error = GenerationError(
                    f"the request read no token for {self.stall_s:.0f} s and was dropped from "
                    "its batch"
                )
                row._left = True
                row._ready.set()

    def _deliver(self, rows: list[Row], logits: Any, order: list[Row] | None = None) -> None:
        order = order or rows
        now = time.monotonic()
        with self._cond:
            for row in rows:
                row._logits = logits[order.index(row)]
                row._since = now
                row._ready.set()

    def _fail(self, rows: list[Row], exc: BaseException) -> None:
        error = exc if isinstance(exc, (DeadlineExceeded, GenerationError)) else None
        with self._cond:
            for row in rows:
                row._error = error or GenerationError(f"the engine failed: {exc}")
                row._left = True
                row._ready.set()
