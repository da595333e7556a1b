"""One ``POST /v1/assessments`` request's approaches, run side by side, and its answer.

:class:`Assessing` takes a place in each wanted approach's model queue (a full queue answers 503
``server_overloaded`` before anything runs), then hands every approach to the app's assessment
pool at once; each gives its place back when it ends, even one that outlives the request. :meth:`Assessing.each` gives each approach's
:class:`Outcome` as it finishes; :meth:`Assessing.result` is the JSON answer once all have;
:meth:`Assessing.events` the same as server-sent events, for ``stream=true``:

- ``assessment`` (one approach's Assessment, notes, time and cited manual passages) or ``error``
  (one approach's error) for each approach, in the order they finish;
- ``agreement``, once both approaches succeeded (:func:`agents.compare.agreement.agreement`);
- ``done``, last: the status and body that the answer without ``stream`` would have had.

Each event is ``event: <type>`` and ``data: <JSON>`` whose ``type`` repeats the event's name.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from api.server.errors import APIError, internal_error
from api.server.generation import api_error
from api.server.services import Services

if TYPE_CHECKING:
    from ingest.assessment import Assessment, ClaimContext
    from ingest.images import Photo

APPROACHES = ("finetuned", "agentic")
QUEUE = {"finetuned": "vision", "agentic": "text"}  # the model queue each approach waits in
CHOICES = (*APPROACHES, "both")
EVENTS = ("assessment", "error", "agreement", "done")
VISION_MISSING = (
    "no fine-tuned vision model is trained: run "
    "`tunegraph finetune vision --config configs/vision/vlm_quick.yaml`"
)


@dataclass
class Outcome:
    """One approach's end: its Assessment (with the problems it went on without, its time in ms
    and the text of the manual passages it cites, by id), or its error."""

    approach: str
    assessment: Assessment | None = None
    notes: list[str] = field(default_factory=list)
    ms: float = 0.0
    passages: dict[str, str] = field(default_factory=dict)
    error: APIError | None = None


class Assessing:
    """The approaches of one request (``approach``: one of :data:`CHOICES`), started in the
    pool at once."""

    def __init__(
        self,
        s: Services,
        approach: str,
        images: list[Photo],
        claim: ClaimContext | None,
        request_id: str | None,
    ) -> None:
        self.s, self.approach, self.request_id = s, approach, request_id
        self.id = f"asmt_{uuid.uuid4().hex}"
        self.wanted = APPROACHES if approach == "both" else (approach,)
        # set once the answer is given or its client went away: the agentic report model then
        # stops at its next token instead of writing for no one
        self.cancel = threading.Event()
        self.outcomes: dict[str, Outcome] = {}
        self._futures: dict[Future, str] = {}
        tickets = s.runtime.admit(QUEUE[name] for name in self.wanted)
        try:
            context = s.runtime.context()
            self.started = self.finished = time.perf_counter()
            self.deadline = time.monotonic() + s.settings.generation_timeout_s
            for name in self.wanted:
                future = s.pool.submit(
                    _run, name, images, claim, context, self.deadline, self.cancel
                )
                ticket = tickets.pop(QUEUE[name])
                future.add_done_callback(lambda _future, t=ticket: t.release())
                self._futures[future] = name
        finally:
            for ticket in tickets.values():  # those not handed to a run in the pool
                ticket.release()

    def each(self) -> Iterator[Outcome]:
        """Each approach's outcome not yet given, as it finishes. One still running a second
        after the deadline (the fine-tuned vision model has no deadline of its own; the agentic
        report model stops itself at it) is a timeout."""
        pending = {f: name for f, name in self._futures.items() if name not in self.outcomes}
        try:
            for future in as_completed(pending, timeout=self._left_s() + 1):
                yield self._record(self._outcome(pending.pop(future), future))
        except FutureTimeout:
            from agents.chat_model import GenerationTimeout

            late = GenerationTimeout("the assessment took longer than the request timeout")
            for future, name in pending.items():
                future.cancel()  # still queued behind other requests: never start it
                error = api_error(late, self.s.settings.generation_timeout_s)
                yield self._record(Outcome(name, error=error))

    def agreement(self) -> dict[str, Any] | None:
        """Field-by-field agreement of the two Assessments, once both approaches succeeded."""
        finetuned, agentic = self.outcomes.get("finetuned"), self.outcomes.get("agentic")
        if not (finetuned and agentic and finetuned.assessment and agentic.assessment):
            return None
        from agents.compare.agreement import agreement

        return agreement(finetuned.assessment, agentic.assessment)

    def result(self) -> dict[str, Any]:
        """The JSON answer, once every approach has finished: each one's Assessment or error. When
        none succeeded, raises the failure itself (the agentic one first with ``both``)."""
        for _ in self.each():
            pass
        done = [self.outcomes[name] for name in self.wanted]
        results = {o.approach: o for o in done if o.assessment is not None}
        failures = {o.approach: o.error for o in done if o.error is not None}
        if not results:
            raise next(failures[name] for name in ("agentic", "finetuned") if name in failures)
        return {
            "id": self.id,
            "object": "assessment",
            "approach": self.approach,
            "assessments": {
                name: o.assessment.model_dump(mode="json") for name, o in results.items()
            },
            "errors": {name: error.body()["error"] for name, error in failures.items()},
            "notes": {name: o.notes for name, o in results.items() if o.notes},
            "passages": {key: text for o in results.values() for key, text in o.passages.items()},
            "agreement": self.agreement(),
            "timings_ms": {name: o.ms for name, o in results.items()}
            | {"total": round((self.finished - self.started) * 1000, 1)},
        }

    def events(self) -> Iterator[str]:
        """The server-sent events (see the module's description). Closing this generator (the
        client went away) stops what still runs."""
        try:
            for outcome in self.each():
                if outcome.assessment is None:
                    error = outcome.error.body()["error"]
                    yield _event("error", approach=outcome.approach, error=error)
                    continue
                yield _event(
                    "assessment",
                    approach=outcome.approach,
                    assessment=outcome.assessment.model_dump(mode="json"),
                    notes=outcome.notes,
                    ms=outcome.ms,
                    passages=outcome.passages,
                )
            agreement = self.agreement()
            if agreement is not None:
                yield _event("agreement", agreement=agreement)
            try:
                status, body = 200, self.result()
            except APIError as error:
                status, body = error.status, error.body()
        except Exception:
            self.s.log.exception("assessment stream failed", extra={"request_id": self.request_id})
            error = internal_error(self.request_id)
            status, body = error.status, error.body()
        finally:
            self.close()
        yield _event("done", status=status, body=body)

    def close(self) -> None:
        """Stop the runs still going (at the report model's next token)."""
        self.cancel.set()

    def _left_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _record(self, outcome: Outcome) -> Outcome:
        self.outcomes[outcome.approach] = outcome
        self.finished = time.perf_counter()
        return outcome

    def _outcome(self, name: str, future: Future) -> Outcome:
        try:
            return future.result()
        except Exception as exc:
            error = api_error(exc, self.s.settings.generation_timeout_s)
            if error is None:
                self.s.log.exception("assessment failed", extra={"request_id": self.request_id})
                error = internal_error(self.request_id)
            return Outcome(name, error=error)


def _run(
    name: str,
    images: list[Photo],
    claim: ClaimContext | None,
    context: Any,
    deadline: float,
    cancel: threading.Event,
) -> Outcome:
    """One approach's graph run (in the pool)."""
    from agents.chat_model import request_model
    from agents.graphs import assess_agentic, assess_finetuned

    started = time.perf_counter()
    if name == "finetuned":
        if context.vision is None:
            raise APIError(503, VISION_MISSING, code="model_not_trained")
        graph = assess_finetuned.graph
    else:
        graph = assess_agentic.graph
        if context.llm is not None:
            context = dataclasses.replace(context, llm=request_model(context.llm, deadline, cancel))
    state = graph.invoke({"images": images, "claim": claim}, context=context)
    assessment = state["assessment"]
    cited = {e.id for e in assessment.evidence if e.source == "manual"}
    return Outcome(
        name,
        assessment,
        notes=state.get("errors", []),
        ms=round((time.perf_counter() - started) * 1000, 1),
        # the retrieved blocks' text, so that a reader can see what each citation says
        passages={hit["id"]: hit["text"] for hit in state.get("manual", []) if hit["id"] in cited},
    )


def _event(kind: str, **data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"
