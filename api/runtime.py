"""The models and stores the graphs use, built on first use and shared by all requests.

Loading SmolLM2, the embedder and the damage model takes seconds to minutes, so it happens once
per process, on the first request that needs it (not at app creation: a gunicorn master that
imports the app stays light). A failed load answers 503 and is tried again by the next request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from api import composition
from api.errors import APIError
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

log = logging.getLogger("tunegraph.api")


class ModelRuntime:
    def __init__(self, settings: Settings, factory: ContextFactory) -> None:
        self.settings = settings
        self._factory = factory
        self._context: AgentContext | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._context is not None

    def context(self) -> AgentContext:
        """The shared AgentContext, built by the first caller (the others wait for it)."""
        if self._context is None:
            with self._lock:
                if self._context is None:
                    try:
                        self._context = self._factory(self.settings)
                    except Exception as exc:
                        log.exception("loading the models failed")
                        raise APIError(
                            503,
                            f"the models could not be loaded ({type(exc).__name__}: {exc}); "
                            "check the settings with `tunegraph config show`",
                            code="models_unavailable",
                        ) from exc
        return self._context

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
