"""Answer-quality metrics for manual questions: pure functions, no model needed.

- SPEC exact match: the reference value (number and unit, normalised) is the first value the
  answer states.
- ROUGE-L F1 for PROCEDURE and EXPLANATION answers.
- Hallucinated numbers: numbers in an answer that appear in no manual block.
- Latency statistics as in the seed evaluations (mean, p50/p90/p95/p99, min, max, std).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence

_UNIT_ALIASES = {
    "n·m": "nm",
    "n m": "nm",
    "newton metres": "nm",
    "ω": "ohm",
    "kω": "kohm",
    "litres": "l",
    "liters": "l",
    "litre": "l",
    "liter": "l",
    "°": "deg",
    "°c": "degc",
    "deg c": "degc",
}
_VALUE = re.compile(
    r"(-?\d+(?:[.,]\d+)?)\s*(n·m|nm|kohm|ohm|kω|ω|mm|cm|km/h|km|kpa|bar|psi|ml|l|litres?|liters?|"
    r"°c|deg c|°|kg|g|v|ah|a|w|kw|rpm|%|min|years?|months?)?(?![a-z])",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")


def values(text: str) -> list[tuple[float, str]]:
    """(number, normalised unit) pairs in order of appearance.

    >>> values("Tighten to 32 N·m, then 0.50 mm")
    [(32.0, 'nm'), (0.5, 'mm')]
    """
    found = []
    for match in _VALUE.finditer(text):
        number = float(match.group(1).replace(",", "."))
        unit = (match.group(2) or "").lower()
        found.append((number, _UNIT_ALIASES.get(unit, unit)))
    return found


def spec_exact_match(answer: str, reference: str) -> bool:
    """The answer's first stated value equals the reference value.

    >>> spec_exact_match("The torque is 32 Nm.", "32 Nm"), spec_exact_match("It is 3.2 Nm", "32 Nm")
    (True, False)
    >>> spec_exact_match("4 L of oil", "4.0 L")
    True
    """
    expected, got = values(reference), values(answer)
    if not expected or not got:
        return False
    (number, unit), (got_number, got_unit) = expected[0], got[0]
    return math.isclose(number, got_number, rel_tol=1e-9) and (not unit or unit == got_unit)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower())


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (longest common subsequence).

    >>> round(rouge_l("remove the wheel then the caliper", "remove the caliper"), 3)
    0.667
    """
    a, b = _tokens(answer), _tokens(reference)
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[-1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def known_numbers(texts: Iterable[str]) -> set[str]:
    """Every number written in the manual, normalised (4.0 and 4 are the same number)."""
    return {_norm_number(n) for text in texts for n in _NUMBER.findall(text)}


def numbers(text: str) -> list[str]:
    """The numbers written in a text.

    >>> numbers("Pin 2 carries 5 V; torque 3.5 Nm")
    ['2', '5', '3.5']
    """
    return _NUMBER.findall(text)


def hallucinated_numbers(answer: str, known: set[str]) -> list[str]:
    """Numbers in the answer that the manual never mentions.

    >>> hallucinated_numbers("Use 32 Nm, then 45 Nm", {"32"})
    ['45']
    """
    return [n for n in numbers(answer) if _norm_number(n) not in known]


def _norm_number(text: str) -> str:
    value = float(text)
    return str(int(value)) if value.is_integer() else repr(value)


def latency_stats(milliseconds: Sequence[float]) -> dict[str, float]:
    """mean, p50, p90, p95, p99, min, max, std (ms) and sequential throughput (requests/s)."""
    if not milliseconds:
        return {}
    ordered = sorted(milliseconds)

    def percentile(q: float) -> float:
        position = (len(ordered) - 1) * q
        low, high = math.floor(position), math.ceil(position)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    stats = {
        "mean": statistics.fmean(ordered),
        "p50": percentile(0.5),
        "p90": percentile(0.9),
        "p95": percentile(0.95),
        "p99": percentile(0.99),
        "min": ordered[0],
        "max": ordered[-1],
        "std": statistics.pstdev(ordered),
        "throughput_per_s": 1000 * len(ordered) / sum(ordered) if sum(ordered) else 0.0,
    }
    return {k: round(v, 2) for k, v in stats.items()}
