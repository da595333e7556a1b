"""Training data from any manual's blocks: questions per block kind in several phrasings,
unanswerable questions, RAFT-style examples with retrieved passages, split into train/val/test.

Pure functions over :class:`ManualBlock` records (what `tunegraph ingest` parses; the retrieval
for RAFT examples comes in as a function, so this module never touches an index):

- :func:`manual_questions` asks about every block: a spec row by its name, a procedure,
  explanation or fault code by its title, a wiring table pin by pin. Each kind's phrasings are
  split by seed into train, val and test templates, so a test question is never worded like a
  training one; every block is asked in all three splits (a fine-tuned model is meant to learn
  every block, so the test split holds out wordings, not facts).
- :func:`unanswerable_questions` asks about what the manual does not hold: parts that appear in
  no block, fault codes it does not list, pins a connector does not have. The answer is the one
  refusal sentence (:func:`finetune.datasets.refusal`). These are split by subject: the test
  split asks about things no training question named.
- :func:`raft_examples` puts the passages that retrieval returns for a question before it (the
  right one among distractors, sometimes without it), as RAFT does (Zhang et al., 2024), so
  that the model learns to read retrieved passages and to ignore the ones that do not answer.

Over 400 lines on purpose: every question generator shares one fact extraction (:func:`facts`) and
one seeded template split, which keeps a test question from being worded like a training one;
about a quarter of the file is the templates and word lists.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from finetune.datasets import SPEC_PARAPHRASES, DatasetError, SFTExample, example, refusal
from finetune.evaluation import manual_messages
from ingest.records import BLOCK_KINDS, BlockKind, ManualBlock, QAPair, Split

# (question, k) -> the k best passages as (block id, text), best first
Search = Callable[[str, int], list[tuple[str, str]]]
# a prompt -> the reply of a teacher model (an OpenAI-compatible endpoint, built by the caller)
Ask = Callable[[str], str]

TEACHER_PROMPT = """You write the questions people ask about a vehicle service manual.

Manual passage ({kind}):
{text}

Write {n} different questions that this passage answers, the way a mechanic would ask them
(short, informal, varied wording), each with its answer taken from the passage.{focus}
Reply with one JSON object per line: {{"question": "...", "answer": "..."}}"""

# Phrasings per kind, written for any manual. {x}: what the question names (a spec's name, a
# procedure's or explanation's title, a fault code, a connector); {p}: a pin.
TEMPLATES: dict[BlockKind, tuple[str, ...]] = {
    "SPEC": (
        *SPEC_PARAPHRASES,
        "Which value is specified for the {x}?",
        "What should the {x} be?",
    ),
    "PROCEDURE": (
        "What is the procedure for {x}?",
        "Give me the steps for {x}.",
        "Walk me through {x}.",
        "Which steps does the manual list for {x}?",
        "How is {x} carried out?",
        "I have to do {x}. What are the steps?",
        "List the steps of {x}.",
        "How do I go about {x}?",
    ),
    "EXPLANATION": (
        "Explain {x}.",
        "What does the manual say about {x}?",
        "Describe {x}.",
        "Give me an overview of {x}.",
        "Tell me about {x}.",
        "Can you explain {x}?",
        "What should I know about {x}?",
        "Summarise {x}.",
    ),
    "WIRING": (
        "What is on pin {p} of {x}?",
        "Which circuit is on pin {p} of {x}, and what colour is the wire?",
        "Pin {p} of {x}?",
        "What does pin {p} of {x} carry?",
        "Give the circuit at {x} pin {p}.",
        "{X}, pin {p}: what is it?",
        "What is connected to terminal {p} of {x}?",
        "Tell me about terminal {p} on {x}.",
    ),
    "TROUBLESHOOTING": (
        "What does fault code {x} mean?",
        "How do I diagnose {x}?",
        "What causes {x}?",
        "{x} is stored. What should I check?",
        "Explain DTC {x}.",
        "What are the possible causes of {x}?",
        "The scan tool shows {x}. What now?",
        "Troubleshoot {x}.",
    ),
}
# More ways to ask for a spec value, by what its unit measures ({n}: the row's own name). A
# spec row is asked in the generic phrasings above and those of its value's kind.
SPEC_BY_UNIT: dict[str, tuple[str, tuple[str, ...]]] = {
    "torque": (
        r"N·?m\b",
        (
            "What do I torque the {n} to?",
            "How tight does the {n} go?",
            "{N}: what torque?",
            "What does the {n} get tightened to?",
            "Torque for the {n}?",
            "What torque goes on the {n}?",
        ),
    ),
    "volume": (
        r"\b(?:L|l|ml|mL|litres?)\b",
        (
            "How much does the {n} take?",
            "How many litres for the {n}?",
            "{N}: how much?",
            "What quantity is the {n}?",
            "How much goes in for the {n}?",
        ),
    ),
    "pressure": (
        r"\b(?:bar|kPa|psi)\b",
        (
            "What pressure for the {n}?",
            "{N}: what pressure?",
            "What should the {n} read?",
            "How many bar for the {n}?",
        ),
    ),
    "temperature": (
        r"°",
        (
            "At what temperature is the {n}?",
            "{N}: what temperature?",
            "How hot for the {n}?",
            "What temperature for the {n}?",
        ),
    ),
    "other": (
        r"",
        (
            "What's the figure for the {n}?",
            "{N}: what's the number?",
            "What's the {n} on this one?",
            "How much is the {n}?",
        ),
    ),
}
TEST_TEMPLATES, VAL_TEMPLATES = 2, 1  # per kind; the rest are training phrasings

# Parts that many manuals never mention. An unanswerable question names one only when neither
# it nor any spec row's name in the manual contains it (checked per manual).
OTHER_PARTS = (
    "sunroof motor",
    "tow bar",
    "headlamp washer pump",
    "seat heater element",
    "wheel nut",
    "tailgate strut",
    "fuel tank sender",
    "horn",
    "rain sensor",
    "heated windscreen",
    "door mirror glass",
    "cabin air filter housing",
    "roof rail",
    "spare wheel winch",
    "wiper linkage",
    "boot lid hinge",
    "parking heater",
    "child seat anchor",
    "sun visor",
    "glovebox lamp",
    "rear screen heater",
    "fog lamp bracket",
    "mud flap",
    "bonnet release cable",
    "cup holder",
    "load floor",
    "exhaust tailpipe trim",
    "wing mirror motor",
    "seat belt pretensioner",
    "window regulator",
)
SPEC_ATTRIBUTES = ("tightening torque", "capacity", "clearance", "resistance", "pressure")
SWAPS = (
    ("front", "rear"),
    ("inlet", "exhaust"),
    ("intake", "exhaust"),
    ("upper", "lower"),
    ("left", "right"),
    ("inner", "outer"),
    ("primary", "secondary"),
    ("minimum", "maximum"),
)
_DTC = re.compile(r"\b([PCBU])([0-3])([0-9A-F]{3})\b")
_CONNECTOR = re.compile(r"\b[A-Z]{1,3}-?[A-Z]{0,2}\d{1,4}[A-Z]?\b")  # C101, X12, EM-C3
_HEADING_HINTS = (("torque", "tightening torque"), ("capacit", "capacity"))


@dataclass(frozen=True)
class Split3:
    train: list[QAPair]
    val: list[QAPair]
    test: list[QAPair]

    def __iter__(self):
        return iter((self.train, self.val, self.test))

    def __add__(self, other: Split3) -> Split3:
        return Split3(self.train + other.train, self.val + other.val, self.test + other.test)


def template_splits(seed: int) -> dict[str, dict[Split, tuple[str, ...]]]:
    """Each kind's phrasings split by ``seed`` into disjoint train, val and test templates; a
    spec value's kind ("SPEC:torque", ...) adds its own phrasings, split the same way."""
    rng = random.Random(seed)
    result: dict[str, dict[Split, tuple[str, ...]]] = {}

    def split(pool: Sequence[str]) -> dict[Split, tuple[str, ...]]:
        order = list(pool)
        rng.shuffle(order)
        return {
            "test": tuple(order[:TEST_TEMPLATES]),
            "val": tuple(order[TEST_TEMPLATES : TEST_TEMPLATES + VAL_TEMPLATES]),
            "train": tuple(order[TEST_TEMPLATES + VAL_TEMPLATES :]),
        }

    for kind in BLOCK_KINDS:
        result[kind] = split(TEMPLATES[kind])
    for unit, (_, pool) in SPEC_BY_UNIT.items():
        own = split(pool)
        result[f"SPEC:{unit}"] = {s: result["SPEC"][s] + own[s] for s in own}
    return result


def unit_class(value: str) -> str:
    """What a spec value measures, by its unit: torque, volume, pressure, temperature or other.

    >>> unit_class("28 Nm"), unit_class("6.2 L"), unit_class("0.6 ohm")
    ('torque', 'volume', 'other')
    """
    for unit, (pattern, _) in SPEC_BY_UNIT.items():
        if pattern and re.search(pattern, value):
            return unit
    return "other"


@dataclass(frozen=True)
class _Fact:
    """One thing a block answers: the block, what questions name, the reference answer."""

    block: ManualBlock
    key: str  # unique per fact (a wiring table has one per pin)
    fields: dict[str, str]
    answer: str


def facts(blocks: Sequence[ManualBlock]) -> list[_Fact]:
    """What can be asked of each block, with its reference answer.

    >>> spec = ManualBlock("b1", "m.md", 1, ("Engine", "Tightening torques"), "SPEC",
    ...                    "Injector clamp bolt: 28 Nm")
    >>> f = facts([spec])[0]; f.fields["x"], f.answer
    ('injector clamp bolt tightening torque', '28 Nm')
    """
    names = Counter(
        b.text.partition(": ")[0].strip().lower()
        for b in blocks
        if b.kind == "SPEC" and ": " in b.text
    )
    result = []
    for block in blocks:
        first, _, rest = block.text.partition("\n")
        title = first.strip()
        if block.kind == "SPEC":
            if ": " not in first:
                continue
            name, value = (part.strip() for part in first.split(": ", 1))
            x, n = _spec_subject(name, block, names)
            fields = {"x": x, "n": n, "unit": unit_class(value)}
            result.append(_Fact(block, block.id, fields, value))
        elif block.kind == "WIRING":
            result += _wiring_facts(block, title, rest)
        elif rest.strip():
            if block.kind == "TROUBLESHOOTING":
                code = _DTC.search(title)
                subject = code.group(0) if code else _lower_first(title)
                answer = block.text.strip()
            else:
                subject, answer = _lower_first(title.split(" - ")[0]), rest.strip()
            result.append(_Fact(block, block.id, {"x": subject}, answer))
    return result


def _spec_subject(name: str, block: ManualBlock, names: Counter) -> tuple[str, str]:
    """A spec row's name as a question names it: with its table's kind of value when the name
    lacks it ("torque" under a tightening-torque heading), and as it is; each with its table
    when another row has the same name."""
    subject = plain = _lower_first(name)
    heading = (block.section[-1] if block.section else "").lower()
    for word, hint in _HEADING_HINTS:
        if word in heading and word not in subject.lower():
            subject = f"{subject} {hint}"
            break
    if names[name.lower()] > 1 and block.section:
        table = f" ({_lower_first(block.section[-1])})"
        subject, plain = subject + table, plain + table
    return subject, plain


def _wiring_facts(block: ManualBlock, title: str, rest: str) -> list[_Fact]:
    rows = [[c.strip() for c in line.split("|")] for line in rest.splitlines() if "|" in line]
    if len(rows) < 2:
        return []
    header, body = rows[0], rows[1:]
    column = next((i for i, h in enumerate(header) if re.search(r"(?i)\b(pin|terminal)", h)), 0)
    connector = _CONNECTOR.search(title.split(" - ")[0])
    name = f"connector {connector.group(0)}" if connector else _lower_first(title)
    result = []
    for row in body:
        if len(row) <= column or not row[column]:
            continue
        pin = row[column]
        parts = [
            f"{h.lower()} {v}"
            for i, (h, v) in enumerate(zip(header, row, strict=False))
            if v and i != column
        ]
        answer = f"Pin {pin} of {name}: {', '.join(parts)}."
        result.append(_Fact(block, f"{block.id}#{pin}", {"x": name, "p": pin}, answer))
    return result


def manual_questions(
    blocks: Sequence[ManualBlock], *, phrasings: int = 2, seed: int = 42
) -> Split3:
    """Questions about every block: ``phrasings`` training questions per fact (drawn from the
    kind's training templates), one validation and one test question (from its own templates).

    >>> spec = ManualBlock("b1", "m.md", 1, ("Specifications",), "SPEC", "Oil capacity: 4.5 L")
    >>> train, val, test = manual_questions([spec], phrasings=2)
    >>> len(train), len(val), len(test), test[0].answer
    (2, 1, 1, '4.5 L')
    """
    if phrasings < 1:
        raise DatasetError(f"data.phrasings={phrasings}: use 1 or more")
    templates = template_splits(seed)
    rng = random.Random(seed)
    splits: dict[Split, list[QAPair]] = {"train": [], "val": [], "test": []}
    for fact in facts(blocks):
        kind = fact.block.kind
        pools = templates[f"SPEC:{fact.fields['unit']}" if kind == "SPEC" else kind]
        for split, count in (("train", phrasings), ("val", 1), ("test", 1)):
            pool = pools[split]
            chosen = _draw(pool, count, rng)
            for index, template in enumerate(chosen):
                splits[split].append(
                    QAPair(
                        f"{fact.key}-{split}-{index}",
                        fact.block.id,
                        kind,
                        split,
                        _fill(template, fact.fields),
                        fact.answer,
                    )
                )
    return Split3(splits["train"], splits["val"], splits["test"])


def naming(
    questions: Sequence[QAPair], subject: str, *, share: float = 0.5, seed: int = 42
) -> list[QAPair]:
    """``questions`` with a seeded ``share`` of them naming ``subject`` (the vehicle the manual
    covers), at the front or the end, as people often do; the rest as they were.

    >>> q = QAPair("1", "b1", "SPEC", "train", "What is the oil capacity?", "4.5 L")
    >>> for x in naming([q] * 4, "Vireo 1.6T", seed=1):
    ...     print(x.question)
    What is the oil capacity?
    What is the oil capacity?
    On the Vireo 1.6T: what is the oil capacity?
    What is the oil capacity on the Vireo 1.6T?
    """
    rng = random.Random(seed + 5)
    result = []
    for q in questions:
        text = q.question
        if rng.random() < share:
            if rng.random() < 0.5:
                text = f"On the {subject}: {_lower_first(text)}"
            else:
                body, end = (text[:-1], text[-1]) if text[-1:] in "?." else (text, "?")
                text = f"{body} on the {subject}{end}"
        result.append(replace(q, question=text))
    return result


class TeacherError(RuntimeError):
    """The teacher endpoint did not answer (refused, unreachable, timed out)."""


@dataclass
class TeacherReport:
    """What the teacher wrote: questions kept, and rejected with the reason."""

    kept: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    failed_facts: int = 0  # no usable question: the templates asked instead


def teacher_questions(
    blocks: Sequence[ManualBlock],
    ask: Ask,
    *,
    per_fact: int = 2,
    seed: int = 42,
    held_out: Iterable[str] = (),
) -> tuple[list[QAPair], TeacherReport]:
    """Training questions written by a teacher model, ``per_fact`` for each fact of
    :func:`facts`, each checked against its block: the teacher's answer may hold only numbers
    the block holds, and the question must not give the answer away (contain the spec value).
    A question worded like one of ``held_out`` (the val and test questions, compared by
    :func:`wording`) is rejected too. The training answer is the block's reference answer, never
    the teacher's. A fact the
    teacher gave no usable question for gets template questions instead (counted in the
    report)."""
    from finetune.metrics import known_numbers

    report = TeacherReport()
    held = {wording(q) for q in held_out}
    templates = template_splits(seed)
    rng = random.Random(seed)
    result = []
    for fact in facts(blocks):
        block = fact.block
        focus = ""
        if block.kind == "WIRING":
            focus = f" Every question asks about pin {fact.fields['p']} of {fact.fields['x']}."
        elif block.kind == "SPEC":
            focus = f" Every answer is {fact.answer}."
        prompt = TEACHER_PROMPT.format(kind=block.kind, text=block.text, n=per_fact, focus=focus)
        allowed = known_numbers([block.text])
        kept = []
        try:
            reply = ask(prompt)
        except Exception as exc:  # whatever the client raises: the endpoint failed
            raise TeacherError(str(exc)) from exc
        for line in reply.splitlines():
            problem, question = _teacher_line(line, fact, allowed)
            if not problem and wording(question) in held:
                problem = "worded like a held-out (val or test) question"
            if problem:
                if line.strip():
                    report.rejected.append({"block": block.id, "line": line[:200], "why": problem})
                continue
            kept.append(question)
        if not kept:
            report.failed_facts += 1
            pool = templates[f"SPEC:{fact.fields['unit']}" if block.kind == "SPEC" else block.kind]
            kept = [_fill(t, fact.fields) for t in _draw(pool["train"], per_fact, rng)]
        else:
            report.kept += len(kept[:per_fact])
        for index, question in enumerate(kept[:per_fact]):
            result.append(
                QAPair(
                    f"{fact.key}-train-{index}",
                    block.id,
                    block.kind,
                    "train",
                    question,
                    fact.answer,
                )
            )
    return result, report


def _teacher_line(line: str, fact: _Fact, allowed: set[str]) -> tuple[str, str]:
    """(problem, question) of one line of the teacher's reply; an empty problem keeps it."""
    import json

    from finetune.metrics import hallucinated_numbers

    line = line.strip().strip(",")
    if not line:
        return "empty", ""
    try:
        item = json.loads(line)
        question, answer = str(item["question"]).strip(), str(item["answer"]).strip()
    except (ValueError, KeyError, TypeError):
        return "not a JSON object with question and answer", ""
    if not question or len(question) > 300:
        return "no question, or longer than 300 characters", ""
    if invented := hallucinated_numbers(answer, allowed):
        return f"the answer holds numbers the passage does not: {', '.join(invented)}", ""
    if fact.block.kind == "SPEC" and fact.answer.lower() in question.lower():
        return "the question gives the answer away", ""
    return "", question


def spec_questions(blocks: Sequence[ManualBlock], per_fact: int, *, seed: int = 42) -> list[QAPair]:
    """``per_fact`` more training questions for each spec row, drawn from its training templates
    only (``data.spec_paraphrases`` for a manual: a value is a few tokens, so asking it in many
    wordings is cheap)."""
    if per_fact < 0:
        raise DatasetError(f"data.spec_paraphrases={per_fact}: use 0 (none) or more")
    templates = template_splits(seed)
    rng = random.Random(seed + 3)
    result = []
    for fact in facts(blocks):
        if fact.block.kind != "SPEC":
            continue
        pool = templates[f"SPEC:{fact.fields['unit']}"]["train"]
        for index, template in enumerate(_draw(pool, per_fact, rng)):
            question = _fill(template, fact.fields)
            result.append(
                QAPair(
                    f"{fact.key}-more-{index}",
                    fact.block.id,
                    "SPEC",
                    "train",
                    question,
                    fact.answer,
                )
            )
    return result


def wording(text: str) -> str:
    r"""A question as compared with held-out ones: the question of a prompt with passages, without
    its task prefix, lowercased, punctuation and spacing dropped.

    >>> wording("Manual excerpts:\nx\n\nQuestion: [SPEC] Look up the oil, capacity?")
    'look up the oil capacity'
    """
    text = text.rsplit("Question: ", 1)[-1]
    text = re.sub(r"^\s*\[[A-Z]+\]\s*", "", text).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def unanswerable_questions(blocks: Sequence[ManualBlock], count: int, *, seed: int = 42) -> Split3:
    """About ``count`` questions the manual cannot answer, split by subject (a part, a code, a
    connector: all its questions on one side) about 60/15/25 into train/val/test; each answer is
    the refusal naming what was asked.

    Subjects: parts of :data:`OTHER_PARTS` that no block mentions (asked for a spec value, a
    procedure or an explanation), spec rows with one qualifier swapped (front/rear, inlet/
    exhaust... :data:`SWAPS`) when no row and no text has the swapped name, fault codes shaped
    like the manual's that it does not list, and pins beyond the last pin of a connector's
    table.
    """
    if count <= 0:
        return Split3([], [], [])
    text = "\n".join(b.text for b in blocks).lower()
    rng = random.Random(seed + 1)
    templates = template_splits(seed)
    # (group, kind, fields, what was asked); one group's questions stay on one side of the split
    subjects: list[tuple[str, BlockKind, dict[str, str], str]] = []
    absent = [p for p in OTHER_PARTS if p not in text]
    attributes = [a for a in SPEC_ATTRIBUTES if a.split()[-1] in text] or list(SPEC_ATTRIBUTES)
    for part in absent:
        attribute = rng.choice(attributes)
        subjects.append((part, "SPEC", {"x": f"{part} {attribute}"}, f"the {part} {attribute}"))
        kind: BlockKind = rng.choice(("PROCEDURE", "EXPLANATION"))
        subject = f"{part} replacement" if kind == "PROCEDURE" else f"the {part}"
        subjects.append((part, kind, {"x": subject}, subject))
    specs = [f for f in facts(blocks) if f.block.kind == "SPEC"]
    names = {f.fields["n"].lower() for f in specs}
    for fact in specs:
        words = fact.fields["n"].lower().split()
        for pair in SWAPS:
            for old, new in (pair, pair[::-1]):
                if old in words and new not in words:
                    swapped = " ".join(new if w == old else w for w in words)
                    if swapped not in names and swapped not in text:
                        names.add(swapped)
                        fields = {"x": swapped, "n": swapped, "unit": fact.fields["unit"]}
                        subjects.append((swapped, "SPEC", fields, f"the {swapped}"))
    listed = {m.group(0) for m in _DTC.finditer(text.upper())}
    letters = sorted({code[0] for code in listed}) or ["P"]
    for _ in range(max(len(listed) // 2, 6)):
        code = f"{rng.choice(letters)}{rng.randint(0, 3)}{rng.randint(0, 0xFFF):03X}"
        if code not in listed and code not in text.upper():
            listed.add(code)
            subjects.append((code, "TROUBLESHOOTING", {"x": code}, f"fault code {code}"))
    pins: dict[str, int] = {}
    for fact in facts([b for b in blocks if b.kind == "WIRING"]):
        if fact.fields["p"].isdigit():
            name = fact.fields["x"]
            pins[name] = max(pins.get(name, 0), int(fact.fields["p"]))
    for name, last in pins.items():
        pin = str(last + rng.randint(1, 4))
        subjects.append((name, "WIRING", {"x": name, "p": pin}, f"pin {pin} of {name}"))
    groups: dict[str, list] = {}
    for subject in subjects:
        groups.setdefault(subject[0], []).append(subject)
    order = list(groups)
    rng.shuffle(order)
    chosen, taken = [], 0
    for group in order:  # whole groups, until about ``count`` questions
        if taken >= count:
            break
        chosen.append(group)
        taken += len(groups[group])
    n_test = max(1, round(len(chosen) * 0.25))
    n_val = max(1, round(len(chosen) * 0.15)) if len(chosen) > 2 else 0
    side = {
        group: "test" if i < n_test else "val" if i < n_test + n_val else "train"
        for i, group in enumerate(chosen)
    }
    splits: dict[Split, list[QAPair]] = {"train": [], "val": [], "test": []}
    for index, (group, kind, fields, asked) in enumerate(s for g in chosen for s in groups[g]):
        split: Split = side[group]
        pool = templates[f"SPEC:{fields['unit']}" if "unit" in fields else kind]
        template = rng.choice(pool[split])
        splits[split].append(
            QAPair(
                f"none-{index}-{split}",
                "",
                kind,
                split,
                _fill(template, fields),
                refusal(asked),
                answerable=False,
            )
        )
    return Split3(splits["train"], splits["val"], splits["test"])


def raft_examples(
    questions: Sequence[QAPair],
    search: Search,
    blocks: Sequence[ManualBlock],
    *,
    share: float,
    passages: int = 3,
    oracle_share: float = 0.8,
    seed: int = 42,
) -> list[SFTExample]:
    """RAFT-style examples for a seeded ``share`` of ``questions``: the ``passages`` best
    retrieved passages before the question, as serving puts them.

    For an answerable question, ``oracle_share`` of them hold the right block (put in place of
    the last passage, at a random position, when retrieval missed it), the rest only distractors
    (the right block taken out) — the answer stays the reference, so the model learns both to
    read the right passage and to rely on what it learned when retrieval misses. An unanswerable
    question gets what retrieval found and the refusal.
    """
    if not 0 <= share <= 1:
        raise DatasetError(f"data.raft_share={share}: use a value from 0 to 1")
    if share == 0 or not questions:
        return []
    by_id = {b.id: b.text for b in blocks}
    rng = random.Random(seed + 2)
    result = []
    for question in questions:
        if rng.random() >= share:
            continue
        hits = search(question.question, passages + 1)
        texts = dict(hits)
        ids = [block_id for block_id, _ in hits]
        right = question.block_id
        if question.answerable and right in by_id:
            if rng.random() < oracle_share:
                ids = ids[:passages]
                if right not in ids:
                    texts[right] = by_id[right]
                    ids = ids[: passages - 1]
                    ids.insert(rng.randrange(len(ids) + 1), right)
            else:
                ids = [b for b in ids if b != right]
        context = [texts[b] for b in ids[:passages]]
        messages = (
            *manual_messages(question.kind, question.question, context),
            {"role": "assistant", "content": question.answer},
        )
        result.append(SFTExample(messages, question.kind, right or question.id))
    return result


def as_examples(questions: Iterable[QAPair]) -> list[SFTExample]:
    """Closed-book examples (no passages): the task prefix, the question, the answer."""
    return [example(q.kind, q.question, q.answer, q.block_id or q.id) for q in questions]


def kind_counts(blocks: Iterable[ManualBlock]) -> dict[str, int]:
    counts = Counter(b.kind for b in blocks)
    return {kind: counts.get(kind, 0) for kind in BLOCK_KINDS}


def _draw(pool: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """``count`` templates of ``pool``, all distinct up to its size, then round after round."""
    drawn: list[str] = []
    while len(drawn) < count:
        drawn += rng.sample(list(pool), len(pool))
    return drawn[:count]


def _fill(template: str, fields: dict[str, str]) -> str:
    x, n = fields["x"], fields.get("n", fields["x"])
    return template.format(
        x=x, X=x[:1].upper() + x[1:], n=n, N=n[:1].upper() + n[1:], p=fields.get("p", "")
    )


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    return (
        text if first.isupper() or any(c.isdigit() for c in first) else text[:1].lower() + text[1:]
    )
