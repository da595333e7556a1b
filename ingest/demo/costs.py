"""The demo corpus's repair costs: ground truth that no tool can compute.

A repair costs labour and parts. Its base price is a price table's figure for (part, damage) at
moderate severity, scaled by severity; a share of it, which depends on the damage (a dent is
mostly labour, a broken lamp mostly parts), is labour billed at the rate of the region the
repair is done in, the rest is parts, dearer on a more valuable vehicle; and each workshop's quote
varies around that (log-normal noise).

The region and the vehicle's value are drawn once per policy (once per photo for the damage
photos) and written nowhere: a claims record shows the amount and not why. Tools that estimate a
cost learn from past claims' amounts, which mix every region and vehicle, so history informs an
estimate without reproducing this process. Only the generator imports this module;
``tests/test_ground_truth.py`` checks that nothing in ``agents/``, ``rag/`` or ``finetune/``
can reach it. (The demo VINs all encode model year 2025, so a vehicle's age is not a factor.)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# USD for a moderate repair of (part, damage) at the typical labour rate on a typical vehicle.
BASE_REPAIR_COST: dict[tuple[str, str], int] = {
    ("front_bumper", "dent"): 650,
    ("front_bumper", "scratch"): 420,
    ("front_bumper", "crack"): 900,
    ("rear_bumper", "dent"): 600,
    ("rear_bumper", "scratch"): 400,
    ("rear_bumper", "crack"): 850,
    ("hood", "dent"): 800,
    ("hood", "scratch"): 500,
    ("trunk_lid", "dent"): 700,
    ("trunk_lid", "scratch"): 450,
    ("front_fender", "dent"): 650,
    ("front_fender", "scratch"): 400,
    ("front_door", "dent"): 750,
    ("front_door", "scratch"): 450,
    ("rear_door", "dent"): 700,
    ("rear_door", "scratch"): 430,
    ("rear_quarter_panel", "dent"): 950,
    ("rear_quarter_panel", "scratch"): 480,
    ("side_mirror", "scratch"): 150,
    ("side_mirror", "crack"): 320,
    ("windshield", "crack"): 450,
    ("windshield", "glass_shatter"): 900,
    ("rear_window", "crack"): 380,
    ("rear_window", "glass_shatter"): 700,
    ("side_window", "glass_shatter"): 350,
    ("headlamp", "crack"): 380,
    ("headlamp", "lamp_broken"): 750,
    ("tail_lamp", "crack"): 220,
    ("tail_lamp", "lamp_broken"): 420,
    ("front_tire", "tire_flat"): 180,
    ("rear_tire", "tire_flat"): 180,
}
SEVERITY_COST_FACTOR = {"minor": 0.45, "moderate": 1.0, "severe": 2.3}
# The labour share of a repair's base price, by damage.
LABOUR_SHARE = {
    "dent": 0.7,
    "scratch": 0.65,
    "crack": 0.45,
    "glass_shatter": 0.3,
    "lamp_broken": 0.2,
    "tire_flat": 0.35,
}
# Labour rate of each region, relative to the typical rate, and how many policies are there.
REGION_LABOUR_RATE = {"rural": 0.75, "town": 0.95, "suburban": 1.1, "metro": 1.45}
REGION_WEIGHTS = {"rural": 2, "town": 3, "suburban": 3, "metro": 2}
TYPICAL_VALUE = 28_000.0  # USD: the vehicle value at which parts cost the table's share
VALUE_SIGMA = 0.35  # log-normal spread of vehicle values around the typical one
PARTS_ELASTICITY = 0.6  # parts cost grows with the vehicle's value to this power
QUOTE_SIGMA = 0.15  # log-normal spread of workshops' quotes for the same repair


@dataclass(frozen=True)
class CostFactors:
    """The hidden inputs of a repair's cost: where it is repaired and what the vehicle is worth."""

    region: str
    vehicle_value: float


def draw_factors(rng: random.Random) -> CostFactors:
    """A policy's (or a photo's) region and vehicle value."""
    region = rng.choices(list(REGION_WEIGHTS), weights=list(REGION_WEIGHTS.values()))[0]
    return CostFactors(region, round(TYPICAL_VALUE * math.exp(rng.gauss(0, VALUE_SIGMA)), -2))


def quote_noise(rng: random.Random) -> float:
    """One workshop's quote relative to the fair cost."""
    return math.exp(rng.gauss(0, QUOTE_SIGMA))


def table_cost(part: str, damage: str, severity: str) -> float:
    """The price table's figure, before any hidden factor.

    >>> table_cost("hood", "dent", "minor")
    360.0
    """
    return BASE_REPAIR_COST[(part, damage)] * SEVERITY_COST_FACTOR[severity]


def repair_cost(
    part: str, damage: str, severity: str, factors: CostFactors, noise: float = 1.0
) -> float:
    """The cost in USD of one repair for a vehicle and region (``factors``), times a quote's
    ``noise``: the labour share at the region's rate plus the parts share scaled by the
    vehicle's value.

    >>> metro = CostFactors("metro", TYPICAL_VALUE)
    >>> round(repair_cost("hood", "dent", "moderate", metro))  # 800 x (0.7 x 1.45 + 0.3)
    1052
    >>> round(repair_cost("headlamp", "lamp_broken", "moderate", metro))  # mostly parts
    818
    """
    share = LABOUR_SHARE[damage]
    labour = share * REGION_LABOUR_RATE[factors.region]
    parts = (1 - share) * (factors.vehicle_value / TYPICAL_VALUE) ** PARTS_ELASTICITY
    return table_cost(part, damage, severity) * (labour + parts) * noise
