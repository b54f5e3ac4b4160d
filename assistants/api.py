"""The frontends' door to the core: every call the CLI and Discord make, each one awaitable line.

Frontends `await core.api.<call>(...)` and never hop threads themselves: each call runs the
service's blocking method (SQLite, embedding, the index) on the core's own threads
(`Core.executor`) and hands the result back to the caller's event loop. The services keep their
plain sync methods for the core's own threads and for tests. The message path
(`core.chat`) and promotion (`core.promotions`) have async calls of their own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from assistants.actor import Actor
from assistants.assistant import Assistant
from assistants.demo import install_demo
from assistants.examples import Example, ImportResult
from assistants.feedback import Feedback
from assistants.knowledge import Found, KnowledgeFile
from assistants.transfer import export_assistant, import_assistant

if TYPE_CHECKING:
    from assistants.core import Core, RepairReport
    from assistants.promotion import Dataset

P = ParamSpec("P")
T = TypeVar("T")


class Api:
    """The async surface of one Core. Arguments and errors are the services' own."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._core.executor, functools.partial(fn, *args, **kwargs)
        )

    # -- the core itself -----------------------------------------------------------------------

    async def open_index(self) -> None:
        """Load the embedder and open the example and knowledge indexes (each checked against
        SQLite) before serving."""
        await self._run(self._core.index)
        await self._run(self._core.knowledge_index)

    async def start_local_server(self) -> bool:
        """Find or start the local model server in the background if a local model is used."""
        return await self._run(self._core.start_local_server)

    async def reindex(self) -> int:
        return await self._run(self._core.reindex)

    async def reindex_knowledge(self) -> int:
        return await self._run(self._core.reindex_knowledge)

    async def repair(self) -> RepairReport:
        return await self._run(self._core.repair)

    # -- assistants ----------------------------------------------------------------------------

    async def assistant(self, actor: Actor, name: str) -> Assistant:
        return await self._run(self._core.assistants.get, actor, name)

    async def assistant_by_id(self, assistant_id: int) -> Assistant:
        return await self._run(self._core.assistants.by_id, assistant_id)

    async def managed_assistant(self, actor: Actor, name: str, action: str) -> Assistant:
        return await self._run(self._core.assistants.get_managed, actor, name, action)

    async def assistants(self, actor: Actor) -> list[Assistant]:
        return await self._run(self._core.assistants.list, actor)

    async def complete_names(self, actor: Actor, prefix: str) -> list[str]:
        return await self._run(self._core.assistants.complete, actor, prefix)

    async def create_assistant(
        self, actor: Actor, name: str, instructions: str, **settings: Any
    ) -> Assistant:
        return await self._run(self._core.assistants.create, actor, name, instructions, **settings)

    async def edit_assistant(self, actor: Actor, name: str, /, **changes: Any) -> Assistant:
        return await self._run(self._core.assistants.edit, actor, name, **changes)

    async def delete_assistant(self, actor: Actor, name: str) -> Assistant:
        return await self._run(self._core.assistants.delete, actor, name)

    async def assistant_history(self, actor: Actor, name: str) -> list[dict[str, Any]]:
        return await self._run(self._core.assistants.history, actor, name)

    async def restore_assistant(self, actor: Actor, name: str, version: int) -> Assistant:
        return await self._run(self._core.assistants.restore, actor, name, version)

    async def export_assistant(self, actor: Actor, name: str) -> dict[str, Any]:
        return await self._run(export_assistant, self._core, actor, name)

    async def import_assistant(
        self, actor: Actor, data: bytes, name: str | None = None
    ) -> tuple[Assistant, ImportResult]:
        return await self._run(import_assistant, self._core, actor, data, name=name)

    async def install_demo(self, actor: Actor) -> Assistant:
        return await self._run(install_demo, self._core, actor)

    async def bind(self, actor: Actor, channel_id: str, name: str | None) -> Assistant | None:
        """Make `name` answer in a channel or thread (None unbinds)."""
        return await self._run(self._core.chat.bind, actor, channel_id, name)

    async def rollback(self, actor: Actor, name: str) -> Assistant:
        return await self._run(self._core.promotions.rollback, actor, name)

    async def dataset(
        self, actor: Actor, name: str, with_examples: bool | None = None
    ) -> tuple[Assistant, Dataset]:
        """What a promotion would train on (`with_examples`: None follows fewtune.toml)."""
        return await self._run(self._core.promotions.dataset, actor, name, with_examples)

    # -- examples ------------------------------------------------------------------------------

    async def count_examples(self, actor: Actor, name: str) -> int:
        return await self._run(self._core.examples.count, actor, name)

    async def examples(
        self, actor: Actor, name: str, offset: int = 0, limit: int | None = None
    ) -> list[Example]:
        return await self._run(self._core.examples.list, actor, name, offset, limit)

    async def search_examples(
        self, actor: Actor, name: str, query: str, k: int = 4
    ) -> list[tuple[Example, float]]:
        return await self._run(self._core.examples.search, actor, name, query, k)

    async def add_example(self, actor: Actor, name: str, input: str, output: str) -> Example:
        return await self._run(self._core.examples.add, actor, name, input, output)

    async def import_examples(
        self, actor: Actor, name: str, filename: str, data: bytes
    ) -> ImportResult:
        return await self._run(self._core.examples.import_data, actor, name, filename, data)

    async def export_examples(self, actor: Actor, name: str, fmt: str = "jsonl") -> str:
        return await self._run(self._core.examples.export, actor, name, fmt)

    async def remove_example(self, actor: Actor, name: str, example_id: int) -> Example:
        return await self._run(self._core.examples.remove, actor, name, example_id)

    # -- knowledge -----------------------------------------------------------------------------

    async def add_knowledge(
        self, actor: Actor, name: str, files: list[tuple[str, bytes]]
    ) -> list[KnowledgeFile]:
        """Add files (name, content) to an assistant's knowledge, all of them or none."""
        return await self._run(self._core.knowledge.add, actor, name, files)

    async def knowledge_files(self, actor: Actor, name: str) -> list[KnowledgeFile]:
        return await self._run(self._core.knowledge.list, actor, name)

    async def remove_knowledge(self, actor: Actor, name: str, file_id: int) -> KnowledgeFile:
        return await self._run(self._core.knowledge.remove, actor, name, file_id)

    async def search_knowledge(
        self, actor: Actor, name: str, query: str, k: int = 4
    ) -> list[Found]:
        return await self._run(self._core.knowledge.search, actor, name, query, k)

    # -- feedback ------------------------------------------------------------------------------

    async def rate(self, actor: Actor, message_id: int, rating: int) -> Feedback:
        return await self._run(self._core.feedback.rate, actor, message_id, rating)

    async def improve(self, actor: Actor, message_id: int, better_answer: str) -> Feedback:
        return await self._run(self._core.feedback.improve, actor, message_id, better_answer)

    async def corrections(self, actor: Actor, name: str) -> list[Feedback]:
        return await self._run(self._core.feedback.corrections, actor, name)

    async def adopt_correction(self, actor: Actor, feedback_id: int) -> Example:
        return await self._run(self._core.feedback.correction_to_example, actor, feedback_id)

    # -- privacy -------------------------------------------------------------------------------

    async def opt_out(self, user_id: str) -> None:
        await self._run(self._core.privacy.opt_out, user_id)

    async def opt_in(self, user_id: str) -> None:
        await self._run(self._core.privacy.opt_in, user_id)

    async def forget(self, user_id: str) -> int:
        """Delete every stored message of the user; returns how many."""
        return await self._run(self._core.privacy.forget, user_id)
