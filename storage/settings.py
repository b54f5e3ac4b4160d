"""Settings: where state lives (FEWTUNE_HOME) and what `fewtune.toml` in it configures.

Every value has a default, so an empty FEWTUNE_HOME works with no file at all (embedded models, no keys).
Secrets never live in the file: a provider names the environment variable that holds its API key.

Example `fewtune.toml`:

    [providers.openai]                 # built in; usable once OPENAI_API_KEY is set
    [providers.gpu]
    base_url = "http://gpu-box:8000/v1"
    api_key_env = "FEWTUNE_GPU_TOKEN"

    [server]                           # the local `fewtune serve`
    model = "SmolLM2-135M-Instruct"    # or a local folder / Hugging Face model name
    idle_timeout = 900                 # seconds without requests before an on-demand server stops
    start_with_bot = true              # `fewtune bot` starts it at once when a local model is used
    max_batch = 8                      # chats decoded together (continuous batching)
    max_waiting = 32                   # requests that may wait for a row (429 past)
    max_wait_s = 120                   # seconds one may wait before a 429
    adapter_memory_mb = 512            # adapters held for serving; least recently used go first

    [index]
    chroma_url = "http://127.0.0.1:8001"   # keep the example index in a Chroma server
    held_examples = 2000               # assistants with at most this many: exact search in memory
    memory_mb = 256                    # examples held for exact search, per process

    [chat]
    default_model = "local:SmolLM2-135M-Instruct"

    [promotion]
    train_with_examples = true         # training chats carry their retrieved examples, as served

    [knowledge]                        # files an assistant answers from
    max_files = 20                     # per assistant
    max_file_mb = 10                   # per file
    max_chunks = 2000                  # per assistant, all files together
    knowledge_k = 4                    # chunks put in a prompt
    min_score = 0.3                    # cosine similarity a chunk needs to be put there
    memory_mb = 256                    # knowledge held for exact search, per process

    [evaluation]                       # the gate a promotion passes before its switch
    judge = "openai:gpt-4o-mini"       # optional: a judge model compares answers head to head
    alpha = 0.05                       # the switch needs p below this (over both candidates)
    min_held_out = 10                  # fewer held-out chats: the gate cannot decide
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from storage.errors import FewtuneError

EMBEDDED_CHAT_MODEL = "SmolLM2-135M-Instruct"


class SettingsError(FewtuneError, ValueError):
    """`fewtune.toml` cannot be read or holds a value of the wrong kind."""


@dataclass(frozen=True)
class ProviderConfig:
    """One OpenAI-compatible endpoint. `api_key_env` names the variable holding its key."""

    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    timeout: float = 120.0
    max_retries: int = 2

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True)
class ServerSettings:
    """The local `fewtune serve`: which base model, where, and when an on-demand one stops."""

    model: str = EMBEDDED_CHAT_MODEL
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port, recorded in FEWTUNE_HOME/server.json
    idle_timeout: float = 900.0  # 0 disables; only servers started on demand stop by themselves
    start_timeout: float = 300.0  # the first start converts the embedded GGUF (about 35 s here)
    # The Discord bot finds or starts it in the background when it starts, if an assistant (or
    # the default model) uses a `local:` model, so that the first chat does not wait for it.
    start_with_bot: bool = True
    fast_decode: bool = True  # CPU: fewtune's lean decoder for Llama models (else transformers)
    int8_weights: bool = True  # with fast_decode: int8 weights, 4x less memory traffic a token
    max_tokens_limit: int = 4096  # a request asking for more tokens an answer is refused (400)
    # Up to `max_batch` chats are decoded together; at most `max_waiting` more wait for a row,
    # each at most `max_wait_s` seconds; past either, a 429 with Retry-After (docs/design.md,
    # "Admission").
    max_batch: int = 8
    max_waiting: int = 32
    max_wait_s: float = 120.0
    adapter_memory_mb: float = 512.0  # adapters held in the fast decoder's layout (LRU past it)

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int):
            raise SettingsError(
                f"fewtune.toml: server.max_batch must be a whole number, not {self.max_batch!r}."
            )
        if not 1 <= self.max_batch <= 64:
            raise SettingsError(
                f"fewtune.toml: server.max_batch must be 1 to 64, not {self.max_batch!r}."
            )
        if isinstance(self.adapter_memory_mb, bool) or not isinstance(
            self.adapter_memory_mb, int | float
        ):
            raise SettingsError(
                "fewtune.toml: server.adapter_memory_mb must be a number, "
                f"not {self.adapter_memory_mb!r}."
            )
        if not 0 <= self.adapter_memory_mb < float("inf"):
            raise SettingsError(
                "fewtune.toml: server.adapter_memory_mb must be 0 or more megabytes, "
                f"not {self.adapter_memory_mb!r}."
            )
        if isinstance(self.max_waiting, bool) or not isinstance(self.max_waiting, int):
            raise SettingsError(
                f"fewtune.toml: server.max_waiting must be a whole number, not {self.max_waiting!r}."
            )
        if self.max_waiting < 0:
            raise SettingsError(
                f"fewtune.toml: server.max_waiting must be 0 or more, not {self.max_waiting!r}."
            )
        if isinstance(self.max_wait_s, bool) or not isinstance(self.max_wait_s, int | float):
            raise SettingsError(
                f"fewtune.toml: server.max_wait_s must be a number, not {self.max_wait_s!r}."
            )
        if not 0 < self.max_wait_s < float("inf"):
            raise SettingsError(
                "fewtune.toml: server.max_wait_s must be a number of seconds above 0, "
                f"not {self.max_wait_s!r}."
            )


@dataclass(frozen=True)
class IndexSettings:
    """The example index: embedded chromadb under FEWTUNE_HOME, or a Chroma server."""

    chroma_url: str | None = None
    ef_search: int = 100
    ef_construction: int = 200
    # An assistant with at most this many examples is searched exactly in memory (storage/held.py:
    # 3 MB of vectors at 2,000), a larger one through the index's HNSW graph; 0: never held.
    held_examples: int = 2000
    memory_mb: int = 256  # the examples a process holds for exact search

    def __post_init__(self) -> None:
        for name, least in (("held_examples", 0), ("memory_mb", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SettingsError(
                    f"fewtune.toml: index.{name} must be a whole number of at least {least}, "
                    f"not {value!r}."
                )


@dataclass(frozen=True)
class ChatSettings:
    default_model: str = f"local:{EMBEDDED_CHAT_MODEL}"
    context_tokens: int = 2048  # prompt budget: instructions + examples + history + message
    reply_tokens: int = 256  # default max tokens of a reply
    rate_limit_per_minute: int = 12  # per user, in the Discord bot
    # How chats reach the model: "process" streams through the model calls' own process (off
    # the bot's GIL: what a burst of Discord chats needs), "inline" on the providers' model
    # loop in this process (one process less; docs/design.md has the figures).
    model_transport: str = "process"

    def __post_init__(self) -> None:
        if self.model_transport not in MODEL_TRANSPORTS:
            raise SettingsError(
                f"fewtune.toml: chat.model_transport must be one of {', '.join(MODEL_TRANSPORTS)}"
                f", not {self.model_transport!r}."
            )


MODEL_TRANSPORTS = ("process", "inline")


@dataclass(frozen=True)
class PromotionSettings:
    # Each training chat carries the examples the assistant retrieves for it, in the prompt
    # layout it is served with (weight 0 on them): a model promoted to answer with examples
    # learns to use them, not to ignore them. `fewtune promote --train-alone` turns it off once.
    train_with_examples: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.train_with_examples, bool):
            raise SettingsError(
                "fewtune.toml: promotion.train_with_examples must be true or false, "
                f"not {self.train_with_examples!r}."
            )


@dataclass(frozen=True)
class EvaluationSettings:
    """The evaluation gate (assistants/gate.py): an optional judge ("provider:model"), the
    significance level, and the held-out floor below which it cannot decide."""

    judge: str = ""
    alpha: float = 0.05
    min_held_out: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.judge, str) or (self.judge and not judge_is_valid(self.judge)):
            raise SettingsError(
                f'fewtune.toml: evaluation.judge must be "provider:model", not {self.judge!r}.'
            )
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float):
            raise SettingsError(
                f"fewtune.toml: evaluation.alpha must be a number, not {self.alpha!r}."
            )
        if not 0 < self.alpha < 1:
            raise SettingsError(
                f"fewtune.toml: evaluation.alpha must be between 0 and 1, not {self.alpha!r}."
            )
        if (
            isinstance(self.min_held_out, bool)
            or not isinstance(self.min_held_out, int)
            or self.min_held_out < 1
        ):
            raise SettingsError(
                "fewtune.toml: evaluation.min_held_out must be a whole number of at least 1, "
                f"not {self.min_held_out!r}."
            )


@dataclass(frozen=True)
class KnowledgeSettings:
    """Knowledge files: how many and how large (each file is read whole in memory and its chunks
    embedded on the bot's one embedding thread, about 8 chunks of 200 word pieces a second on
    this 2-core machine: 2,000 chunks take about 4 minutes), and how many chunks, how alike,
    answer a message."""

    max_files: int = 20  # per assistant, as OpenAI's GPTs
    max_file_mb: int = 10  # a PDF is mostly fonts and images; its text is far smaller
    max_chunks: int = 2000  # per assistant: about 400,000 word pieces of text
    knowledge_k: int = 4
    min_score: float = 0.3
    # The assistants' knowledge (vectors and words) a process holds for exact search (3 MB of
    # vectors for an assistant at max_chunks); beyond it, the least recently used are read again.
    memory_mb: int = 256

    def __post_init__(self) -> None:
        for name in ("max_files", "max_file_mb", "max_chunks", "knowledge_k", "memory_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingsError(
                    f"fewtune.toml: knowledge.{name} must be a whole number of at least 1, "
                    f"not {value!r}."
                )
        score = self.min_score
        if isinstance(score, bool) or not isinstance(score, int | float) or not -1 <= score <= 1:
            raise SettingsError(
                f"fewtune.toml: knowledge.min_score must be a number from -1 to 1, not {score!r}."
            )


def judge_is_valid(text: str) -> bool:
    """Whether `text` reads "provider:model" with both parts."""
    provider, _, model = text.partition(":")
    return bool(provider.strip() and model.strip())


@dataclass(frozen=True)
class Settings:
    home: Path
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    server: ServerSettings = field(default_factory=ServerSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    promotion: PromotionSettings = field(default_factory=PromotionSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    knowledge: KnowledgeSettings = field(default_factory=KnowledgeSettings)

    @property
    def db_path(self) -> Path:
        return self.home / "fewtune.db"

    @property
    def chroma_path(self) -> Path:
        return self.home / "chroma"

    @property
    def models_path(self) -> Path:
        return self.home / "models"

    @property
    def adapters_path(self) -> Path:
        return self.home / "adapters"


def fewtune_home(home: str | Path | None = None) -> Path:
    """The folder holding all state: the argument, else $FEWTUNE_HOME, else the user data folder."""
    chosen = home or os.environ.get("FEWTUNE_HOME") or platformdirs.user_data_dir("fewtune")
    path = Path(chosen).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(kind: str) -> Path:
    """A per-user cache folder for things derived from installed files (compiled kernels, the
    embedder's ONNX graph): shared by every FEWTUNE_HOME, safe to delete."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fewtune" / kind


_BUILT_IN_PROVIDERS = {
    "openai": ProviderConfig("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
}


def _section(data: dict, name: str) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise SettingsError(f"fewtune.toml: [{name}] must be a table.")
    return value


def _build(cls, values: dict, where: str):
    known = set(cls.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise SettingsError(f"fewtune.toml: unknown setting {sorted(unknown)[0]!r} in [{where}].")
    try:
        obj = cls(**values)
    except TypeError as exc:
        raise SettingsError(f"fewtune.toml: [{where}] {exc}.") from exc
    for name, f in cls.__dataclass_fields__.items():
        default = f.default
        value = getattr(obj, name)
        if isinstance(default, bool | int | float) and not isinstance(value, int | float):
            raise SettingsError(f"fewtune.toml: {where}.{name} must be a number, not {value!r}.")
    return obj


def load_settings(home: str | Path | None = None) -> Settings:
    """Read FEWTUNE_HOME/fewtune.toml (optional) over the defaults."""
    root = fewtune_home(home)
    path = root / "fewtune.toml"
    data: dict = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}. Fix or remove it.") from exc
    providers = dict(_BUILT_IN_PROVIDERS)
    for name, values in _section(data, "providers").items():
        if not isinstance(values, dict):
            raise SettingsError(f"fewtune.toml: [providers.{name}] must be a table.")
        base = providers.get(name, ProviderConfig(name))
        merged = {**base.__dict__, **values, "name": name}
        providers[name] = _build(ProviderConfig, merged, f"providers.{name}")
    chroma_url = os.environ.get("FEWTUNE_CHROMA_URL")
    index_values = _section(data, "index")
    if chroma_url:
        index_values = {**index_values, "chroma_url": chroma_url}
    return Settings(
        home=root,
        providers=providers,
        server=_build(ServerSettings, _section(data, "server"), "server"),
        index=_build(IndexSettings, index_values, "index"),
        chat=_build(ChatSettings, _section(data, "chat"), "chat"),
        promotion=_build(PromotionSettings, _section(data, "promotion"), "promotion"),
        evaluation=_build(EvaluationSettings, _section(data, "evaluation"), "evaluation"),
        knowledge=_build(KnowledgeSettings, _section(data, "knowledge"), "knowledge"),
    )
