"""The comparison of the fine-tuned and agentic approaches (``tunegraph compare``, compare jobs).

One job a module: :mod:`~agents.compare.inputs` (held-out items, prices, training usage),
:mod:`~agents.compare.claims` (the test claims, and the claims history without them),
:mod:`~agents.compare.run` (the calls, timed and metered), :mod:`~agents.compare.scoring`,
:mod:`~agents.compare.cost`, :mod:`~agents.compare.verdicts`, :mod:`~agents.compare.summary`
(all three into one :class:`Comparison`), :mod:`~agents.compare.report` and
:mod:`~agents.compare.plots`, :mod:`~agents.compare.agreement` (two Assessments of one photo);
:mod:`~agents.compare.pipeline` chains them. Importing this package loads no model, graph or
plotting library.
"""

from agents.compare.inputs import held_out_questions, load_prices, photo_cases, training_usage
from agents.compare.pipeline import CompareOptions, CompareResult, run_compare
from agents.compare.records import (
    CompareError,
    Comparison,
    ComparisonCancelled,
    Outcome,
    PhotoCase,
    Prices,
    TrainedModels,
    Training,
)

__all__ = [
    "CompareError",
    "CompareOptions",
    "CompareResult",
    "Comparison",
    "ComparisonCancelled",
    "Outcome",
    "PhotoCase",
    "Prices",
    "TrainedModels",
    "Training",
    "held_out_questions",
    "load_prices",
    "photo_cases",
    "run_compare",
    "training_usage",
]
