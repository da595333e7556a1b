"""The models and stores the graphs use, built on first use and shared by all requests.

Loading SmolLM2, the embedder and the damage model takes seconds to minutes, so it happens once
per process, on the first request that needs it (not at app creation: a gunicorn master that
imports the app stays light), or in the background when ``/readyz`` first asks. A failed load
answers 503 (the detail goes to the log) and is tried again by the next request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from api import composition
from api.server.errors import APIError
from api.server.observability import LOGGER
from api.settings import Settings

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


class ModelRuntime:
    def __init__(self, settings: Settings, factory: ContextFactory) -> None:
        self.settings = settings
        self._factory = factory
        self._context: AgentContext | None = None
        self._lock = threading.Lock()
        self._warming: threading.Thread | None = None
        self._warm_lock = threading.Lock()
        self.load_failed = False  # the last load raised; the next caller tries again

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
        return self._context

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
