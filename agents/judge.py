"""Judge rates: each answer labelled correct / incorrect / neutral / contradiction /
invalid_format against its reference answer, as the seed evaluation does with an LLM judge
(``shared/seeds/003``: its table of ``correct_rate`` ... ``invalid_format_rate``).

The labels, for answers to service-manual questions:

- ``correct``: says what the reference says and nothing that conflicts with it. SPEC: the
  first value stated in the reference's unit is the reference value (units normalised:
  ``25 N·m`` = ``25 Nm``, ``2.2 kohm`` = ``2200 ohm``); other kinds: at least ``min_key_terms``
  of the reference's key terms. For a question the manual does not cover (the reference is
  the refusal, :func:`finetune.datasets.refusal`): the refusal.
- ``incorrect``: answers, but not with the reference's content: no value in the reference's
  unit (another unit, or a bare number), a wire colour or identifier of the reference left
  out (connector ``EM-C3``, fault code ``P3702``, ground ``G135``), too few key terms, or any
  answer to a question the manual does not cover.
- ``neutral``: commits to nothing: the refusal, or "I don't know", to a question the manual
  covers (the seed's uncertain or ambiguous answers).
- ``contradiction``: states the opposite of the reference: the same quantity with another
  number; another wire colour, connector, fault code or fuse of the same shape (``EM-C4`` for
  ``EM-C3``); or negates what the reference asserts ("do not reuse" against "reuse"), or
  asserts what it negates.
- ``invalid_format``: nothing to judge: a failed call (no answer), an empty text, no letter or
  digit, or chat-template tokens in the text.

Rates follow the seed's table: ``valid_responses`` are the answers with one of the four
content labels; ``correct_rate`` ... ``contradiction_rate`` are shares of them (they sum to
1), ``invalid_format_rate`` is a share of ``total_responses`` (as the seed's figures add up:
0.51 + 0.42 + 0.07 of 426 valid answers, 0.06 = 25 of 451 invalid). A judge answer that cannot be
parsed is ``unjudged``: counted apart (``unjudged_rate``, of the total), never as a label.

Two judges: :class:`RuleJudge`, transparent rules that run offline (the default), and
:class:`EndpointJudge`, any OpenAI-compatible chat endpoint asked for one label with a reason.
A judge is trusted on numbers only when it agrees with SPEC exact match
(:func:`agreement_with_exact_match`).

Over 400 lines on purpose: the labels' definitions, the rules that apply them, the endpoint
judge's prompt and parser and the rates are one contract, read together when a label is
questioned; the reading of records (JSONL, compare reports) is the last part.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from finetune.datasets import is_refusal
from finetune.metrics import spec_exact_match, values
from ingest.jsonl import parse_lines, read_utf8

Label = Literal["correct", "incorrect", "neutral", "contradiction", "invalid_format"]
LABELS: tuple[str, ...] = get_args(Label)
CONTENT_LABELS = LABELS[:4]  # the labels of a valid response
RULE_JUDGE_NAME = "rule judge (offline)"
MIN_AGREEMENT = 0.9  # below it, a judge's labels on numbers are not trusted

# a unit -> (the unit it is compared in, the factor to it)
_BASE_UNITS = {"kohm": ("ohm", 1000.0), "cm": ("mm", 10.0), "ml": ("l", 0.001)}
_BASE_UNITS |= {"bar": ("kpa", 100.0), "kw": ("w", 1000.0)}
# fmt: off
_UNIT_WORD = {  # unit words finetune.metrics.values does not read -> a unit it reads
    "ohms": "ohm", "kohms": "kohm", "kilohms": "kohm", "kilohm": "kohm", "volts": "V",
    "volt": "V", "amps": "A", "amperes": "A", "millimetres": "mm", "millimeters": "mm",
    "newton metres": "Nm", "newton meters": "Nm", "newton-metres": "Nm", "newton-meters": "Nm",
}
# fmt: on
_UNIT_WORDS = re.compile(r"(\d\s*)(" + "|".join(_UNIT_WORD) + r")\b", re.IGNORECASE)
_HEDGES = (
    "i don't know",
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "not sure",
    "i cannot answer",
    "i can't answer",
    "i am unable",
    "i'm unable",
    "unable to answer",
    "the manual does not",
    "the manual doesn't",
    "there is no information",
)
_NEGATIONS = {"not", "no", "never", "without", "cannot", "nor", "neither"}
# fmt: off
_STOPWORDS = {
    "a", "an", "and", "or", "of", "to", "in", "on", "at", "for", "with", "is", "are", "be",
    "been", "it", "its", "this", "that", "these", "those", "then", "from", "by", "as", "if",
    "any", "each", "into", "until", "there", "their", "which", "what", "when", "how", "can",
    "will", "should", "must", "all", "also", "has", "have", "was", "were", "after", "before",
    "than", "through", "per", "do", "does", "so", "such", "you", "your", "i", "the", "only",
}
_COLOURS = {
    "black", "brown", "red", "orange", "yellow", "green", "blue", "violet", "purple", "grey",
    "gray", "white", "pink",
}
# fmt: on
_IDENTIFIER = re.compile(r"(?=.*[a-z])(?=.*\d)[a-z0-9]+(?:-[a-z0-9]+)*")  # em-c3, p3702, f15
_WORD = re.compile(r"[a-z0-9]+(?:[-/.+][a-z0-9]+)*\+?")
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s+", re.MULTILINE)
_TEMPLATE_TOKEN = re.compile(r"<\|[a-z_]+\|>|</?s>")
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


class JudgeError(RuntimeError):
    """The judge could not answer (an endpoint unreachable or refusing); the message says what
    to check."""


class JudgeInputError(ValueError):
    """Records to judge cannot be read; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class JudgeRecord:
    """One answer to judge. ``answer`` None: the call failed. ``answerable`` None: decided by
    the reference (the refusal means the manual does not cover the question)."""

    question: str
    reference: str
    answer: str | None
    kind: str = "OTHER"
    mode: str = "answers"
    id: str = ""
    answerable: bool | None = None

    @property
    def covered(self) -> bool:
        """Whether the manual holds the answer."""
        return not is_refusal(self.reference) if self.answerable is None else self.answerable


@dataclass(frozen=True)
class Judgement:
    """A judge's verdict on one answer. ``label`` None: the judge's own answer (``raw``) could
    not be parsed; ``reason`` says why. ``confidence``: 1-5 when the judge gives one."""

    label: Label | None
    reason: str
    confidence: int | None = None
    raw: str | None = None


class Judge(Protocol):
    name: str

    def judge(self, record: JudgeRecord) -> Judgement: ...


def format_problem(answer: str | None) -> str | None:
    """Why ``answer`` has no form to judge, or None when it has one.

    >>> format_problem(None), format_problem(" ... "), format_problem("25 Nm")
    ('the call failed: no answer', 'no letter or digit', None)
    """
    if answer is None:
        return "the call failed: no answer"
    if not answer.strip():
        return "empty answer"
    if not re.search(r"[^\W_]", answer):
        return "no letter or digit"
    if _TEMPLATE_TOKEN.search(answer):
        return "chat-template tokens in the answer"
    return None


def _hedges(answer: str) -> bool:
    text = answer.strip().lower().replace("’", "'")
    return is_refusal(answer) or text.startswith(_HEDGES)


def _values(text: str) -> list[tuple[float, str]]:
    """:func:`finetune.metrics.values`, with unit words spelled out or plural read as units.

    >>> _values("1.25 ohms, 12 volts, 25 newton metres")
    [(1.25, 'ohm'), (12.0, 'v'), (25.0, 'nm')]
    """
    return values(_UNIT_WORDS.sub(lambda m: m.group(1) + _UNIT_WORD[m.group(2).lower()], text))


def _normalised(value: tuple[float, str]) -> tuple[float, str]:
    number, unit = value
    base, factor = _BASE_UNITS.get(unit, (unit, 1.0))
    return number * factor, base


def _show(value: tuple[float, str]) -> str:
    number, unit = value
    return f"{number:g} {unit}".strip()


def _words(text: str) -> list[str]:
    """Lower-cased words, ``n't`` spelled ``not``, without the numbers of numbered lists."""
    text = _LIST_MARKER.sub(" ", text.lower().replace("’", "'").replace("n't", " not"))
    return _WORD.findall(text)


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def key_terms(text: str) -> set[str]:
    """The words of ``text`` that carry its content: no stopwords, negations or list numbers;
    plural ``s`` dropped.

    >>> sorted(key_terms("1. Remove the 4 bolts (10 mm) and the cover."))
    ['10', '4', 'bolt', 'cover', 'mm', 'remove']
    """
    return {_stem(w) for w in _words(text) if w not in _STOPWORDS and w not in _NEGATIONS}


def _polarity(text: str) -> tuple[set[str], set[str]]:
    """(terms asserted, terms negated): a negated term is the first key term within three
    words after a negation."""
    words = _words(text)
    negated: set[str] = set()
    for i, word in enumerate(words):
        if word in _NEGATIONS:
            following = [w for w in words[i + 1 : i + 4] if w not in _STOPWORDS]
            if following and following[0] not in _NEGATIONS:
                negated.add(_stem(following[0]))
    return key_terms(text) - negated, negated


def _shape(word: str) -> str:
    return re.sub(r"\d", "9", word)


def _conflicting_names(answer: str, reference: str) -> str | None:
    """Why the answer names another thing of a kind the reference names, or None: another wire
    colour (where the reference gives one), or another identifier of the same shape (a
    connector ``EM-C4`` for ``EM-C3``, a fault code ``P3703`` for ``P3702``, a fuse ``F16``).

    >>> _conflicting_names("It is the red wire.", "Pin 2 is signal, black wire.")
    "names the colour 'red' where the reference names 'black'"
    """
    ours, theirs = set(_words(answer)), set(_words(reference))
    colours = {w for w in theirs if set(w.split("/")) <= _COLOURS}
    stated = {w for w in ours if set(w.split("/")) <= _COLOURS}
    if colours and stated and not colours & stated:
        return f"names the colour {min(stated)!r} where the reference names {min(colours)!r}"
    names = {w for w in theirs if _IDENTIFIER.fullmatch(w)}
    for word in sorted(w for w in ours if _IDENTIFIER.fullmatch(w) and w not in names):
        same_shape = sorted(n for n in names if _shape(n) == _shape(word))
        if same_shape:
            return f"names {word!r} where the reference names {same_shape[0]!r}"
    return None


def _missing_names(answer: str, reference: str) -> str | None:
    """The first wire colour or identifier the reference names and the answer does not.

    >>> _missing_names("Pin 3 of BO-C4 is ground.", "Pin 3 of BO-C4 is ground G135, red wire.")
    'g135'
    """
    ours = set(_words(answer))
    names = sorted(
        w
        for w in set(_words(reference))
        if _IDENTIFIER.fullmatch(w) or set(w.split("/")) <= _COLOURS
    )
    return next((n for n in names if n not in ours), None)


@dataclass(frozen=True)
class RuleJudge:
    """Transparent rules (the module's docstring has each label's): numbers with their units
    (:func:`finetune.metrics.values`, normalised), negations, and the share of the reference's
    key terms the answer states (``min_key_terms``). Runs offline; gives no confidence."""

    min_key_terms: float = 0.5
    name: str = RULE_JUDGE_NAME

    def judge(self, record: JudgeRecord) -> Judgement:
        """
        >>> judge = RuleJudge()
        >>> judge.judge(JudgeRecord("Torque?", "25 N·m", "Tighten it to 25 Nm.", "SPEC")).label
        'correct'
        >>> judge.judge(JudgeRecord("Torque?", "25 Nm", "It is 30 Nm.", "SPEC")).reason
        'states 30 nm where the reference states 25 nm'
        """
        problem = format_problem(record.answer)
        if problem is not None:
            return Judgement("invalid_format", problem)
        answer = record.answer or ""
        if not record.covered:
            if is_refusal(answer):
                return Judgement("correct", "says the manual does not cover it, as the reference")
            if _hedges(answer):
                return Judgement("neutral", "says it does not know; the manual does not cover it")
            return Judgement("incorrect", "answers a question the manual does not cover")
        if _hedges(answer):
            return Judgement("neutral", "commits to no answer to a question the manual covers")
        expected = _values(record.reference)
        if record.kind == "SPEC" and expected:
            return self._spec(answer, _normalised(expected[0]))
        return self._text(answer, record.reference)

    def _spec(self, answer: str, expected: tuple[float, str]) -> Judgement:
        number, unit = expected
        stated = [_normalised(v) for v in _values(answer)]
        same_unit = [v for v in stated if v[1] == unit or not unit]
        if same_unit:
            if math.isclose(same_unit[0][0], number, rel_tol=1e-9):
                return Judgement("correct", f"states the reference value {_show(expected)}")
            return Judgement(
                "contradiction",
                f"states {_show(same_unit[0])} where the reference states {_show(expected)}",
            )
        if any(not u and math.isclose(n, number, rel_tol=1e-9) for n, u in stated):
            return Judgement("incorrect", f"states {number:g} without its unit {unit}")
        return Judgement("incorrect", f"states no value in {unit}")

    def _text(self, answer: str, reference: str) -> Judgement:
        expected: dict[str, set[float]] = {}
        for number, unit in map(_normalised, _values(reference)):
            if unit:
                expected.setdefault(unit, set()).add(number)
        for value in map(_normalised, _values(answer)):
            known = expected.get(value[1])
            if known and not any(math.isclose(value[0], n, rel_tol=1e-9) for n in known):
                shown = " or ".join(_show((n, value[1])) for n in sorted(known))
                return Judgement(
                    "contradiction", f"states {_show(value)} where the reference states {shown}"
                )
        conflict = _conflicting_names(answer, reference)
        if conflict:
            return Judgement("contradiction", conflict)
        (said, unsaid), (asserted, negated) = _polarity(answer), _polarity(reference)
        flipped = sorted((negated & said) - unsaid) or sorted((unsaid & asserted) - negated)
        if flipped:
            return Judgement(
                "contradiction", f"negation differs from the reference: {flipped[0]!r}"
            )
        missing = _missing_names(answer, reference)
        if missing:
            return Judgement("incorrect", f"does not name {missing!r}, as the reference does")
        terms = key_terms(reference)
        if not terms:
            same = answer.strip().lower() == reference.strip().lower()
            return Judgement("correct" if same else "incorrect", "the reference has no key terms")
        share = len(terms & key_terms(answer)) / len(terms)
        label: Label = "correct" if share >= self.min_key_terms else "incorrect"
        return Judgement(label, f"states {share:.0%} of the reference's key terms")


JUDGE_PROMPT = """You grade an answer to a question about a vehicle service manual against the \
reference answer from the manual. Choose exactly one label:
- correct: the answer says what the reference says (same values with the same units, same \
facts), in any words, and nothing that conflicts with it. If the reference says the manual does \
not cover the question, saying so is correct.
- incorrect: the answer gives an answer, but not the reference's content (a wrong or missing \
value or unit, missing facts, or an answer to a question the manual does not cover).
- neutral: the answer commits to nothing (it says it does not know, or that the manual does not \
cover a question the reference answers).
- contradiction: the answer states the opposite of the reference (the same quantity with \
another number, or negates what the reference states).
- invalid_format: the answer is not a readable answer (empty, garbled, markup).

Question ({kind}): {question}
Reference answer: {reference}
Answer to grade: {answer}

Reply with only a JSON object, nothing else: {{"label": "<one label>", "reason": "<one \
sentence>", "confidence": <1 to 5>}}"""


def judge_messages(record: JudgeRecord) -> list[dict[str, str]]:
    """The chat messages that ask an endpoint to judge ``record``: one user turn (servers that
    drop system prompts still see the instructions)."""
    prompt = JUDGE_PROMPT.format(
        kind=record.kind,
        question=record.question,
        reference=record.reference,
        answer=record.answer,
    )
    return [{"role": "user", "content": prompt}]


def parse_judgement(text: str) -> Judgement:
    """A judge endpoint's reply, parsed strictly: one JSON object (a ```json fence around it is
    allowed) with a ``label`` of :data:`LABELS` (case, ``-`` and spaces forgiven), a string
    ``reason`` and, optionally, an integer ``confidence`` from 1 to 5 (any other is dropped).
    Anything else is an unparsed judgement (label None), never a label.

    >>> parse_judgement('{"label": "Invalid-format", "reason": "empty", "confidence": 4}')
    Judgement(label='invalid_format', reason='empty', confidence=4, raw=None)
    >>> parse_judgement('The answer is correct.').label is None
    True
    """
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        data = json.loads(body)
    except ValueError:
        return Judgement(None, "the judge's answer is not a JSON object", raw=text)
    if not isinstance(data, dict):
        return Judgement(None, "the judge's answer is not a JSON object", raw=text)
    label = data.get("label")
    if isinstance(label, str):
        label = label.strip().lower().replace("-", "_").replace(" ", "_")
    if label not in LABELS:
        return Judgement(None, f"the judge gave no label of {', '.join(LABELS)}", raw=text)
    reason = data.get("reason")
    if not isinstance(reason, str):
        return Judgement(None, "the judge gave no reason", raw=text)
    confidence = data.get("confidence")
    valid = (
        isinstance(confidence, int) and not isinstance(confidence, bool) and 1 <= confidence <= 5
    )
    return Judgement(label, reason.strip(), confidence if valid else None)  # type: ignore[arg-type]


class EndpointJudge:
    """An LLM judge behind any OpenAI-compatible chat endpoint (``backend``: an
    :class:`agents.backends.openai_compat.OpenAICompatibleBackend`, or any backend). Asks
    greedily for one label with a reason (:data:`JUDGE_PROMPT`); an answer with no form to
    judge (:func:`format_problem`) is ``invalid_format`` without a call."""

    def __init__(self, backend: Any, *, max_tokens: int = 200, where: str = "") -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.name = f"{backend.name} at {where}" if where else backend.name

    @classmethod
    def at(
        cls,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        transport: Any = None,
    ) -> EndpointJudge:
        """The judge ``model`` at ``base_url`` (up to ``/v1``, e.g. ``http://host:8000/v1``)."""
        from agents.backends.openai_compat import OpenAICompatibleBackend

        backend = OpenAICompatibleBackend(
            base_url, model, api_key=api_key, timeout_s=timeout_s, transport=transport
        )
        return cls(backend, where=backend.base_url)

    def judge(self, record: JudgeRecord) -> Judgement:
        from agents.backends.base import ChatRequest, GenerationError

        problem = format_problem(record.answer)
        if problem is not None:
            return Judgement("invalid_format", problem)
        request = ChatRequest(judge_messages(record), max_tokens=self.max_tokens)
        try:
            text = "".join(event.text for event in self.backend.stream(request))
        except GenerationError as exc:
            raise JudgeError(f"the judge {self.name} failed: {exc}") from None
        return parse_judgement(text)


@dataclass(frozen=True)
class Rates:
    """The seed's judge table for one group of answers (rates rounded to 4 places; None when
    there is nothing to divide by)."""

    total_responses: int
    valid_responses: int
    correct_rate: float | None
    incorrect_rate: float | None
    neutral_rate: float | None
    contradiction_rate: float | None
    invalid_format_rate: float | None
    unjudged: int
    unjudged_rate: float | None
    average_confidence: float | None
    confidence_completeness: float | None

    @classmethod
    def of(cls, judgements: Sequence[Judgement]) -> Rates:
        """
        >>> r = Rates.of([Judgement("correct", ""), Judgement("neutral", ""),
        ...               Judgement("invalid_format", ""), Judgement(None, "")])
        >>> r.valid_responses, r.correct_rate, r.invalid_format_rate, r.unjudged_rate
        (2, 0.5, 0.25, 0.25)
        """
        total = len(judgements)
        valid = [j for j in judgements if j.label in CONTENT_LABELS]
        confident = [j.confidence for j in valid if j.confidence is not None]

        def share(count: int, of: int) -> float | None:
            return round(count / of, 4) if of else None

        def rate(label: str) -> float | None:
            return share(sum(j.label == label for j in valid), len(valid))

        unjudged = sum(j.label is None for j in judgements)
        return cls(
            total,
            len(valid),
            *(rate(label) for label in CONTENT_LABELS),
            share(sum(j.label == "invalid_format" for j in judgements), total),
            unjudged,
            share(unjudged, total),
            round(sum(confident) / len(confident), 2) if confident else None,
            share(len(confident), len(valid)),
        )


@dataclass(frozen=True)
class Agreement:
    """The judge against SPEC exact match (:func:`finetune.metrics.spec_exact_match`) on the
    SPEC answers it labelled, of questions the manual covers: the share where "correct" and an
    exact match coincide. ``judge_only``: judged correct without an exact match;
    ``exact_only``: an exact match the judge did not call correct (``mode/id`` each)."""

    n: int
    agree: int
    judge_only: tuple[str, ...] = ()
    exact_only: tuple[str, ...] = ()
    min_agreement: float = MIN_AGREEMENT

    @property
    def rate(self) -> float | None:
        return round(self.agree / self.n, 4) if self.n else None

    @property
    def trusted(self) -> bool | None:
        """Whether the judge agrees with exact match often enough to be trusted on numbers
        (None: no SPEC answer to tell)."""
        return None if self.rate is None else self.rate >= self.min_agreement

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate, "trusted": self.trusted}


def agreement_with_exact_match(
    records: Sequence[JudgeRecord],
    judgements: Sequence[Judgement],
    min_agreement: float = MIN_AGREEMENT,
) -> Agreement:
    """How often ``judgements`` of SPEC answers agree with exact match.

    >>> records = [JudgeRecord("q", "25 Nm", a, "SPEC", id=str(i))
    ...            for i, a in enumerate(["25 Nm", "Use 25 N·m", "2 bolts, 25 Nm", "30 Nm"])]
    >>> agreement = agreement_with_exact_match(records, [RuleJudge().judge(r) for r in records])
    >>> agreement.rate, agreement.judge_only
    (0.75, ('answers/2',))
    """
    agree, judge_only, exact_only = 0, [], []
    for record, judgement in zip(records, judgements, strict=True):
        if record.kind != "SPEC" or not record.covered or judgement.label is None:
            continue
        exact = spec_exact_match(record.answer or "", record.reference)
        correct = judgement.label == "correct"
        agree += exact == correct
        if correct and not exact:
            judge_only.append(f"{record.mode}/{record.id}")
        elif exact and not correct:
            exact_only.append(f"{record.mode}/{record.id}")
    n = agree + len(judge_only) + len(exact_only)
    return Agreement(n, agree, tuple(judge_only), tuple(exact_only), min_agreement)


@dataclass
class JudgeReport:
    """Judge rates per mode and per mode and kind, and the judge's agreement with SPEC exact
    match. ``judgements`` line up with the records judged."""

    judge: str
    per_mode: dict[str, Rates]
    per_kind: dict[str, dict[str, Rates]]
    agreement: Agreement
    records: list[JudgeRecord] = field(default_factory=list)
    judgements: list[Judgement] = field(default_factory=list)

    def to_dict(self, with_items: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "judge": self.judge,
            "per_mode": {m: asdict(r) for m, r in self.per_mode.items()},
            "per_kind": {
                m: {k: asdict(r) for k, r in kinds.items()} for m, kinds in self.per_kind.items()
            },
            "agreement_with_exact_match": self.agreement.to_dict(),
        }
        if with_items:
            data["items"] = [
                {"mode": r.mode, "id": r.id, "kind": r.kind, **asdict(j)}
                for r, j in zip(self.records, self.judgements, strict=True)
            ]
        return data


def judge_rates(
    records: Sequence[JudgeRecord],
    judge: Judge,
    *,
    min_agreement: float = MIN_AGREEMENT,
    progress: Callable[[Iterable[JudgeRecord]], Iterable[JudgeRecord]] | None = None,
) -> JudgeReport:
    """Judge every record (in order; ``progress`` wraps the loop, e.g. tqdm) and tabulate the
    rates per mode and per mode and kind, as the seed's table, with the agreement with SPEC
    exact match. Raises :class:`JudgeError` when the judge cannot answer.

    >>> report = judge_rates([JudgeRecord("q", "25 Nm", "25 Nm", "SPEC", "rag")], RuleJudge())
    >>> report.per_mode["rag"].correct_rate, report.agreement.rate
    (1.0, 1.0)
    """
    judgements = [judge.judge(r) for r in (progress or iter)(records)]
    by_mode: dict[str, list[Judgement]] = {}
    by_kind: dict[str, dict[str, list[Judgement]]] = {}
    for record, judgement in zip(records, judgements, strict=True):
        by_mode.setdefault(record.mode, []).append(judgement)
        by_kind.setdefault(record.mode, {}).setdefault(record.kind, []).append(judgement)
    return JudgeReport(
        judge.name,
        {mode: Rates.of(js) for mode, js in by_mode.items()},
        {m: {k: Rates.of(js) for k, js in sorted(kinds.items())} for m, kinds in by_kind.items()},
        agreement_with_exact_match(records, judgements, min_agreement),
        list(records),
        judgements,
    )


# ---- reading the answers to judge -----------------------------------------------------------


def read_records(path: Path) -> list[JudgeRecord]:
    """Records from a JSONL file, one answer a line: ``question``, ``reference`` (or ``gold``:
    the reference answer), ``answer`` (null: the call failed); optional ``kind`` (SPEC,
    PROCEDURE, ...), ``mode`` (the chat mode or model that answered), ``id``, ``answerable``.
    Every bad line is reported at once, with its number."""
    records, problems = [], []
    for number, data, problem in parse_lines(read_utf8(path, JudgeInputError)):
        if problem is None:
            try:
                records.append(_record(data, f"line {number}"))
                continue
            except ValueError as exc:
                problem = str(exc)
        problems.append(f"{path}, line {number}: {problem}")
    if problems:
        raise JudgeInputError("; ".join(problems[:5]) + _more(problems))
    if not records:
        raise JudgeInputError(f"{path}: no records; write one JSON object a line")
    return records


def _more(problems: list[str]) -> str:
    return f" (and {len(problems) - 5} more bad lines)" if len(problems) > 5 else ""


def _record(data: Any, where: str) -> JudgeRecord:
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    reference = data.get("reference", data.get("gold"))
    missing = [
        k
        for k, v in (("question", data.get("question")), ("reference", reference))
        if not isinstance(v, str)
    ]
    if "answer" not in data:
        missing.append("answer")
    if missing:
        raise ValueError(
            f"bad or missing {', '.join(missing)}: give question and reference (or gold) as "
            "strings, answer as a string (null: the call failed)"
        )
    answer = data["answer"]
    if answer is not None and not isinstance(answer, str):
        raise ValueError("answer must be a string or null")
    answerable = data.get("answerable")
    if answerable is not None and not isinstance(answerable, bool):
        raise ValueError("answerable must be true or false")
    return JudgeRecord(
        question=data["question"],
        reference=reference,
        answer=answer,
        kind=str(data.get("kind") or "OTHER"),
        mode=str(data.get("mode") or "answers"),
        id=str(data.get("id") or where),
        answerable=answerable,
    )


def report_records(report: dict[str, Any], questions: Sequence[Any] = ()) -> list[JudgeRecord]:
    """The chat answers of a ``tunegraph compare`` report (its ``report.json``): the rows of
    ``items.chat[mode]``, each an ``item`` (the question's id) and its ``output`` (None: the call
    failed). A row's ``question``, ``reference`` and ``kind`` come with it when the report holds
    them, else from ``questions`` (:class:`ingest.records.QAPair`, the file the comparison
    asked)."""
    chat = report.get("items", {}).get("chat") if isinstance(report, dict) else None
    if not isinstance(chat, dict):
        raise JudgeInputError("not a `tunegraph compare` report: it has no items.chat")
    by_id = {q.id: q for q in questions}
    records, unknown = [], []
    for mode, rows in chat.items():
        for row in rows:
            item, answer = str(row.get("item")), row.get("output")
            if isinstance(row.get("question"), str) and isinstance(row.get("reference"), str):
                kind = str(row.get("kind") or "OTHER")
                answerable = row.get("answerable")
                answerable = answerable if isinstance(answerable, bool) else None
                records.append(
                    JudgeRecord(
                        row["question"], row["reference"], answer, kind, mode, item, answerable
                    )
                )
            elif item in by_id:
                q = by_id[item]
                records.append(
                    JudgeRecord(q.question, q.answer, answer, q.kind, mode, q.id, q.answerable)
                )
            else:
                unknown.append(item)
    if unknown:
        raise JudgeInputError(
            f"questions {', '.join(sorted(set(unknown))[:5])} of the report are not in the "
            "questions file; pass --questions with the test split the comparison asked"
        )
    if not records:
        raise JudgeInputError("the report holds no chat answers: run compare with --questions N")
    return records


def load_records(path: Path, questions: Path | None = None) -> list[JudgeRecord]:
    """The answers in ``path``: a compare ``report.json`` (:func:`report_records`; its questions
    from ``questions``, a QA JSONL, where the report does not hold them) or a JSONL of records
    (:func:`read_records`)."""
    from ingest.records import QAPair

    text = read_utf8(path, JudgeInputError)
    try:
        report = json.loads(text)
    except ValueError:
        report = None  # JSON Lines (or a broken report: read_records names the line)
    if not isinstance(report, dict) or "items" not in report:
        return read_records(path)
    pairs, problems = [], []
    lines = parse_lines(read_utf8(questions, JudgeInputError)) if questions else iter(())
    for number, data, problem in lines:
        try:
            if problem is None:
                pairs.append(QAPair(**data))
                continue
        except TypeError as exc:
            problem = f"not a question ({exc})"
        problems.append(f"{questions}, line {number}: {problem}")
    if problems:
        raise JudgeInputError("; ".join(problems[:5]) + _more(problems))
    return report_records(report, pairs)
