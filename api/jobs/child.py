"""One function run in a fresh Python process, its progress, log lines and result sent back.

Long work (ingest, fine-tuning, a comparison) runs in a child process so that it stays out of
the web server's memory and threads, can use its own CPU threads, and can be stopped for real
(SIGTERM; the recipes resume from their last checkpoint). Jobs (:mod:`api.jobs.kinds`) and the
demo's side-by-side training (:mod:`api.cli.demo`, through :class:`ChildChain`) both run their
work through :class:`ChildProcess`.

The child (``python -m api.jobs.child``) reads ``{"function": "module:name", "params": {...}}``
on stdin and calls ``function(params, progress, log)``: ``progress`` is a tqdm-compatible bar
factory whose bars report their position, ``log(line)`` a log line. It writes one JSON message a
line on its stdout (``progress``, ``log``, then ``result`` or ``error``); anything else the work
prints goes to stderr, which the parent reads as log lines too.

A child never outlives the process that started it: on Linux it asks the kernel for SIGTERM
when its parent dies (``PR_SET_PDEATHSIG``; a parent killed with SIGKILL included), and exits at
once when the parent is already gone by then. Its own process group lets :meth:`stop` end what
it started in turn.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)
STOP_GRACE_S = 10  # after SIGTERM, a stopped child gets this long before SIGKILL
_STEP = 0.01  # a bar reports every whole percent
_ERROR_LINES = 5  # stderr lines quoted when a child dies without saying why
PARENT_ENV = "TUNEGRAPH_CHILD_PARENT"  # the parent's pid, for the parent-death check
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class BarEvent:
    """A progress bar of the child moved: ``fraction`` of ``total`` (None: no total)."""

    unit: str
    desc: str
    n: float
    total: float | None

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.n / self.total) if self.total else None

    def line(self) -> str:
        """``train damage: 120/300 step`` — what a log shows for it."""
        total = f"/{self.total:g}" if self.total else ""
        return f"{self.desc or self.unit}: {self.n:g}{total} {self.unit}".strip()


class ChildFailed(RuntimeError):
    """The child's function raised, or the child died; the message says what happened and
    ``code`` is the child's exit code."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class ChildStopped(RuntimeError):
    """The child was stopped (cancel, or the parent shutting down)."""


class ChildProcess:
    """Runs ``function(params, progress, log)`` in a child Python with ``env`` added to this
    process's environment (and ``threads`` PyTorch/OpenMP threads when given).

    ``on_progress(BarEvent)`` and ``on_log(line)`` are called from reader threads while it
    runs; :meth:`wait` returns the function's result (a JSON-serialisable dict).
    """

    def __init__(
        self,
        function: str,
        params: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        threads: int | None = None,
        on_progress: Callable[[BarEvent], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.function, self.params = function, dict(params)
        self.env = {**os.environ, **(env or {}), PARENT_ENV: str(os.getpid())}
        self.cwd = cwd
        if threads:
            self.env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.on_progress = on_progress or (lambda _event: None)
        self.on_log = on_log or (lambda _line: None)
        self._process: subprocess.Popen | None = None
        self._stopped = threading.Event()
        self._reply: dict[str, Any] = {}
        self._stderr: deque[str] = deque(maxlen=_ERROR_LINES)
        self._readers: list[threading.Thread] = []
        self._callback_failed = False

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "api.jobs.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # its own process group: stop() ends what it started too
        )
        self._process.stdin.write(json.dumps({"function": self.function, "params": self.params}))
        self._process.stdin.close()
        self._readers = [
            threading.Thread(target=self._read_messages, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def wait(self, cancel: threading.Event | None = None, poll_s: float = 0.2) -> dict[str, Any]:
        """Wait for the result; stop the child when ``cancel`` is set (:class:`ChildStopped`).
        :class:`ChildFailed` when the function raised or the child died."""
        if self._process is None:
            self.start()
        process = self._process
        if cancel is None:
            process.wait()
        while process.poll() is None:
            if cancel.wait(poll_s):
                self.stop()
        for reader in self._readers:
            # a grandchild that kept the pipes open must not keep the caller waiting
            reader.join(STOP_GRACE_S)
        if self._stopped.is_set():
            raise ChildStopped("stopped")
        code = process.returncode
        if "result" in self._reply and code == 0:
            return self._reply["result"]
        if "error" in self._reply:
            raise ChildFailed(self._reply["error"], code)
        said = " | ".join(self._stderr) or "no output"
        raise ChildFailed(f"the child process exited with code {code}: {said}", code)

    def stop(self) -> None:
        """End the child: SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`."""
        self._stopped.set()
        process = self._process
        if process is None or process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            process.wait()

    def _signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, number)

    def _call(self, callback: Callable[[Any], None], value: Any) -> None:
        """A callback that raises (a database that is locked for a moment) must not stop the
        reader: the pipe would fill up and the child would block."""
        try:
            callback(value)
        except Exception:
            if not self._callback_failed:
                self._callback_failed = True
                log.exception("a child process's progress or log callback failed")

    def _read_messages(self) -> None:
        for line in self._process.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                self._call(self.on_log, line.rstrip("\n"))
                continue
            if "progress" in message:
                self._call(self.on_progress, BarEvent(**message["progress"]))
            elif "log" in message:
                self._call(self.on_log, message["log"])
            else:
                self._reply = message

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            # progress bars of libraries redraw with \r: the last state of each line counts
            line = line.rstrip("\n").rsplit("\r", 1)[-1]
            if line.strip():
                self._stderr.append(line)
                self._call(self.on_log, line)


class ChildChain:
    """Stages run one after another, each a worker function in a child process
    (:class:`ChildProcess`), in a background thread (the demo's vision training beside its text
    training), each with ``threads`` PyTorch threads and
    its log and progress lines in ``logs/NAME.log``. The first to fail stops the chain
    (``failed``: its name and log); ``results`` holds each finished stage's summary."""

    def __init__(
        self,
        stages: list[tuple[str, str, dict[str, Any]]],
        logs: Path,
        threads: int,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.stages, self.logs, self.threads, self.env = stages, logs, threads, dict(env or {})
        self.timings: dict[str, float] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.failed: tuple[str, Path] | None = None
        self.current: tuple[str, Path] | None = None
        self.last_progress: BarEvent | None = None
        self._child: ChildProcess | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="demo-side", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        for name, function, params in self.stages:
            log = self.logs / f"{name}.log"
            started = time.perf_counter()
            with log.open("w", encoding="utf-8") as out:
                writing = threading.Lock()  # two reader threads write to the one file

                def write(line: str, out=out, writing=writing) -> None:
                    with writing:
                        out.write(line + "\n")
                        out.flush()

                def moved(event: BarEvent, write=write) -> None:
                    self.last_progress = event
                    write(event.line())

                try:
                    with self._lock:  # stop() either sees this child or keeps it from starting
                        if self._stopped.is_set():
                            return
                        self._child = ChildProcess(
                            function, params, env=self.env, threads=self.threads,
                            on_progress=moved, on_log=write,
                        )  # fmt: skip
                        self.current, self.last_progress = (name, log), None
                        self._child.start()
                    self.results[name] = self._child.wait()
                except (ChildFailed, ChildStopped, OSError) as exc:
                    write(f"failed: {exc}")
                    self.failed = (name, log)
                finally:
                    self.timings[name] = round(time.perf_counter() - started, 1)
            if self.failed:
                return
        self.current = None

    def wait(self, report: Callable[[str], None] | None = None, every: float = 30.0) -> None:
        """Wait for the chain; every ``every`` s, ``report(line)`` gets the running stage's
        progress."""
        while self._thread.is_alive():
            self._thread.join(every)
            current, bar = self.current, self.last_progress
            if report is not None and self._thread.is_alive() and current:
                report(f"{current[0]}: {bar.line() if bar else 'starting'}")

    def stop(self) -> None:
        """Stop the chain and end the running child."""
        with self._lock:
            self._stopped.set()
            child = self._child
        if child is not None:
            child.stop()
        self._thread.join(timeout=30)


# ---- the child's side ------------------------------------------------------------------------


class ReportingBar:
    """The part of tqdm's interface that the library's long loops use; sends its position to
    the parent every whole percent (and at the end)."""

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        iterable: Iterable[Any] | None = None,
        total: float | None = None,
        initial: float = 0,
        desc: str | None = None,
        unit: str = "it",
        **_: Any,  # leave, disable, position...: a child always reports
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.send, self.iterable = send, iterable
        self.total, self.n, self.desc, self.unit = total, initial, desc or "", unit
        self._reported = -1.0

    def update(self, n: float = 1) -> None:
        self.n += n
        fraction = min(1.0, self.n / self.total) if self.total else None
        if fraction is not None and fraction - self._reported < _STEP and fraction != 1.0:
            return
        self._reported = fraction if fraction is not None else self._reported
        event = {"unit": self.unit, "desc": self.desc, "n": self.n, "total": self.total}
        self.send({"progress": event})

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def set_postfix(self, *_: Any, **__: Any) -> None:
        pass

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> ReportingBar:
        return self

    def __exit__(self, *_: Any) -> None:
        pass


def _resolve(function: str) -> Callable[..., dict[str, Any]]:
    module, _, name = function.partition(":")
    return getattr(importlib.import_module(module), name)


def run_child(request: Mapping[str, Any], channel: TextIO) -> int:
    """Call the requested function and report on ``channel``; the child's exit code."""
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with lock:
            channel.write(json.dumps(message, default=str) + "\n")
            channel.flush()

    def progress(*args: Any, **kwargs: Any) -> ReportingBar:
        return ReportingBar(send, *args, **kwargs)

    try:
        result = _resolve(request["function"])(
            request["params"], progress, lambda line: send({"log": str(line)})
        )
    except Exception as exc:
        if os.environ.get("TUNEGRAPH_DEBUG"):  # as the CLI: the traceback only when asked for
            traceback.print_exc()  # to stderr: the parent logs it
        send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    send({"result": result})
    return 0


def _die_with_parent() -> None:
    """SIGTERM when the parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):
        sys.exit(1)  # the parent died before the request above took effect


def main() -> None:
    _die_with_parent()
    request = json.loads(sys.stdin.read())
    # Messages go to the real stdout; anything the work prints lands on stderr instead.
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.exit(run_child(request, channel))


if __name__ == "__main__":
    main()
