"""Which of several approaches wins a metric, by how much, and how sure we are: a paired
bootstrap over the evaluation items (pure functions, no model needed).

Every approach answered the same items, so one resample of item indices is scored for all of
them; the winner's margin over the runner-up in each resample gives the 95 % interval. An
interval that reaches 0 (or the wrong side of it) is a tie.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# scores(approach, item indices) -> the metric on those items (None: undefined there)
Scorer = Callable[[str, Sequence[int]], float | None]


@dataclass(frozen=True)
class Verdict:
    """One metric's best approach and its margin over the runner-up (positive: the best is
    better); ``tie`` when the 95 % interval of the margin reaches 0."""

    metric: str
    higher_is_better: bool
    values: dict[str, float | None]
    best: str | None  # None: fewer than two approaches have a value
    runner_up: str | None
    tie: bool
    margin: float | None
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(
    metric: str,
    approaches: Sequence[str],
    n_items: int,
    scorer: Scorer,
    *,
    higher_is_better: bool,
    resamples: int = 1000,
    seed: int = 0,
) -> Verdict:
    """The best approach on ``metric`` against the runner-up, with a paired-bootstrap 95 % CI
    of the margin.

    >>> same = verdict("acc", ["a", "b"], 4, lambda a, idx: sum(idx) / len(idx),
    ...                higher_is_better=True)
    >>> same.tie, same.margin
    (True, 0.0)
    >>> right = {"a": [1, 1, 1, 1], "b": [0, 0, 1, 0]}
    >>> v = verdict("acc", ["a", "b"], 4, lambda a, idx: sum(right[a][i] for i in idx) / len(idx),
    ...             higher_is_better=True)
    >>> v.best, v.runner_up, v.tie, v.margin
    ('a', 'b', False, 0.75)
    """
    everything = list(range(n_items))
    values = {a: _round(scorer(a, everything)) for a in approaches}
    ranked = sorted(
        (a for a in approaches if values[a] is not None),
        key=lambda a: values[a],
        reverse=higher_is_better,
    )
    if len(ranked) < 2 or n_items == 0:
        return Verdict(metric, higher_is_better, values, None, None, True, None, None, None)
    best, second = ranked[0], ranked[1]
    sign = 1 if higher_is_better else -1
    margin = sign * (values[best] - values[second])
    rng = random.Random(seed)
    margins = []
    for _ in range(resamples):
        sample = [rng.randrange(n_items) for _ in everything]
        a, b = scorer(best, sample), scorer(second, sample)
        if a is not None and b is not None:
            margins.append(sign * (a - b))
    low, high = _interval(margins) if margins else (None, None)
    decided = margin > 0 and low is not None and low > 0
    return Verdict(
        metric,
        higher_is_better,
        values,
        best,
        second,
        not decided,
        _round(margin),
        _round(low),
        _round(high),
    )


def _interval(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    last = len(ordered) - 1
    return ordered[round(0.025 * last)], ordered[round(0.975 * last)]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4) + 0.0  # + 0.0: no "-0.0"


def mean(values: Mapping[int, float] | Sequence[float], indices: Sequence[int]) -> float | None:
    """The mean of ``values`` over ``indices`` (repeats count), skipping missing items.

    >>> mean({0: 1.0, 2: 3.0}, [0, 0, 1, 2])
    1.6666666666666667
    """
    picked = [values[i] for i in indices if _has(values, i)]
    return sum(picked) / len(picked) if picked else None


def _has(values: Mapping[int, float] | Sequence[float], i: int) -> bool:
    if isinstance(values, Mapping):
        return i in values and values[i] is not None
    return values[i] is not None
