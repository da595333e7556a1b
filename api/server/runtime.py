"""The models and stores the graphs use, built on first use and shared by all requests.

Loading SmolLM2, the embedder and the damage model takes seconds to minutes, so it happens once
per process, on the first request that needs it (not at app creation: a gunicorn master that
imports the app stays light), or in the background when ``/readyz`` first asks. A failed load
answers 503 (the detail goes to the log) and is tried again by the next request.

Each model has a bounded wait queue (:class:`ModelQueue`): one request uses it (the text model:
up to ``max_batch_size``, decoded together) while at most ``max_waiting_requests`` wait; a request beyond that is answered 503 ``server_overloaded`` with
``Retry-After`` at once, instead of holding a server thread until it times out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from api import composition
from api.server.errors import APIError
from api.server.observability import LOGGER
from api.settings import Settings, env_name

if TYPE_CHECKING:
    from agents.context import AgentContext

ContextFactory = Callable[[Settings], "AgentContext"]
COMPONENTS = (
    "llm",
    "finetuned_adapter",
    "manuals",
    "claims_index",
    "claims_db",
    "damage_model",
    "vision",
)

log = logging.getLogger(LOGGER)
LOAD_FAILED = (
    "the models could not be loaded (the server log has the detail); check TUNEGRAPH_HOME, "
    "TUNEGRAPH_TEXT_MODEL and TUNEGRAPH_TEXT_ADAPTER with `tunegraph config show` and "
    "`tunegraph models list`, or run `tunegraph demo`"
)
QUEUES = ("text", "vision")  # the chat model (chat, agentic reports); the vision-language model
RETRY_AFTER_S = 5


class Ticket:
    """A request's place in a :class:`ModelQueue`; ``release()`` frees it (once)."""

    def __init__(self, queue: ModelQueue) -> None:
        self._queue: ModelQueue | None = queue

    def release(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            queue._leave()


def overloaded(models: str, waiting_limit: int) -> APIError:
    """The 503 for a full queue: ``models`` names the model(s) whose queue is full."""
    return APIError(
        503,
        f"the {models} model is busy with the requests it runs and {waiting_limit} waiting, "
        f"the most allowed ({env_name('max_waiting_requests')}); retry after {RETRY_AFTER_S} s",
        code="server_overloaded",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class ModelQueue:
    """Admission to one model: ``running`` requests use it and at most ``waiting`` wait."""

    def __init__(self, name: str, waiting: int, running: int = 1) -> None:
        self.name, self.waiting_limit, self.running = name, waiting, running
        self._admitted = 0
        self._lock = threading.Lock()

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def full(self) -> bool:
        return self._admitted >= self.running + self.waiting_limit

    def enter(self) -> Ticket:
        """A ticket, or a 503 ``server_overloaded`` (with ``Retry-After``) when the queue is
        full. Never waits."""
        with self._lock:
            if self._admitted >= self.running + self.waiting_limit:
                raise overloaded(self.name, self.waiting_limit)
            self._admitted += 1
        return Ticket(self)

    def _leave(self) -> None:
        with self._lock:
            self._admitted -= 1

    def describe(self) -> dict[str, int]:
        admitted = self._admitted
        return {
            "running": min(admitted, self.running),
            "waiting": max(admitted - self.running, 0),
            "max_waiting": self.waiting_limit,
        }


class ModelRuntime:
    def __init__(self, settings: Settings, factory: ContextFactory) -> None:
        self.settings = settings
        self._factory = factory
        self._context: AgentContext | None = None
        self._lock = threading.Lock()
        self._warming: threading.Thread | None = None
        self._warm_lock = threading.Lock()
        self.load_failed = False  # the last load raised; the next caller tries again
        # until the models load: a batch on the engine, one at a time on transformers
        running = {"text": 1 if settings.engine == "transformers" else settings.max_batch_size}
        self.queues = {
            name: ModelQueue(name, settings.max_waiting_requests, running.get(name, 1))
            for name in QUEUES
        }

    @property
    def loaded(self) -> bool:
        return self._context is not None

    @property
    def warming(self) -> bool:
        return self._warming is not None and self._warming.is_alive()

    def context(self) -> AgentContext:
        """The shared AgentContext, built by the first caller (the others wait for it)."""
        if self._context is None:
            with self._lock:
                if self._context is None:
                    try:
                        self._context = self._factory(self.settings)
                    except Exception as exc:
                        # The detail (paths, library messages) goes to the log, not to callers.
                        log.exception("loading the models failed")
                        self.load_failed = True
                        raise APIError(503, LOAD_FAILED, code="models_unavailable") from exc
                    self.load_failed = False
                    # the text model runs as many at once as its backend decodes together
                    backend = getattr(self._context.llm, "backend", None)
                    self.queues["text"].running = getattr(backend, "max_batch", 1)
        return self._context

    def admit(self, names: Iterable[str]) -> dict[str, Ticket]:
        """A ticket for each of the models ``names`` (see :data:`QUEUES`), all or none: a full
        queue answers 503 at once. Takes no model's lock."""
        tickets: dict[str, Ticket] = {}
        try:
            for name in names:
                tickets[name] = self.queues[name].enter()
        except APIError:
            for ticket in tickets.values():
                ticket.release()
            raise
        return tickets

    @property
    def overloaded(self) -> list[str]:
        """The models whose wait queue is full."""
        return [name for name, queue in self.queues.items() if queue.full]

    def warm_up(self) -> bool:
        """Start loading the models in a background thread; whether this call started it
        (False when they are loaded or a warm-up is already running)."""
        with self._warm_lock:
            if self.loaded or self.warming:
                return False
            self._warming = threading.Thread(target=self._warm, name="warm-up", daemon=True)
            self._warming.start()
            return True

    def _warm(self) -> None:
        # a failure is logged by context() and shown by /readyz through load_failed
        with contextlib.suppress(APIError):
            self.context()

    def describe(self) -> dict[str, Any]:
        """What is configured on disk and, once loaded, what each component is."""
        settings = self.settings
        adapter = composition.text_adapter_dir(settings)
        damage = composition.damage_model_dir(settings)
        vision = composition.vision_lm_dir(settings)
        configured = {
            "llm": settings.text_model,
            "finetuned_adapter": settings.text_adapter if adapter else None,
            "damage_model": str(damage) if damage else None,
            "vision": str(vision) if vision else None,
        }
        loaded = {}
        if self._context is not None:
            for name in COMPONENTS:
                value = getattr(self._context, name)
                loaded[name] = _label(value)
        return {"loaded": self.loaded, "configured": configured, "components": loaded}


def _label(component: Any) -> str | None:
    if component is None or isinstance(component, str):
        return component
    return (
        getattr(component, "model_label", None)
        or getattr(component, "name", None)
        or type(component).__name__
    )
