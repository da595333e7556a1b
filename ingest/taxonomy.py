"""The damage vocabulary shared by data, models and the Assessment schema.

Damage types are CarDD's six classes. Parts are the panels and components a photo can show;
``PART_DAMAGES`` says which damage types can occur on which part, and ``BASE_REPAIR_COST`` is the
demo price table (USD, moderate severity) that claims amounts and photo costs are drawn from.
"""

from __future__ import annotations

DAMAGE_TYPES = ("dent", "scratch", "crack", "glass_shatter", "lamp_broken", "tire_flat")
SEVERITIES = ("minor", "moderate", "severe")
OVERALL_SEVERITIES = (*SEVERITIES, "total_loss")
VIEWS = ("front", "side", "rear")

_PANEL = ("dent", "scratch", "crack")
PART_DAMAGES: dict[str, tuple[str, ...]] = {
    "front_bumper": _PANEL,
    "rear_bumper": _PANEL,
    "hood": ("dent", "scratch"),
    "trunk_lid": ("dent", "scratch"),
    "front_fender": ("dent", "scratch"),
    "front_door": ("dent", "scratch"),
    "rear_door": ("dent", "scratch"),
    "rear_quarter_panel": ("dent", "scratch"),
    "side_mirror": ("scratch", "crack"),
    "windshield": ("crack", "glass_shatter"),
    "rear_window": ("crack", "glass_shatter"),
    "side_window": ("glass_shatter",),
    "headlamp": ("crack", "lamp_broken"),
    "tail_lamp": ("crack", "lamp_broken"),
    "front_tire": ("tire_flat",),
    "rear_tire": ("tire_flat",),
}
PARTS = tuple(PART_DAMAGES)

# Which parts each camera view shows (the synthetic photos draw exactly these).
VIEW_PARTS: dict[str, tuple[str, ...]] = {
    "front": ("front_bumper", "hood", "windshield", "headlamp", "front_tire"),
    "side": (
        "front_fender",
        "front_door",
        "rear_door",
        "rear_quarter_panel",
        "side_window",
        "side_mirror",
        "front_tire",
        "rear_tire",
    ),
    "rear": ("rear_bumper", "trunk_lid", "rear_window", "tail_lamp", "rear_tire"),
}

# USD for a moderate repair of (part, damage); minor and severe scale it.
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
# Above this many times the usual cost the synthetic claims call an amount inflated.
INFLATION_FACTOR = 3.0

# Repair action the manual recommends for (damage, severity).
REPAIR_ACTION = {
    ("dent", "minor"): "repair",
    ("dent", "moderate"): "repair",
    ("dent", "severe"): "replace",
    ("scratch", "minor"): "refinish",
    ("scratch", "moderate"): "refinish",
    ("scratch", "severe"): "repair",
    ("crack", "minor"): "repair",
    ("crack", "moderate"): "replace",
    ("crack", "severe"): "replace",
    ("glass_shatter", "minor"): "replace",
    ("glass_shatter", "moderate"): "replace",
    ("glass_shatter", "severe"): "replace",
    ("lamp_broken", "minor"): "replace",
    ("lamp_broken", "moderate"): "replace",
    ("lamp_broken", "severe"): "replace",
    ("tire_flat", "minor"): "repair",
    ("tire_flat", "moderate"): "replace",
    ("tire_flat", "severe"): "replace",
}


def repair_cost(part: str, damage: str, severity: str) -> int:
    """Expected repair cost in USD.

    >>> repair_cost("hood", "dent", "moderate")
    800
    """
    return round(BASE_REPAIR_COST[(part, damage)] * SEVERITY_COST_FACTOR[severity])


def humanize(token: str) -> str:
    """``front_bumper`` -> ``front bumper``."""
    return token.replace("_", " ")
