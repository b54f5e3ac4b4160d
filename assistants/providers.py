"""The one door to the models: every chat goes through the `openai` client to an
OpenAI-compatible endpoint. `local` is fewtune's own server on loopback, started on demand;
other providers come from fewtune.toml (or are built in, like `openai`). How chats travel is
the providers' own setting (`[chat] model_transport`), invisible to their callers: through the
client in the model calls' own process (assistants/model_worker.py, off the bot's GIL; the
default) or through the client on the providers' model loop in this process ("inline").

Failures become ProviderError with one clear sentence. Retries are the openai client's own
(bounded, exponential backoff, honouring Retry-After); timeouts bound every wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assistants.errors import ProviderError
from storage.settings import ProviderConfig, Settings

if TYPE_CHECKING:
    from concurrent.futures import Future

    import openai  # imported when first needed: it takes a second or more to import

    from assistants.local_server import LocalServer, LocalStart
    from assistants.model_process import ModelProcess

log = logging.getLogger(__name__)

LOCAL = "local"
# Said while a reply waits for the local server to start (the terminal's chat, Discord's
# placeholder): a few seconds from the saved copy, about a minute the first time.
STARTING_LOCAL = (
    "Starting the local model server for the first reply: a few seconds, or about a "
    "minute the first time, while it converts the embedded model."
)
NOT_A_CHUNK = "The provider {!r} sent a chunk that is not an OpenAI chat chunk."


@dataclass(frozen=True)
class ModelRef:
    provider: str
    model: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        provider, _, model = text.partition(":")
        return cls(provider, model)

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass
class Chunk:
    """A piece of a streamed reply: text, and at the end the provider's token counts."""

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Providers:
    """Makes and caches one async openai client per provider."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[tuple[str, int], openai.AsyncOpenAI] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local: LocalServer | None = None  # the local server, once found or started
        self._local_start: LocalStart | None = None  # the latest find-or-start of it
        self._process: ModelProcess | None = None  # the model calls' process (model loop only)

    def config(self, name: str) -> ProviderConfig:
        if name == LOCAL:
            return ProviderConfig(LOCAL, timeout=300.0, max_retries=2)
        found = self.settings.providers.get(name)
        if found is None:
            raise ProviderError(f"Unknown provider {name!r}: add it to fewtune.toml.")
        return found

    def _finding_local(self) -> LocalStart:
        """The find-or-start of the local server under way, or a new one (after a failure, or
        once the found server has stopped): every caller waits for the same one."""
        from assistants.local_server import LocalStart

        with self._lock:
            start = self._local_start
            if start is None or start.done.done():
                start = self._local_start = LocalStart(self.settings)
                start.done.add_done_callback(self._found)
            return start

    def _found(self, done: Future[LocalServer]) -> None:
        if done.exception() is None:
            self._local = done.result()

    def start_local(self) -> None:
        """Find or start the local model server in the background; returns at once. A failure
        is logged; each chat then tries again, and says why in one sentence if it cannot."""
        if self._local is not None and self._local.alive():
            return

        def report(done: Future[LocalServer]) -> None:
            error = done.exception()
            if error is not None:
                log.warning("the local model server did not start: %s", error)
            else:
                log.info("the local model server answers at %s", done.result().base_url)

        self._finding_local().done.add_done_callback(report)

    @property
    def local_starting(self) -> bool:
        """Whether a find-or-start of the local server is under way."""
        start = self._local_start
        return start is not None and not start.done.done()

    async def wait_note(self, model: ModelRef) -> str | None:
        """The sentence to show while a reply from `model` waits for the local model server to
        start; None when it will not wait. For a local model with no server known to run, it
        begins finding or starting one, which the reply then waits for."""
        if model.provider != LOCAL:
            return None
        local = self._local
        if local is not None:
            if local.alive():
                return None
            with self._lock:  # it stopped (idle): find or start it again
                if self._local is local:
                    self._local = None
        start = self._finding_local()
        if await asyncio.wrap_future(start.starting) and not start.done.done():
            return STARTING_LOCAL
        return None

    def starting_note(self, model: str) -> str | None:
        """A sentence for the user when the first reply from `model` will wait for the local
        model server to start (seconds, or about a minute the first time it converts the
        embedded model); None when nothing has to start."""
        from assistants.local_server import local_server_running

        if ModelRef.parse(model).provider != LOCAL or local_server_running(self.settings):
            return None
        return STARTING_LOCAL

    async def client(self, name: str) -> openai.AsyncOpenAI:
        """An openai client for provider `name` on the running loop (the fine-tuning API and
        files, and the inline transport's chats on the model loop)."""
        base_url, key, config = await self._endpoint(name)
        # One client per event loop: an AsyncOpenAI's connection pool belongs to its loop.
        cache_key = (f"{name}|{base_url}|{key}", id(asyncio.get_running_loop()))
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                client = make_client(base_url, key, config.timeout, config.max_retries)
                self._clients[cache_key] = client
        return client

    def _calls(self) -> ModelProcess:
        """The model calls' process (made on the model loop, started on first use)."""
        if self._process is None:
            from assistants.model_process import ModelProcess

            self._process = ModelProcess()
        return self._process

    async def warm_up(self) -> None:
        """Start the model calls' process now rather than on the first chat, which it would
        hold up by about a second (it imports the openai client)."""
        if self.settings.chat.model_transport == "inline":
            return  # nothing to start: the client is made on the first chat
        loop = self._model_loop()

        async def start() -> None:
            await self._calls().start()

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(start(), loop))

    @property
    def calls_pid(self) -> int | None:
        """The process id of the model calls' process, once started (benchmarks read its CPU)."""
        process = self._process.process if self._process is not None else None
        return process.pid if process is not None else None

    def _model_loop(self) -> asyncio.AbstractEventLoop:
        """The private event loop, in a daemon thread, where the bot's side of every model
        call runs (talking to the model calls' process).

        Streaming costs CPU per chunk; with many replies streaming at once, on the caller's
        loop that work queued up into pauses of hundreds of milliseconds for everything else
        there (the Discord bot's gateway and interactions). On its own loop the caller gets
        only finished chunks.
        """
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="fewtune-models", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    async def stream_chat(
        self,
        model: ModelRef,
        messages: list[dict[str, str]],
        temperature: float,
        max_tokens: int | None,
    ) -> AsyncIterator[Chunk]:
        """Stream a chat completion; raise ProviderError on any provider failure."""
        caller = asyncio.get_running_loop()
        # Chunks cross from the model loop to the caller's through a deque; the caller's loop
        # is woken once per batch of chunks, not per chunk: each wake-up is a system call on
        # both sides, and for 200 replies at once they were a fifth of the model loop's work.
        items: collections.deque[Chunk | BaseException | None] = collections.deque()
        ready = asyncio.Event()
        waking = threading.Lock()
        wake_pending = False

        def put(item: Chunk | BaseException | None) -> None:
            nonlocal wake_pending
            items.append(item)
            with waking:
                if wake_pending:
                    return
                wake_pending = True
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody listens
                caller.call_soon_threadsafe(ready.set)

        async def produce() -> None:
            try:
                async for chunk in self._stream(model, messages, temperature, max_tokens):
                    put(chunk)
                put(None)
            except BaseException as exc:  # handed to the caller, who raises it
                put(exc)

        future = asyncio.run_coroutine_threadsafe(produce(), self._model_loop())
        try:
            while True:
                await ready.wait()
                ready.clear()
                with waking:
                    wake_pending = False
                while items:
                    item = items.popleft()
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            future.cancel()  # an abandoned stream stops at once

    async def _endpoint(self, name: str) -> tuple[str, str, ProviderConfig]:
        """Where provider `name` answers: base URL, API key, and its settings."""
        config = self.config(name)
        if name == LOCAL:
            # Checked once, then remembered until a call cannot connect: checking before every
            # message cost a request to the server each time.
            local = self._local
            if local is None:
                local = await asyncio.wrap_future(self._finding_local().done)
            return local.base_url, local.token, config
        if not config.base_url:
            raise ProviderError(f"Provider {name!r} has no base_url in fewtune.toml.")
        key = config.api_key or ""
        if config.api_key_env and not key:
            raise ProviderError(f"Provider {name!r} needs an API key: set {config.api_key_env}.")
        return config.base_url, key, config

    async def _stream(
        self,
        model: ModelRef,
        messages: list[dict[str, str]],
        temperature: float,
        max_tokens: int | None,
    ) -> AsyncIterator[Chunk]:
        """Stream by the configured transport; runs on the model loop."""
        body: dict[str, Any] = {
            "model": model.model,
            "messages": messages,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        transport = self._inline if self.settings.chat.model_transport == "inline" else self._piped
        async with contextlib.aclosing(transport(model, body)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _inline(self, model: ModelRef, body: dict[str, Any]) -> AsyncGenerator[Chunk, None]:
        """Stream through the openai client here, on the model loop."""
        import openai

        for attempt in (1, 2):
            client = await self.client(model.provider)
            try:
                # `client.post` with the body as JSON, chunks as parsed JSON (`object`), as
                # the model calls' process does: one parse per chunk, not a pydantic model.
                stream = await client.post(
                    "/chat/completions",
                    body=body,
                    cast_to=object,
                    stream=True,
                    stream_cls=openai.AsyncStream[object],
                )
                async for event in stream:
                    try:
                        chunk = parse_chunk(event)
                    except (TypeError, AttributeError, IndexError, KeyError, ValueError) as exc:
                        raise ProviderError(NOT_A_CHUNK.format(model.provider)) from exc
                    yield chunk
                return
            except openai.APIConnectionError as exc:
                if model.provider == LOCAL and attempt == 1:
                    self._local = None  # find or start the local server again, then retry once
                    continue
                raise ProviderError(describe(model, exc)) from exc
            except ProviderError:
                raise
            except Exception as exc:  # one sentence, as the model calls' process says it
                raise ProviderError(describe(model, exc)) from exc

    async def _piped(self, model: ModelRef, body: dict[str, Any]) -> AsyncGenerator[Chunk, None]:
        """Stream through the model calls' process (assistants/model_worker.py), which runs the
        openai client beside the bot instead of in its GIL."""
        process = self._calls()
        for attempt in (1, 2):
            base_url, key, config = await self._endpoint(model.provider)
            request = {
                "base_url": base_url,
                "key": key,
                "timeout": config.timeout,
                "max_retries": config.max_retries,
                "provider": model.provider,
                "model": model.model,
                "body": body,
            }
            async with contextlib.aclosing(process.stream(request)) as replies:
                async for message in replies:
                    if "chunk" in message:
                        try:
                            chunk = parse_chunk(message["chunk"])
                        except (TypeError, AttributeError, IndexError, KeyError, ValueError) as exc:
                            raise ProviderError(NOT_A_CHUNK.format(model.provider)) from exc
                        yield chunk
                    elif "error" in message:
                        if message.get("connect") and model.provider == LOCAL and attempt == 1:
                            break  # the remembered local server stopped (idle) or moved
                        raise ProviderError(message["error"])
                    else:
                        return
            self._local = None  # find or start the local server again, then retry once

    async def close(self) -> None:
        """Close the clients made on this loop and on the model loop."""
        here = id(asyncio.get_running_loop())
        loop = self._loop
        for (key, loop_id), client in list(self._clients.items()):
            if loop_id == here:
                # A client bound to a closed loop cannot close cleanly; drop it all the same.
                with contextlib.suppress(Exception):
                    await client.close()
            elif loop is not None and loop_id == id(loop):
                closing = asyncio.run_coroutine_threadsafe(client.close(), loop)
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(closing)
            self._clients.pop((key, loop_id), None)
        process, self._process = self._process, None
        if process is not None and loop is not None and not loop.is_closed():
            stopping = asyncio.run_coroutine_threadsafe(process.close(), loop)
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(stopping)


def make_client(base_url: str, key: str, timeout: float, max_retries: int) -> openai.AsyncOpenAI:
    """An openai client for one endpoint, bound to the running loop's connection pool."""
    import openai

    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=key or "none",
        timeout=timeout,
        max_retries=max_retries,
        # openai's own aiohttp transport (vendored in the package): for 200 chats at once it
        # cost half the CPU of the default httpx pool, which checks every pooled connection on
        # each request (docs/benchmarks.md).
        http_client=openai.DefaultAioHttpClient(timeout=timeout),
    )


def parse_chunk(event: object) -> Chunk:
    """A streamed `chat.completion.chunk` (as parsed JSON) to a Chunk."""
    if not isinstance(event, dict):
        raise TypeError(f"a chunk is a JSON object, not {type(event).__name__}")
    chunk = Chunk()
    choices = event.get("choices")
    if choices:
        chunk.text = (choices[0].get("delta") or {}).get("content") or ""
    usage = event.get("usage")
    if usage:
        chunk.prompt_tokens = usage.get("prompt_tokens")
        chunk.completion_tokens = usage.get("completion_tokens")
    return chunk


def _refused(exc: BaseException) -> bool:
    """Whether a connection was refused or unreachable somewhere in the error's causes: the
    aiohttp transport reports a refused connection as a connect *timeout*."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionError) or (
            isinstance(seen, OSError) and not isinstance(seen, TimeoutError) and seen.errno
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_after(exc: Any) -> int | None:
    """The whole seconds a 429's Retry-After header asks to wait, if it gives a number."""
    try:
        return max(1, round(float(exc.response.headers.get("retry-after", ""))))
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None


def describe(model: ModelRef, exc: Any) -> str:
    """One sentence for a provider failure."""
    import openai

    where = f"provider {model.provider!r}"
    if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
        return f"The model {model} did not answer in time; try again in a moment."
    if isinstance(exc, openai.APIConnectionError):
        return f"Could not reach {where}; check that it is running and try again."
    if isinstance(exc, openai.AuthenticationError):
        return f"The {where} refused the API key; check its key setting."
    if isinstance(exc, openai.NotFoundError):
        return f"The {where} does not serve the model {model.model!r}."
    if isinstance(exc, openai.RateLimitError):
        wait = _retry_after(exc)
        when = f"in {wait} second{'' if wait == 1 else 's'}" if wait else "shortly"
        if model.provider == LOCAL:  # fewtune serve's queue is full: it says 429 when busy
            return f"The local model server is busy with other replies; try again {when}."
        return f"The {where} is rate limiting requests; try again {when}."
    if isinstance(exc, openai.APIStatusError):
        return f"The {where} failed with HTTP {exc.status_code}; try again later."
    return f"The {where} failed: {exc}"
