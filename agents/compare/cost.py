"""What an approach costs, billed the way it would be paid for: self-hosted models by compute
(the wall-seconds of their calls x the hourly price of the hardware), hosted models by tokens
(x a price per 1M tokens); training by its wall time x the same hourly price, beside what the
same training would cost on a hosted fine-tuning service, all at a :class:`Prices` table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.compare.records import Outcome, Prices, Training

# the models each assessment approach calls; every chat mode calls the text model ("llm")
ASSESSMENT_MODELS = {"finetuned": ("vision",), "agentic": ("damage", "llm")}
CHAT_MODELS = ("llm",)


def billing(models: Sequence[str], llm_hosted: bool) -> str:
    """How calls of ``models`` are billed: the text model by tokens when a server hosts it,
    everything else by compute.

    >>> billing(("damage", "llm"), llm_hosted=True), billing(("llm",), llm_hosted=False)
    ('compute + tokens', 'compute')
    """
    methods = {"tokens" if m == "llm" and llm_hosted else "compute" for m in models}
    return " + ".join(sorted(methods))


def call_cost(outcome: Outcome, prices: Prices, hardware: str) -> float:
    """One call's cost: its self-hosted models' seconds at the hardware's hourly price, plus
    its hosted models' tokens at the per-1M prices.

    >>> call_cost(Outcome(compute_s=36.0), Prices(cpu_per_hour=0.1), "cpu")
    0.001
    >>> call_cost(Outcome(hosted_input_tokens=1000), Prices(text_input_per_1m=2.0), "cpu")
    0.002
    """
    compute = outcome.compute_s / 3600 * prices.per_hour(hardware)
    tokens = (
        outcome.hosted_input_tokens * prices.text_input_per_1m
        + outcome.hosted_output_tokens * prices.text_output_per_1m
    ) / 1e6
    return compute + tokens


def training_cost(training: Training, prices: Prices, hardware: str) -> float | None:
    """Training's wall time at the hardware's hourly price (None when the time is unknown).

    >>> training_cost(Training(seconds=1800.0), Prices(gpu_per_hour=2.0), "gpu")
    1.0
    """
    if training.seconds is None:
        return None
    return round(training.seconds / 3600 * prices.per_hour(hardware), 4)


def cost(
    rows: Sequence[Outcome],
    method: str,
    prices: Prices,
    training: Training,
    hardware: str = "cpu",
    counted: bool = True,
) -> dict[str, Any]:
    """Inference cost per 1,000 requests from the mean cost of the successful calls (None when
    none succeeded), billed by ``method`` (:func:`billing`); the tokens per call when they were
    ``counted``; training billed by compute, and at a hosted fine-tuning service's prices.

    >>> c = cost([Outcome("x", 1800.0, compute_s=1.8)], "compute", Prices(cpu_per_hour=0.1),
    ...          Training(tokens=2_000_000, seconds=3600.0))
    >>> c["inference_per_1k"], c["training"], c["training_hosted"]
    (0.05, 0.1, 55.0)
    """
    ok = [o for o in rows if o.error is None]
    tokens_in = tokens_out = compute_s = inference = None
    if ok:
        compute_s = sum(o.compute_s for o in ok) / len(ok)
        # kept unrounded here: a fast call on cheap hardware costs fractions of a cent
        inference = 1000 * sum(call_cost(o, prices, hardware) for o in ok) / len(ok)
    if ok and counted:
        tokens_in = round(sum(o.input_tokens for o in ok) / len(ok), 1)
        tokens_out = round(sum(o.output_tokens for o in ok) / len(ok), 1)
    return {
        "billing": method,
        "hardware": hardware,
        "per_hour": prices.per_hour(hardware),
        "compute_s_per_call": compute_s,
        "input_tokens_per_call": tokens_in,
        "output_tokens_per_call": tokens_out,
        "inference_per_1k": None if inference is None else round(inference, 8),
        "training_s": training.seconds,
        "training": training_cost(training, prices, hardware),
        "training_tokens": training.tokens,
        "training_images": training.images,
        "training_models": list(training.models),
        "training_hosted": round(
            training.tokens / 1e6 * prices.training_per_1m_tokens
            + training.images / 1e3 * prices.training_per_1k_images,
            2,
        ),
        "currency": prices.currency,
    }
