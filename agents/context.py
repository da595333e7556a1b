"""What a graph run needs from outside, passed as LangGraph's runtime context.

The composition root (``api``) builds these objects from settings; tests pass fakes. Graphs never
load a model or open a file themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ingest.assessment import ClaimContext, Damage
from ingest.images import Photo


class DamageModel(Protocol):
    """The agentic approach's vision tool: damages seen in a set of photos (each decoded once:
    read ``photo.image``)."""

    name: str

    def detect(self, images: Sequence[Photo]) -> list[Damage]: ...


class VisionAssessor(Protocol):
    """The fine-tuned approach: one call of a vision-language model that answers with the
    Assessment's photo fields: the JSON text it wrote, or that JSON already read (a model that
    merges several photos' answers reads them to merge them); the graph validates it once.
    ``feedback`` explains why the previous answer was rejected."""

    name: str

    def assess(
        self, images: Sequence[Photo], claim: ClaimContext | None, feedback: str | None = None
    ) -> str | dict[str, Any]: ...


@dataclass
class AgentContext:
    """Dependencies of the graphs; each graph says which of them it needs when one is missing.

    ``llm`` is a :class:`agents.chat_model.LocalChatModel` (any chat model with tools and
    structured output works); ``finetuned_adapter`` names its fine-tuned LoRA adapter.
    ``manuals`` and ``claims_index`` are ``rag.retrieval.Retriever`` s; ``claims_db`` a
    ``rag.claims_db.ClaimsDatabase``; ``open_photo`` reads a claims-history photo by its path.
    """

    llm: Any = None
    finetuned_adapter: str | None = None
    manuals: Any = None
    claims_db: Any = None
    claims_index: Any = None
    damage_model: DamageModel | None = None
    vision: VisionAssessor | None = None
    open_photo: Callable[[str], bytes] | None = None
    manual_k: int = 3
    # retrieval whose best passage scores below this (Retriever.support) does not answer the
    # question: the chat modes say the manual does not cover it. None: never.
    min_support: float | None = None
    max_tool_rounds: int = 3
    # who picks the service-chat agent's tools: the regex rules, the model itself, or "auto":
    # the model when its fine-tuned adapter was trained for tool use (``tool_adapter``), else
    # the rules (an untrained small model's tool arguments are mostly noise)
    router: Literal["auto", "rules", "model"] = "auto"
    tool_adapter: bool = False  # the fine-tuned adapter's data card lists tool-use examples
    photo_hashes: dict[str, int] = field(default_factory=dict)  # cache: path -> dHash

    def available(self, name: str) -> bool:
        """Whether the dependency ``name`` is there; a retriever counts once its index holds
        something (asked each time: an index ingested while the server runs is used at once)."""
        value = getattr(self, name)
        if value is None:
            return False
        store = getattr(value, "store", None)
        try:
            return store is None or store.count() > 0
        except Exception:  # a remote index that does not answer: its search will say so
            return True

    def require(self, graph: str, *names: str) -> None:
        missing = [n for n in names if not self.available(n)]
        if missing:
            raise MissingDependencyError(
                f"the {graph} graph needs {', '.join(missing)} in its AgentContext"
            )

    def agent_router(self) -> Literal["rules", "model"]:
        """The router the service-chat agent runs (``router`` with "auto" resolved).

        >>> tools = AgentContext(finetuned_adapter="ft", tool_adapter=True)
        >>> AgentContext().agent_router(), tools.agent_router()
        ('rules', 'model')
        """
        if self.router != "auto":
            return self.router
        return "model" if self.tool_adapter and self.finetuned_adapter is not None else "rules"

    def chat_model(self, finetuned: bool) -> Any:
        if not finetuned:
            return self.llm.with_adapter(None) if hasattr(self.llm, "with_adapter") else self.llm
        if self.finetuned_adapter is None:
            raise MissingDependencyError(
                "no fine-tuned adapter is configured: train one with `tunegraph finetune text`"
            )
        return self.llm.with_adapter(self.finetuned_adapter)


class MissingDependencyError(ValueError):
    """A graph was run without something it needs; the message names it."""
