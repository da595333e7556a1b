"""What an approach costs: inference from its tokens, hosting from its latency, training from
its manifests' token and image counts, all at a :class:`Prices` table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.compare.records import Outcome, Prices, Training

# which price row an assessment approach's tokens are billed at (chat modes: text)
TOKEN_KIND = {"finetuned": "vision", "agentic": "text"}


def token_prices(prices: Prices, kind: str) -> tuple[float, float]:
    """The input and output price per 1M tokens of the ``text`` or ``vision`` model."""
    return getattr(prices, f"{kind}_input_per_1m"), getattr(prices, f"{kind}_output_per_1m")


def cost(
    rows: Sequence[Outcome],
    kind: str,
    prices: Prices,
    training: Training,
    counted: bool = True,
) -> dict[str, Any]:
    """Inference cost per 1,000 requests from the mean tokens of the successful calls (None
    when none succeeded, or the tokens were not ``counted``); hosting per 1,000 requests served
    one at a time at their mean latency; training cost from training tokens (and images) x
    price.

    >>> c = cost([Outcome("x", 1800.0, 1000, 100)], "text", Prices(), Training(tokens=2_000_000))
    >>> c["inference_per_1k"], c["hosting_per_1k"], c["training"]
    (3.5, 0.85, 55.0)
    """
    ok = [o for o in rows if o.error is None]
    price_in, price_out = token_prices(prices, kind)
    tokens_in = tokens_out = inference = mean_s = None
    if ok:
        mean_s = sum(o.latency_ms for o in ok) / len(ok) / 1000
    if ok and counted:
        tokens_in = round(sum(o.input_tokens for o in ok) / len(ok), 1)
        tokens_out = round(sum(o.output_tokens for o in ok) / len(ok), 1)
        inference = round(1000 * (tokens_in * price_in + tokens_out * price_out) / 1e6, 4)
    return {
        "input_tokens_per_call": tokens_in,
        "output_tokens_per_call": tokens_out,
        "inference_per_1k": inference,
        "hosting_per_hour": prices.hosting_per_hour,
        "hosting_per_1k": (
            round(1000 * mean_s / 3600 * prices.hosting_per_hour, 4) if mean_s is not None else None
        ),
        "training_tokens": training.tokens,
        "training_images": training.images,
        "training_models": list(training.models),
        "training": round(
            training.tokens / 1e6 * prices.training_per_1m_tokens
            + training.images / 1e3 * prices.training_per_1k_images,
            2,
        ),
        "currency": prices.currency,
    }
