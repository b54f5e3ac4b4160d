"""ChatEngine: one base model in memory, LoRA adapters switched per request.

- The base model loads once (fp32 on CPU, bf16 on CUDA). Adapters under
  `settings.adapters_path/<name>/` (PEFT format) load with peft on first use and are switched per
  request by name; the base is never reloaded. An adapter republished under the same name (its
  weights file changed) is loaded again.
- All torch work runs on the engine's one thread (training.serving.batching), so the event loop
  never blocks: the chats that run are decoded together there, one step for all of them
  (continuous batching, each row with its own adapter), and tokens are streamed to each caller
  as they are produced. A caller that stops reading a stream (its client left) frees its row at
  the next step. How many chats may run and wait is the routes' admission
  (training.serving.admission), not the engine's.
- Legacy completions prompts (`prepare_text`) generate the same way; their scores (`score`) come
  from one plain transformers/peft forward pass on that thread (training.serving.scoring).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.settings import Settings
from training.base_models import is_embedded, public_name, resolve_base_model
from training.served_adapters import adapter_dir, list_adapters
from training.serving.batching import Batcher, Generation

if TYPE_CHECKING:
    from training.serving.scoring import Scored

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512


class EngineError(Exception):
    """A request the engine cannot serve; `status` and `code` say how the server reports it."""

    status = 400
    code = "invalid_request"


class UnknownModelError(EngineError):
    status = 404
    code = "model_not_found"


class ContextLengthError(EngineError):
    code = "context_length_exceeded"


class AdapterLoadError(EngineError):
    status = 500
    code = "adapter_load_failed"


@dataclass(frozen=True)
class Sampling:
    """Sampling options of one request (the engine's view of an OpenAI request)."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatDelta:
    """A piece of a streamed answer; the last one has `finish_reason` and `usage`."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    ids: tuple[int, ...] = ()  # on the last delta: the tokens generated, the end token included


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str
    usage: Usage
    ids: tuple[int, ...] = ()  # the tokens generated, the end token included


@dataclass(frozen=True)
class PreparedChat:
    """A validated request: canonical model id and the prompt already tokenized."""

    model: str
    messages: tuple[dict[str, str], ...]
    sampling: Sampling
    prompt_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class PreparedText:
    """A validated legacy-completions prompt: the chat to generate from, the prompt's text (token
    ids given: decoded), and how many tokens the tokenizer put before the text (a start token:
    context, not part of the text)."""

    chat: PreparedChat
    text: str
    added: int = 0


_DONE = object()


class ChatEngine:
    """Serves chat completions for one base model and its adapters."""

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        self.settings = settings
        self.base_name = model if model is not None else settings.server.model
        self.base_model = public_name(self.base_name)
        self._outbox = _Outbox()
        self._batcher = Batcher("fewtune-gen", deliver=self._outbox.deliver)
        self._load_lock = threading.Lock()
        self._model: Any = None
        self._peft: Any = None
        self._tokenizer: Any = None
        self._eos_ids: set[int] = set()
        self._context = 0
        self._device = "cpu"
        self._adapters: dict[str, tuple[str, int]] = {}  # public name -> (peft name, mtime)
        self._fast: Any = None  # FastLlama when the lean CPU decoder applies
        # name -> (LoraAdapter or None, mtime), least recently used first
        self._fast_adapters: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._adapter_counter = itertools.count()

    @property
    def generations(self) -> int:
        """Answers begun since the start (one whose client left while it waited: not begun)."""
        return self._batcher.generations

    @property
    def tokens_generated(self) -> int:
        return self._batcher.tokens_generated

    # -- models -------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        """Every model id served: the base model, then each adapter."""
        return [self.base_model, *list_adapters(self.settings.adapters_path)]

    def is_base(self, model: str) -> bool:
        """True when a request's `model` names the base model (its listed or configured name,
        or an alias of the embedded one); a name, never looked up on disk."""
        return model in (self.base_model, self.base_name) or (
            is_embedded(model) and is_embedded(self.base_name)
        )

    def resolve(self, model: str) -> str:
        """The canonical id for `model`, or UnknownModelError naming what is served."""
        if self.is_base(model):
            return self.base_model
        if adapter_dir(self.settings.adapters_path, model) is not None:
            return model
        served = ", ".join(self.model_ids())
        shown = model if len(model) <= 80 else model[:77] + "..."
        raise UnknownModelError(f"The model {shown!r} does not exist; served models: {served}.")

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def vocabulary_size(self) -> int:
        """A prompt's token ids are 0 to this minus 1 (scoring.prompt_tokens); 0 until loaded."""
        return len(self._tokenizer) if self._tokenizer is not None else 0

    def load(self) -> None:
        """Load the base model and tokenizer (blocking; converts the embedded GGUF once).

        All of the engine's torch work runs on its one generation thread, loading included:
        OpenMP keeps a pool of threads for each thread that starts parallel work, and once two
        threads had one there were more OpenMP threads than cores on a 2-core machine, libgomp
        stopped spinning between parallel regions, and the int8 kernel ran 3x slower (decoding
        at 2 threads fell below 1 thread's speed; bench/decode_speed.py)."""
        self._batcher.call(self._load).result()  # on the thread already: runs at once

    def _load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            source = resolve_base_model(self.base_name, self.settings)  # fails fast, no torch
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = torch.bfloat16 if self._device == "cuda" else torch.float32
            try:
                tokenizer = AutoTokenizer.from_pretrained(source)
                model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            except OSError as exc:
                raise EngineError(
                    f"Base model {self.base_name!r} cannot be loaded ({exc}). Name the embedded "
                    "SmolLM2-135M-Instruct, a local model folder, or a Hugging Face model that "
                    "is in the local cache."
                ) from exc
            model.to(self._device).eval()  # type: ignore[arg-type]
            self._tokenizer = tokenizer
            self._eos_ids = _eos_ids(model, tokenizer)
            self._context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
            self._model = model
            self._fast = self._fast_decoder(model)
            self._batcher.decoder = self._fast
            log.info("loaded base model %s from %s on %s", self.base_model, source, self._device)

    def _fast_decoder(self, model: Any) -> Any:
        """A FastLlama over `model` where settings allow and it reproduces the model exactly."""
        server = self.settings.server
        if self._device != "cpu" or not server.fast_decode:
            return None
        from training.serving import fast_llama

        if not fast_llama.supports(model):
            log.info("fast decoder: %s is not a plain Llama; using transformers", self.base_model)
            return None
        log.info("fast decoder on (int8 weights: %s)", server.int8_weights)
        return fast_llama.FastLlama(model, int8=server.int8_weights)

    @property
    def decoder(self) -> str:
        """Which decoder serves the base model: "fast-int8", "fast-fp32" or "transformers"."""
        if self._fast is None:
            return "transformers"
        return "fast-int8" if self._fast.int8 else "fast-fp32"

    def close(self) -> None:
        self._batcher.close()

    # -- requests -----------------------------------------------------------------------

    async def prepare(
        self, model: str, messages: list[dict[str, str]], sampling: Sampling
    ) -> PreparedChat:
        """Check the model and tokenize the prompt; raises EngineError before any output."""
        model_id = self.resolve(model)
        self._check_max_tokens(sampling)
        if not messages:
            raise EngineError("messages must hold at least one message.")
        # Tokenizing runs on the engine's thread too: the tokenizer is not shared across threads.
        ids = await self._on_thread(self._prompt_ids, messages)
        if self._context and len(ids) >= self._context:
            raise ContextLengthError(
                f"The prompt has {len(ids)} tokens but {self.base_model} reads at most "
                f"{self._context}; shorten the conversation."
            )
        return PreparedChat(model_id, tuple(messages), sampling, tuple(ids))

    def _check_max_tokens(self, sampling: Sampling) -> None:
        """A request asking for more than `[server] max_tokens_limit` tokens is refused (400, as
        OpenAI refuses more than a model can write), so one request cannot hold the engine."""
        limit = self.settings.server.max_tokens_limit
        if sampling.max_tokens is not None and sampling.max_tokens > limit:
            raise EngineError(
                f"max_tokens is {sampling.max_tokens} but this server writes at most {limit} "
                "tokens an answer ([server] max_tokens_limit)."
            )

    async def _on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` on the engine's thread, between two decode steps."""
        return await asyncio.wrap_future(self._batcher.call(functools.partial(function, *args)))

    async def stream(self, chat: PreparedChat) -> AsyncGenerator[ChatDelta, None]:
        """Yield the answer as it is generated; the last delta carries finish_reason and usage."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            self._outbox.put(loop, queue, item, cancel)

        def send(text: str, finish: str | None, ids: tuple[int, ...]) -> None:
            if finish is None:
                put(ChatDelta(text))
            else:
                put(ChatDelta(text, finish, Usage(len(chat.prompt_ids), len(ids)), ids))
                put(_DONE)

        def fail(exc: BaseException) -> None:
            put(exc)
            put(_DONE)

        def make() -> Generation:
            try:
                return self._generation(chat, send, fail, cancel)
            except BaseException as exc:  # handed to the caller, raised there
                fail(exc)
                raise

        self._batcher.add(make, fail)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # the client went away or the caller stopped reading: free the row

    async def complete(self, chat: PreparedChat) -> ChatResult:
        """The whole answer at once."""
        parts: list[str] = []
        last = ChatDelta("", "stop", Usage(len(chat.prompt_ids), 0))
        async with contextlib.aclosing(self.stream(chat)) as deltas:
            async for delta in deltas:
                parts.append(delta.text)
                last = delta
        assert last.usage is not None and last.finish_reason is not None
        return ChatResult("".join(parts), last.finish_reason, last.usage, last.ids)

    async def chat(
        self, model: str, messages: list[dict[str, str]], sampling: Sampling | None = None
    ) -> ChatResult:
        """prepare + complete in one call (for Python callers and tests)."""
        return await self.complete(await self.prepare(model, messages, sampling or Sampling()))

    async def prompt_text(self, messages: list[dict[str, str]]) -> str:
        """The text the model is fed for `messages` (generation prompt added), as chat builds it."""
        return await self._on_thread(self._prompt_text, messages)

    async def prepare_text(
        self, model: str, prompt: str | list[int], sampling: Sampling, scoring: bool = False
    ) -> PreparedText:
        """Check the model and tokenize a completions prompt (text or token ids). A prompt to
        score only (`scoring`) may fill the whole context; one to continue must leave room."""
        model_id = self.resolve(model)
        self._check_max_tokens(sampling)
        ids, text, added = await self._on_thread(self._text_ids, prompt)
        if len(ids) == 0:
            raise EngineError("The prompt is empty: give at least one token of text.")
        limit = self._context if scoring else self._context - 1
        if self._context and len(ids) > limit:
            raise ContextLengthError(
                f"The prompt has {len(ids)} tokens but {self.base_model} reads at most "
                f"{self._context}{'' if scoring else ' with room for one more'}; shorten it."
            )
        chat = PreparedChat(model_id, (), sampling, tuple(ids))
        return PreparedText(chat, text, added)

    async def score(self, model: str, ids: list[int], top: int, generated_from: int) -> Scored:
        """Each token's log-probability under `model` (its adapter applied) and its text piece;
        the tokens from `generated_from` on were generated and decode without special tokens."""
        return await self._on_thread(self._score, model, ids, top, generated_from)

    # -- on the engine's thread -------------------------------------------------------------

    def _prompt_text(self, messages: list[dict[str, str]]) -> str:
        self.load()
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            return str(
                tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            )
        return _transcript(messages)

    def _text_ids(self, prompt: str | list[int]) -> tuple[list[int], str, int]:
        from training.serving.scoring import prompt_tokens

        self.load()
        try:
            return prompt_tokens(self._tokenizer, prompt)
        except ValueError as exc:  # a token id outside the vocabulary
            raise EngineError(str(exc)) from exc

    def _score(self, model_id: str, ids: list[int], top: int, generated_from: int) -> Scored:
        from training.serving.scoring import score_tokens, scored

        self.load()
        with self._transformers_model(model_id) as model:
            scores = score_tokens(model, ids, top, self._device)
        return scored(self._tokenizer, ids, scores, generated_from)

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        self.load()
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            encoded = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
            return list(encoded["input_ids"])
        return list(tokenizer(_transcript(messages))["input_ids"])

    def _generation(
        self,
        chat: PreparedChat,
        send: Callable[[str, str | None, tuple[int, ...]], None],
        fail: Callable[[BaseException], None],
        cancel: threading.Event,
    ) -> Generation:
        """A chat ready to join the batch: its sampling, and what runs its model."""
        from training.serving.decoding import SamplingParams, TextAssembler

        room = self._context - len(chat.prompt_ids) if self._context else DEFAULT_MAX_TOKENS
        limit = self.settings.server.max_tokens_limit
        wanted = chat.sampling.max_tokens or min(DEFAULT_MAX_TOKENS, limit)
        params = SamplingParams(
            max_tokens=max(1, min(wanted, room)),
            temperature=chat.sampling.temperature,
            top_p=chat.sampling.top_p,
            stop=chat.sampling.stop,
            seed=chat.sampling.seed,
        )
        generation = Generation(
            prompt=list(chat.prompt_ids),
            params=params,
            eos_ids=self._eos_ids,
            assembler=TextAssembler(self._tokenizer, params.stop),
            send=send,
            fail=fail,
            cancel=cancel,
            label=chat.model,
        )
        if self._fast is not None:
            if chat.model == self.base_model:
                return generation
            generation.adapter = self._fast_adapter(chat.model)
            if generation.adapter is not None:
                return generation
        generation.stepper = _ModelStepper(self, chat.model)
        return generation

    @contextlib.contextmanager
    def _transformers_model(self, model_id: str) -> Iterator[Any]:
        """The transformers (or peft) model that runs `model_id`, its adapter active."""
        if model_id == self.base_model:
            if self._peft is None:
                yield self._model
            else:
                with self._peft.disable_adapter():
                    yield self._peft
            return
        internal = self._load_adapter(model_id)
        self._peft.set_adapter(internal)
        yield self._peft

    def _fast_adapter(self, name: str) -> Any:
        """The adapter in the fast decoder's layout; None when only peft can apply it."""
        from training.serving.fast_llama import UnsupportedAdapter

        folder = adapter_dir(self.settings.adapters_path, name)
        if folder is None:
            raise UnknownModelError(f"Adapter {name!r} is no longer served.")
        stamp = (folder / "adapter_model.safetensors").stat().st_mtime_ns
        known = self._fast_adapters.get(name)
        if known is not None and known[1] == stamp:
            self._fast_adapters.move_to_end(name)
            return known[0]
        try:
            lora = self._fast.load_adapter(folder)
        except UnsupportedAdapter as exc:
            log.info("adapter %s goes through peft: %s", name, exc)
            lora = None
        except Exception as exc:
            raise AdapterLoadError(
                f"Adapter {name!r} cannot be loaded on base model {self.base_model}: {exc}"
            ) from exc
        self._fast_adapters[name] = (lora, stamp)
        self._fast_adapters.move_to_end(name)
        self._evict_adapters()
        return lora

    def _evict_adapters(self) -> None:
        """Forget the least recently used adapters while those held pass `[server]
        adapter_memory_mb` (the newest always stays; a running chat keeps its own reference)."""
        budget = self.settings.server.adapter_memory_mb * 2**20
        while len(self._fast_adapters) > 1 and self.adapter_bytes() > budget:
            name, _ = self._fast_adapters.popitem(last=False)
            log.info("adapter %s evicted (adapter_memory_mb = %s)", name, budget // 2**20)

    def adapter_bytes(self) -> int:
        """Bytes of the adapters held in the fast decoder's layout."""
        return sum(lora.nbytes() for lora, _ in self._fast_adapters.values() if lora is not None)

    def _load_adapter(self, name: str) -> str:
        folder = adapter_dir(self.settings.adapters_path, name)
        if folder is None:
            raise UnknownModelError(f"Adapter {name!r} is no longer served.")
        stamp = (folder / "adapter_model.safetensors").stat().st_mtime_ns
        known = self._adapters.get(name)
        if known is not None and known[1] == stamp:
            return known[0]
        internal = f"adapter_{next(self._adapter_counter)}"  # peft names cannot hold dots
        self._attach(folder, internal, name)
        if known is not None:  # republished under the same name: drop the old weights
            self._peft.delete_adapter(known[0])
        self._adapters[name] = (internal, stamp)
        log.info("loaded adapter %s from %s", name, folder)
        return internal

    def _attach(self, folder: Path, internal: str, name: str) -> None:
        from peft import PeftModel

        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self._model, str(folder), adapter_name=internal, is_trainable=False
                )
                self._peft.eval()
            else:
                self._peft.load_adapter(str(folder), adapter_name=internal, is_trainable=False)
        except Exception as exc:
            raise AdapterLoadError(
                f"Adapter {name!r} cannot be loaded on base model {self.base_model}: {exc}"
            ) from exc


class _Outbox:
    """What the engine's thread streams to callers, handed over once a turn (after sampling,
    before the step): one wake-up of each caller's event loop a step, not one for every token
    of every chat."""

    def __init__(self) -> None:
        self._items: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, threading.Event]]] = {}

    def put(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Any],
        item: Any,
        cancel: threading.Event,
    ) -> None:
        self._items.setdefault(loop, []).append((queue, item, cancel))

    def deliver(self) -> None:
        items, self._items = self._items, {}
        for loop, entries in items.items():
            try:
                loop.call_soon_threadsafe(_hand_over, entries)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                for _, _, cancel in entries:
                    cancel.set()


def _hand_over(entries: list[tuple[asyncio.Queue[Any], Any, threading.Event]]) -> None:
    for queue, item, _ in entries:
        queue.put_nowait(item)


class _ModelStepper:
    """A model only transformers/peft runs, stepped on its own: its adapter is made active before
    each step, since rows of different adapters take turns on the one peft model."""

    def __init__(self, engine: ChatEngine, model_id: str) -> None:
        self._engine = engine
        self._model_id = model_id
        self._inner: Any = None

    def start(self, prompt_ids: list[int]) -> Any:
        from training.serving.decoding import TransformersStepper

        with self._engine._transformers_model(self._model_id) as model:
            self._inner = TransformersStepper(model, self._engine._device)
            return self._inner.start(prompt_ids)

    def next(self, token: int) -> Any:
        with self._engine._transformers_model(self._model_id):
            return self._inner.next(token)


def _transcript(messages: list[dict[str, str]]) -> str:
    """A base model without a chat template still answers, in a plain transcript format."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends an answer: the generation config's and the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
