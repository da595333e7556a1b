"""Effective settings: defaults overridden by ``TUNEGRAPH_*`` environment variables.

This is the only module that reads the environment. Everything below ``api/`` receives
typed config objects built from a :class:`Settings` (see ``model_store_config``).

Over 400 lines on purpose: it is the one table of every setting, each field with the help that
``tunegraph config show`` prints, and the validation that names the variable to fix; one place to
look a setting up.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ingest.images import MAX_PIXELS

ENV_PREFIX = "TUNEGRAPH_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DEVICES = ("auto", "cpu", "cuda")
_VECTOR_STORES = ("lancedb", "pinecone")
_ENGINES = ("auto", "onnx", "transformers")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_STALE_AFTER_S = 10  # job_stale_after_s: ten queue-worker heartbeats
REQUEST_HEADROOM_BYTES = 16 * 1024 * 1024  # the claim, form fields and multipart framing
_POSITIVE = (
    "max_image_bytes",
    "max_images",
    "max_image_pixels",
    "max_prompt_chars",
    "max_tokens_limit",
    "generation_timeout_s",
    "rate_limit_burst",
    "job_workers",
)


class SettingsError(ValueError):
    """One or more settings have invalid values; the message lists each variable and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Invalid settings:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Settings:
    """Every tunegraph setting. Each field ``x`` is overridden by ``TUNEGRAPH_X``."""

    home: Path = field(
        default=Path(".tunegraph"),
        metadata={"help": "data root: model cache, indexes, databases, runs, demo corpus"},
    )
    allow_network: bool = field(
        default=False,
        metadata={"help": "allow downloading hub model ids (embedded models never need it)"},
    )
    text_model: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "base text model: embedded name, local directory or hub id"},
    )
    embedding_model: str = field(
        default="all-minilm-l6-v2",
        metadata={"help": "sentence-transformers model: embedded name, local directory or hub id"},
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    demo_seed: int = field(default=42, metadata={"help": "seed of the synthetic demo corpus"})
    vector_store: str = field(
        default="lancedb", metadata={"help": "lancedb (embedded, under home) | pinecone"}
    )
    pinecone_api_key: str = field(
        default="", metadata={"help": "Pinecone API key (vector_store=pinecone)", "secret": True}
    )
    pinecone_index: str = field(default="tunegraph", metadata={"help": "Pinecone index name"})
    pinecone_host: str = field(
        default="", metadata={"help": "Pinecone control-plane URL (empty: the service's own)"}
    )
    database_url: str = field(
        default="",
        metadata={"help": "SQLAlchemy URL for claims and jobs (empty: SQLite under home)"},
    )
    api_keys: tuple[str, ...] = field(
        default=(),
        metadata={"help": "comma-separated Bearer keys for /v1/* (empty: no auth)", "secret": True},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address `tunegraph serve` binds"})
    port: int = field(default=8000, metadata={"help": "port `tunegraph serve` binds"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG | INFO | WARNING | ERROR"})
    text_adapter: str = field(
        default="manual-lora",
        metadata={"help": "fine-tuned text adapter the API serves (a name under home/adapters)"},
    )
    llm_base_url: str = field(
        default="",
        metadata={
            "help": "an OpenAI-compatible server (vLLM, llama.cpp, Ollama) that runs the chat "
            "model, e.g. http://gpu-host:8000/v1; it serves the fine-tuned adapter under the "
            "text_adapter name (empty: the text model runs in this process)"
        },
    )
    llm_model: str = field(
        default="",
        metadata={"help": "the base model's name on llm_base_url's server (empty: text_model)"},
    )
    llm_api_key: str = field(
        default="", metadata={"help": "API key of llm_base_url's server", "secret": True}
    )
    judge_api_key: str = field(
        default="",
        metadata={
            "help": "API key of the judge endpoint (`tunegraph eval judge --judge-url`)",
            "secret": True,
        },
    )
    engine: str = field(
        default="auto",
        metadata={
            "help": "what runs the text model in this process: onnx (ONNX Runtime GenAI, the "
            "`engine` extra), transformers, or auto (onnx when installed and the model builds, "
            "else transformers)"
        },
    )
    max_request_bytes: int = field(
        default=0,
        metadata={
            "help": "largest HTTP request body the API accepts (0: max_images x "
            "max_image_bytes + 16 MiB, so the largest valid upload fits)"
        },
    )
    max_image_bytes: int = field(
        default=10 * 1024 * 1024, metadata={"help": "largest single uploaded image, in bytes"}
    )
    max_images: int = field(default=8, metadata={"help": "most images in one assessment"})
    max_image_pixels: int = field(
        default=40_000_000,
        metadata={"help": "most pixels (width x height) of one uploaded image (at most 40000000)"},
    )
    max_prompt_chars: int = field(
        default=32_000, metadata={"help": "most characters in one chat request's messages"}
    )
    max_tokens_limit: int = field(
        default=1024, metadata={"help": "highest max_tokens a chat request may ask for"}
    )
    generation_timeout_s: int = field(
        default=120, metadata={"help": "seconds one chat answer or assessment may take"}
    )
    rate_limit_per_minute: int = field(
        default=120, metadata={"help": "requests per minute per API key on /v1/* (0: no limit)"}
    )
    rate_limit_burst: int = field(
        default=20,
        metadata={"help": "requests an API key may send at once before the rate applies"},
    )
    rate_limit_storage: str = field(
        default="",
        metadata={
            "help": "where rate limits are counted: empty (this process) or redis://host:6379/0 "
            "(one count per key shared by every worker and API process)",
            "secret": True,  # a Redis URL may hold a password
        },
    )
    job_queue: str = field(
        default="",
        metadata={
            "help": "a task queue's broker (redis://host:6379/0 or amqp://user:pass@host//): "
            "jobs then run in `tunegraph worker` processes (empty: in the API process)",
            "secret": True,  # a broker URL may hold a password
        },
    )
    job_queue_name: str = field(
        default="tunegraph-jobs", metadata={"help": "the queue jobs are sent to on job_queue"}
    )
    job_stale_after_s: int = field(
        default=60,
        metadata={
            "help": "a queued job's worker silent this long is taken for dead: the job fails"
        },
    )
    job_workers: int = field(
        default=1,
        metadata={"help": "background jobs (ingest, fine-tune) that run at the same time"},
    )
    admin_keys: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "comma-separated Bearer keys that may also see and cancel every key's jobs "
            "(each is a valid key too)",
            "secret": True,
        },
    )
    input_roots: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "comma-separated folders on the server whose files jobs may read, besides "
            "the data root (empty: only the data root, where POST /v1/files puts uploads)"
        },
    )
    max_waiting_requests: int = field(
        default=2,
        metadata={
            "help": "requests that may wait for each busy model (text, vision) beside the one it "
            "runs; beyond that the API answers 503 with Retry-After (0: none waits)"
        },
    )
    min_support: float | None = field(
        default=0.35,
        metadata={
            "help": "the chat modes with retrieval answer only when the best passage found "
            "matches the question at least this well (cosine similarity of the embeddings, "
            "0-1; a fault code must appear in it); below it they say the manual does not "
            "cover it (set it empty to always answer)"
        },
    )
    max_batch_size: int = field(
        default=4,
        metadata={
            "help": "requests the text model decodes together, in one forward pass per token, "
            "on the engine (1: one at a time; transformers always runs one at a time)"
        },
    )
    auth_failures_per_minute: int = field(
        default=10,
        metadata={
            "help": "failed API-key checks one client address may make per minute before it "
            "is answered 429 (0: no limit)"
        },
    )
    metrics_require_key: bool = field(
        default=False,
        metadata={"help": "/metrics needs an API key, like /v1/* (when api_keys are set)"},
    )
    cpu_per_hour: float | None = field(
        default=None,
        metadata={
            "help": "USD per hour of the CPU machine the self-hosted models run on, for "
            "`tunegraph compare`'s compute billing (empty: the price table's, a 2-vCPU cloud "
            "instance's on-demand price)"
        },
    )
    gpu_per_hour: float | None = field(
        default=None,
        metadata={
            "help": "USD per hour of the GPU machine the self-hosted models run on, for "
            "`tunegraph compare`'s compute billing (empty: the price table's, a one-GPU cloud "
            "instance's on-demand price)"
        },
    )

    def __post_init__(self) -> None:
        problems = []
        if self.device not in _DEVICES:
            problems.append(
                f"{env_name('device')}={self.device!r}: use one of {', '.join(_DEVICES)}"
            )
        if self.engine not in _ENGINES:
            problems.append(
                f"{env_name('engine')}={self.engine!r}: use one of {', '.join(_ENGINES)}"
            )
        if self.log_level not in _LOG_LEVELS:
            problems.append(
                f"{env_name('log_level')}={self.log_level!r}: use one of {', '.join(_LOG_LEVELS)}"
            )
        if self.vector_store not in _VECTOR_STORES:
            problems.append(
                f"{env_name('vector_store')}={self.vector_store!r}: use one of "
                + ", ".join(_VECTOR_STORES)
            )
        elif self.vector_store == "pinecone" and not self.pinecone_api_key:
            problems.append(
                f"{env_name('vector_store')}=pinecone needs {env_name('pinecone_api_key')}"
            )
        if self.llm_base_url and not self.llm_base_url.startswith(("http://", "https://")):
            problems.append(
                f"{env_name('llm_base_url')}={self.llm_base_url!r}: give the server's URL up to "
                "/v1, e.g. http://localhost:8000/v1"
            )
        if not 0 < self.port < 65536:
            problems.append(f"{env_name('port')}={self.port}: use a port between 1 and 65535")
        for name in _POSITIVE:
            if getattr(self, name) < 1:
                problems.append(f"{env_name(name)}={getattr(self, name)}: use a number above 0")
        if self.max_request_bytes < 0:
            problems.append(
                f"{env_name('max_request_bytes')}={self.max_request_bytes}: use 0 (derived from "
                "the image limits) or a number of bytes"
            )
        elif self.max_request_bytes == 0:
            # frozen dataclass: the derived default is set once, here
            object.__setattr__(self, "max_request_bytes", self._derived_request_bytes())
        if self.max_image_pixels > MAX_PIXELS:
            problems.append(
                f"{env_name('max_image_pixels')}={self.max_image_pixels}: at most {MAX_PIXELS} "
                "(the decoder's own decompression-bomb limit); downscale larger photos"
            )
        if self.rate_limit_storage and not self.rate_limit_storage.startswith(
            ("memory://", "redis://", "rediss://", "redis+unix://")
        ):
            problems.append(
                f"{env_name('rate_limit_storage')}: use redis://host:port/db (or leave it empty "
                "to count in each process)"
            )
        if self.job_queue and not self.job_queue.startswith(
            ("redis://", "rediss://", "amqp://", "amqps://", "memory://")
        ):
            problems.append(
                f"{env_name('job_queue')}: use redis://host:6379/0 or amqp://user:pass@host// "
                "(or leave it empty to run jobs in the API process)"
            )
        if self.job_stale_after_s < MIN_STALE_AFTER_S:
            problems.append(
                f"{env_name('job_stale_after_s')}={self.job_stale_after_s}: use at least "
                f"{MIN_STALE_AFTER_S} (workers write a heartbeat every second; a shorter wait "
                "takes a busy worker for dead)"
            )
        if self.max_waiting_requests < 0:
            problems.append(
                f"{env_name('max_waiting_requests')}={self.max_waiting_requests}: use 0 (no "
                "request waits) or more"
            )
        for name in ("cpu_per_hour", "gpu_per_hour"):
            if (getattr(self, name) or 0) < 0:
                problems.append(f"{env_name(name)}={getattr(self, name)}: use 0 or more, or unset")
        if self.min_support is not None and not 0 <= self.min_support <= 1:
            problems.append(f"{env_name('min_support')}={self.min_support}: use 0 to 1, or unset")
        if self.max_batch_size < 1:
            problems.append(f"{env_name('max_batch_size')}={self.max_batch_size}: use 1 or more")
        if self.auth_failures_per_minute < 0:
            problems.append(
                f"{env_name('auth_failures_per_minute')}={self.auth_failures_per_minute}: "
                "use 0 (no limit) or more"
            )
        for root in self.input_roots:
            if not Path(root).expanduser().is_absolute():
                problems.append(
                    f"{env_name('input_roots')}: {root!r} is not an absolute folder; give "
                    "absolute paths, separated by commas"
                )
            elif self.home.resolve().is_relative_to(Path(root).expanduser().resolve()) or Path(
                root
            ).expanduser().resolve().is_relative_to(self.home.resolve()):
                problems.append(
                    f"{env_name('input_roots')}: {root!r} holds or lies in the data root (every "
                    "key's uploads, the database); name folders of input files outside it"
                )
        if self.rate_limit_per_minute < 0:
            problems.append(
                f"{env_name('rate_limit_per_minute')}={self.rate_limit_per_minute}: "
                "use 0 (no limit) or more"
            )
        if problems:
            raise SettingsError(problems)

    # Derived locations, all under the one data root.
    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def vision_dir(self) -> Path:
        """Trained vision models (damage model, classifiers, the vision-language model)."""
        return self.home / "vision"

    @property
    def demo_dir(self) -> Path:
        return self.home / "demo"

    @property
    def indexes_dir(self) -> Path:
        return self.home / "indexes"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def uploads_dir(self) -> Path:
        """Files sent with ``POST /v1/files``, one folder per API key."""
        return self.home / "uploads"

    @property
    def threads_held_by_models(self) -> int:
        """Server threads that requests for the models can hold at once: per model (text and
        vision) those it runs (the text model: a batch) and those waiting."""
        return self.max_batch_size + 1 + 2 * self.max_waiting_requests

    @property
    def all_keys(self) -> tuple[str, ...]:
        """Every key that may call ``/v1/*``: the API keys and the admin keys."""
        return self.api_keys + tuple(k for k in self.admin_keys if k not in self.api_keys)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'tunegraph.db').resolve()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from defaults, then ``TUNEGRAPH_*`` variables, then ``overrides``.

        Every invalid variable is reported at once:

        >>> Settings.from_env({"TUNEGRAPH_PORT": "8080"}).port
        8080
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems = []
        for f in fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is None:
                continue
            try:
                values[f.name] = _parse(raw, f.type)
            except ValueError as exc:
                problems.append(f"{env_name(f.name)}={raw!r}: {exc}")
        values.update(overrides)
        try:
            settings = cls(**values)
        except SettingsError as exc:
            raise SettingsError(problems + exc.problems) from None
        if problems:
            raise SettingsError(problems)
        return settings

    def describe(self, environ: Mapping[str, str] | None = None) -> list[dict[str, str]]:
        """Rows for ``tunegraph config show``: name, env var, value (secrets masked), source, help."""
        environ = os.environ if environ is None else environ
        rows = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                shown = f"<{len(value)} set>" if isinstance(value, tuple) else "<set>"
            elif isinstance(value, tuple):
                shown = ",".join(value)
            else:
                shown = str(value)
            rows.append(
                {
                    "name": f.name,
                    "env": env_name(f.name),
                    "value": shown,
                    "source": "env" if env_name(f.name) in environ else "default",
                    "help": f.metadata.get("help", ""),
                }
            )
        return rows

    def _derived_request_bytes(self) -> int:
        return self.max_images * self.max_image_bytes + REQUEST_HEADROOM_BYTES

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``; a derived request limit is derived again from the copy's
        image limits."""
        if (
            "max_request_bytes" not in changes
            and self.max_request_bytes == self._derived_request_bytes()
        ):
            changes["max_request_bytes"] = 0
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """``TUNEGRAPH_*`` variables that rebuild these settings in a child process.

        >>> Settings.from_env(Settings(port=9000).to_env()).port
        9000
        """
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = "1" if value else "0"
            elif isinstance(value, tuple):
                value = ",".join(value)
            elif value is None:
                value = ""
            env[env_name(f.name)] = str(value)
        return env


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _parse(raw: str, type_name: str) -> Any:
    # Field annotations are strings because of `from __future__ import annotations`.
    if type_name == "bool":
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("use 1/0, true/false, yes/no or on/off")
    if type_name == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("use a whole number") from None
    if type_name == "float | None":
        if not raw.strip() or raw.strip().lower() == "none":
            return None
        try:
            return float(raw)
        except ValueError:
            raise ValueError("use a number, or leave it empty for none") from None
    if type_name == "Path":
        return Path(raw).expanduser()
    if type_name == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw.strip()
