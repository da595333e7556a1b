"""The damage vocabulary shared by data, models and the Assessment schema.

Damage types are CarDD's six classes. Parts are the panels and components a photo can show;
``PART_DAMAGES`` says which damage types can occur on which part. No price lives here: the demo
corpus's costs come from its generator (``ingest.demo.costs``), which no tool may call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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


def humanize(token: str) -> str:
    """``front_bumper`` -> ``front bumper``."""
    return token.replace("_", " ")


# Other vocabularies' words for the values above, as claims files write them. Spelling, case,
# separators, word order, plurals and the fillers of each vocabulary do not matter (see
# :class:`Vocabulary`), so "Bumper-Front", "FRONT_BUMPERS" and "front bumper cover" are one entry.
SEVERITY_SYNONYMS: dict[str, tuple[str, ...]] = {
    "minor": (
        "low", "light", "lightly", "slight", "slightly", "small", "mild", "minimal", "little",
        "cosmetic", "superficial", "lo", "min", "low damage",
    ),
    "moderate": (
        "med", "medium", "mid", "middle", "moderately", "mod", "average", "intermediate",
        "moderate damage",
    ),
    "severe": (
        "high", "hi", "major", "heavy", "heavily", "severely", "serious", "extensive",
        "significant", "critical", "extreme", "substantial", "total loss", "totaled", "totalled",
        "write off", "writeoff", "written off", "destroyed", "very high",
    ),
}  # fmt: skip
DAMAGE_TYPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "dent": (
        "dented", "denting", "ding", "dinged", "deformation", "deformed", "buckled", "crumpled",
        "crushed", "push in", "pushed in", "hail",
    ),
    "scratch": (
        "scratched", "scratching", "scrape", "scraped", "scuff", "scuffed", "keyed", "key",
        "abrasion", "paint", "paint scratch", "paint transfer", "graze", "grazed",
    ),
    "crack": (
        "cracked", "cracking", "split", "fracture", "fractured", "chip", "chipped",
        "stone chip", "crack glass",
    ),
    "glass_shatter": (
        "shattered", "shatter glass", "shattered glass", "broken glass", "glass broken",
        "smashed glass", "glass smashed", "glass", "glass breakage", "broken window",
        "smashed window", "window broken", "window smashed",
    ),
    "lamp_broken": (
        "broken lamp", "lamp", "broken light", "light broken", "smashed lamp", "lamp smashed",
        "broken headlamp", "broken tail lamp", "lamp out", "lamp cracked", "lamp breakage",
    ),
    "tire_flat": (
        "flat tire", "flat", "puncture", "punctured", "punctured tire", "blowout", "blown tire",
        "tire", "deflated", "tire deflated", "tire puncture", "slashed tire",
    ),
}  # fmt: skip
PART_SYNONYMS: dict[str, tuple[str, ...]] = {
    "front_bumper": ("front bumper cover", "front fascia", "fascia front", "bumper front"),
    "rear_bumper": ("rear bumper cover", "rear fascia", "bumper rear"),
    "hood": ("bonnet", "hood bonnet", "engine hood", "engine cover", "engine lid"),
    "trunk_lid": (
        "trunk", "boot", "boot lid", "bootlid", "trunklid", "tailgate", "tail gate", "deck lid",
        "decklid", "liftgate", "lift gate", "hatch", "rear hatch",
    ),
    "front_fender": ("fender", "wing", "front wing", "mudguard", "front mudguard"),
    "front_door": ("driver door", "passenger door", "door front"),
    "rear_door": ("back door", "door rear"),
    "rear_quarter_panel": (
        "quarter panel", "quarter", "rear quarter", "rear fender",
        "rear wing", "quarter panel rear",
    ),
    "side_mirror": (
        "mirror", "wing mirror", "door mirror", "outside mirror", "exterior mirror",
        "mirror side", "side view mirror",
    ),
    "windshield": (
        "windscreen", "wind screen", "wind shield", "front windshield", "front windscreen",
        "front glass", "windshield glass",
    ),
    "rear_window": (
        "back window", "rear windshield", "rear windscreen", "back glass", "rear glass",
        "rear screen", "backlite",
    ),
    "side_window": (
        "door glass", "door window", "side glass", "quarter glass", "quarter window",
        "window side",
    ),
    "headlamp": ("headlight", "head light", "head lamp", "front light", "front lamp"),
    "tail_lamp": (
        "taillight", "tail light", "taillamp", "rear light", "rear lamp", "brake light",
        "brake lamp", "stop lamp", "stop light",
    ),
    "front_tire": ("front tyre", "front wheel", "tire front", "front rim"),
    "rear_tire": ("rear tyre", "rear wheel", "back tire", "back tyre", "rear rim"),
}  # fmt: skip

# Words that say the same in a part's or damage's name: replaced before matching.
_WORD_ALIASES = {
    "back": "rear", "rr": "rear", "lr": "rear", "frt": "front", "fr": "front", "fnt": "front",
    "lf": "front", "rf": "front", "tyre": "tire", "light": "lamp", "headlamp": "head lamp",
    "headlight": "head lamp", "taillight": "tail lamp", "taillamp": "tail lamp",
    "smashed": "broken", "busted": "broken", "cracked": "crack", "windscreen": "windshield",
    "qtr": "quarter",
}  # fmt: skip
# Words that add nothing to a part's name here: the side of the car, "assembly", "panel"...
_PART_FILLERS = frozenset(
    {"left", "right", "lh", "rh", "nearside", "offside", "ns", "os", "the", "car", "vehicle",
     "assembly", "assy", "cover", "panel", "damage", "damaged", "area"}
)  # fmt: skip
_DAMAGE_FILLERS = frozenset({"damage", "damaged", "the", "on", "to", "of"})
_SEVERITY_FILLERS = frozenset({"damage", "damaged", "severity", "level", "lvl", "impact"})


def _singular(word: str) -> str:
    """English plural -> singular for the words of parts and damages.

    >>> [_singular(w) for w in ("dents", "scratches", "tires", "glass", "bumpers", "lenses")]
    ['dent', 'scratch', 'tire', 'glass', 'bumper', 'lens']
    """
    if word.endswith(("ches", "shes", "xes", "ses")) and len(word) > 4:
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


@dataclass(frozen=True)
class Vocabulary:
    """The values of one enumerated field and the other words written for them.

    :meth:`lookup` matches a written value by its :meth:`key`: lower case, words split at any
    separator or case change, aliases replaced, plurals singular (``plurals``), fillers dropped,
    words sorted. Two values sharing a key is a bug in the tables, refused when the vocabulary
    is built. ``optional`` words are dropped on a second try only, so that "driver front door"
    finds the front door while "driver door" stays a synonym of its own and "door" names none.

    >>> PART_VOCABULARY.lookup("Bumper-Front"), PART_VOCABULARY.lookup("Hood/Bonnet")
    ('front_bumper', 'hood')
    >>> SEVERITY_VOCABULARY.lookup("MINOR damage"), SEVERITY_VOCABULARY.lookup("catastrophic")
    ('minor', None)
    """

    name: str
    values: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fillers: frozenset[str] = frozenset()
    aliases: dict[str, str] = field(default_factory=dict)
    plurals: bool = False
    optional: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        table: dict[str, str] = {}
        for value in self.values:
            for written in (value, *self.synonyms.get(value, ())):
                key = self.key(written)
                if not key or table.setdefault(key, value) != value:
                    raise ValueError(
                        f"{self.name} vocabulary: {written!r} is empty or means both "
                        f"{table.get(key)!r} and {value!r}"
                    )
        object.__setattr__(self, "_table", table)

    def key(self, text: str) -> str:
        """The form two spellings of one value share.

        >>> PART_VOCABULARY.key("Rear_Quarter-Panels"), DAMAGE_VOCABULARY.key("ScratchedPaint")
        ('quarter rear', 'paint scratched')
        """
        spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # camelCase -> camel case
        words = []
        for word in re.findall(r"[a-z0-9]+", spaced.lower()):
            word = _singular(word) if self.plurals else word
            words += self.aliases.get(word, word).split()
        return " ".join(sorted(w for w in words if w not in self.fillers))

    def lookup(self, text: str) -> str | None:
        """The value ``text`` names, or None when it names none."""
        table: dict[str, str] = self._table  # type: ignore[attr-defined]
        key = self.key(text)
        if key in table or not self.optional:
            return table.get(key)
        return table.get(" ".join(w for w in key.split() if w not in self.optional))


SEVERITY_VOCABULARY = Vocabulary("severity", SEVERITIES, SEVERITY_SYNONYMS, _SEVERITY_FILLERS)
DAMAGE_VOCABULARY = Vocabulary(
    "damage_type", DAMAGE_TYPES, DAMAGE_TYPE_SYNONYMS, _DAMAGE_FILLERS, _WORD_ALIASES, True
)
PART_VOCABULARY = Vocabulary(
    "part",
    PARTS,
    PART_SYNONYMS,
    _PART_FILLERS,
    _WORD_ALIASES,
    True,
    frozenset({"driver", "passenger"}),
)
