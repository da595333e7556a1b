"""The child process of a CLI job: runs one ``tunegraph`` command and reports its progress.

``python -m api.jobs.worker ingest claims FILE --json`` runs the command as the CLI would, with
one difference: the commands' tqdm progress bars are replaced by :class:`ProgressBar`, which
writes ``PROGRESS_PREFIX<unit> <fraction>`` lines to stderr for the parent
(:mod:`api.jobs.kinds`) to read. A separate process keeps training out of the web server and
lets a cancel stop it for real (SIGTERM; the recipes resume from their last checkpoint).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

PROGRESS_PREFIX = "@tunegraph-progress "
_STEP = 0.01  # report every whole percent


class ProgressBar:
    """The part of tqdm's interface the commands use; reports bars that have a total."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: float | None = None,
        initial: float = 0,
        unit: str = "it",
        **_: Any,  # desc, disable...: a job always reports
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.unit = total, initial, unit
        self._reported = -1.0

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.total:
            fraction = min(1.0, self.n / self.total)
            if fraction - self._reported >= _STEP or fraction == 1.0:
                self._reported = fraction
                print(f"{PROGRESS_PREFIX}{self.unit} {fraction:.4f}", file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *_: Any) -> None:
        pass


def main(argv: list[str]) -> None:
    import tqdm

    # The commands import tqdm inside their bodies, so they pick this up.
    tqdm.tqdm = ProgressBar
    from api.cli.main import main as cli

    cli.main(args=argv, prog_name="tunegraph")


if __name__ == "__main__":
    main(sys.argv[1:])
