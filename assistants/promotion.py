"""Promotion: an assistant graduates to its own fine-tuned model.

Through the OpenAI fine-tuning API only (upload JSONL to /v1/files, create /v1/fine_tuning/jobs,
follow its events, read `fine_tuned_model`), so the same code promotes on a fewtune server on a
GPU machine (`local` by default) or on any hosted provider that offers fine-tuning.

After the job: evaluation on the held-out split, the assistant as it is (few-shot) against the
fine-tuned model alone and with retrieved examples (the article's hybrid). The assistant then
answers with the fine-tuned model plus its k retrieved examples (the hybrid), so the switch
happens only when the hybrid scores at least as well as few-shot, unless forced. Scores: exact
match (after trimming and case-folding) and mean token F1; the switch compares exact match, then
F1. Every figure is stored with the promotion and shown. Rollback returns to the previous model.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import tarfile
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlite_utils import Database

from assistants.actor import Actor
from assistants.assistant import Assistant, Assistants, now
from assistants.chat import Chat
from assistants.dataset import Dataset, build_dataset
from assistants.errors import InvalidInput, NotFound, ProviderError
from assistants.providers import LOCAL, ModelRef, Providers, describe

MIN_TRAIN_CHATS = 10  # fewer is not worth a fine-tune; --force overrides
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
SUFFIX = re.compile(r"[^A-Za-z0-9-]+")

OnProgress = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Promotion:
    id: int
    assistant_id: int
    provider: str
    base_model: str
    job_id: str | None
    status: str
    fine_tuned_model: str | None
    dataset_stats: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    previous_model: str | None
    switched: bool
    error: str | None
    created_at: str
    updated_at: str
    previous_k: int | None = None  # the assistant's k before a switch that set it to 0
    follower: dict[str, Any] | None = None  # where a frontend shows its progress (see follow_from)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Promotion:
        data = dict(row)
        for key in ("dataset_stats", "evaluation", "follower"):
            data[key] = json.loads(data[key]) if data[key] else None
        data["switched"] = bool(data["switched"])
        return cls(**data)


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def token_f1(answer: str, target: str) -> float:
    a, t = normalise(answer).split(), normalise(target).split()
    if not a or not t:
        return float(a == t)
    common = sum(min(a.count(w), t.count(w)) for w in set(a))
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(t)
    return 2 * precision * recall / (precision + recall)


class Promotions:
    def __init__(
        self,
        db: Database,
        assistants: Assistants,
        chat: Chat,
        providers: Providers,
        lock: threading.RLock,
    ) -> None:
        self.db = db
        self.assistants = assistants
        self.chat = chat
        self.providers = providers
        self.lock = lock

    # -- the dataset ---------------------------------------------------------------------------

    def dataset(self, actor: Actor, name: str) -> tuple[Assistant, Dataset]:
        assistant = self.assistants.get_managed(actor, name, "export the training data of")
        return assistant, build_dataset(self.db, assistant.id, assistant.instructions)

    # -- promotions ----------------------------------------------------------------------------

    def latest(self, actor: Actor, name: str) -> Promotion:
        assistant = self.assistants.get_managed(actor, name, "see promotions of")
        rows = list(
            self.db.query(
                "SELECT * FROM promotions WHERE assistant_id = ? ORDER BY id DESC LIMIT 1",
                [assistant.id],
            )
        )
        if not rows:
            raise NotFound(
                f"{assistant.name!r} has not been promoted yet: `fewtune promote {assistant.name}`."
            )
        return Promotion.from_row(rows[0])

    def _update(self, promotion_id: int, **fields: Any) -> Promotion:
        for key in ("dataset_stats", "evaluation", "follower"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        fields["updated_at"] = now()
        with self.lock, self.db.conn:
            self.db.table("promotions").update(promotion_id, fields)
        row = next(self.db.query("SELECT * FROM promotions WHERE id = ?", [promotion_id]))
        return Promotion.from_row(row)

    def follow_from(self, promotion_id: int, follower: dict[str, Any] | None) -> None:
        """Record where a frontend shows the promotion's progress (None: nobody follows it any
        more). A frontend that restarts finds what it was following with `followed`."""
        self._update(promotion_id, follower=follower)

    def followed(self, frontend: str) -> list[tuple[Promotion, Assistant]]:
        """The promotions `frontend` was following and has not seen through, oldest first."""
        rows = self.db.query("SELECT * FROM promotions WHERE follower IS NOT NULL ORDER BY id", [])
        found = []
        for row in rows:
            promotion = Promotion.from_row(row)
            if (promotion.follower or {}).get("frontend") == frontend:
                found.append((promotion, self.assistants.by_id(promotion.assistant_id)))
        return found

    def _base_model(self, assistant: Assistant, provider: str, base_model: str | None) -> str:
        if base_model:
            return base_model
        current = ModelRef.parse(assistant.model)
        if current.provider == provider:
            return current.model
        if provider == LOCAL:
            return self.providers.settings.server.model
        raise InvalidInput(f"Say which base model to fine-tune on {provider!r} with --base-model.")

    async def start(
        self,
        actor: Actor,
        name: str,
        *,
        provider: str | None = None,
        base_model: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        force: bool = False,
    ) -> Promotion:
        """Build the dataset, upload it and create the fine-tuning job."""
        assistant = self.assistants.get_managed(actor, name, "promote")
        provider = provider or ModelRef.parse(assistant.model).provider
        base = self._base_model(assistant, provider, base_model)
        data = await asyncio.to_thread(build_dataset, self.db, assistant.id, assistant.instructions)
        if len(data.train) < MIN_TRAIN_CHATS and not force:
            raise InvalidInput(
                f"{assistant.name!r} has {len(data.train)} training chats; promotion needs at "
                f"least {MIN_TRAIN_CHATS} (add examples or collect conversations, or use --force)."
            )
        if not data.train:
            raise InvalidInput(f"{assistant.name!r} has nothing to train on yet.")
        stamp = now()
        with self.lock, self.db.conn:
            promotion_id = (
                self.db.table("promotions")
                .insert(
                    {
                        "assistant_id": assistant.id,
                        "provider": provider,
                        "base_model": base,
                        "status": "uploading",
                        "dataset_stats": json.dumps(data.stats),
                        "previous_model": assistant.fine_tuned_model,
                        "created_at": stamp,
                        "updated_at": stamp,
                    }
                )
                .last_pk
            )
        import openai

        ref = ModelRef(provider, base)
        try:
            client = await self.providers.client(provider)
        except ProviderError as exc:
            # Without this the promotion would stay "uploading" for ever (no job to poll).
            self._update(int(promotion_id), status="failed", error=str(exc))  # type: ignore[arg-type]
            raise
        try:
            train = await client.files.create(
                file=(f"{assistant.name}-train.jsonl", data.jsonl("train").encode()),
                purpose="fine-tune",
            )
            validation = None
            if data.held_out:
                validation = await client.files.create(
                    file=(f"{assistant.name}-held-out.jsonl", data.jsonl("held_out").encode()),
                    purpose="fine-tune",
                )
            supervised: dict[str, Any] = {"hyperparameters": hyperparameters or {}}
            job = await client.fine_tuning.jobs.create(
                model=base,
                training_file=train.id,
                validation_file=validation.id if validation else None,
                suffix=SUFFIX.sub("-", assistant.name)[:40],
                method={"type": "supervised", "supervised": supervised},  # type: ignore[arg-type]
            )
        except openai.APIError as exc:
            self._update(int(promotion_id), status="failed", error=describe(ref, exc))  # type: ignore[arg-type]
            raise ProviderError(describe(ref, exc)) from exc
        return self._update(int(promotion_id), job_id=job.id, status=job.status)  # type: ignore[arg-type]

    async def _poll(
        self, promotion: Promotion, seen: set[str], on_progress: OnProgress | None
    ) -> Promotion:
        """Read the job and its new events once; store the status."""
        import openai

        assert promotion.job_id is not None
        client = await self.providers.client(promotion.provider)
        try:
            job = await client.fine_tuning.jobs.retrieve(promotion.job_id)
            events = await client.fine_tuning.jobs.list_events(promotion.job_id, limit=100)
        except openai.APIError as exc:
            ref = ModelRef(promotion.provider, promotion.base_model)
            raise ProviderError(describe(ref, exc)) from exc
        for event in reversed(events.data):
            if event.id in seen:
                continue
            seen.add(event.id)
            if on_progress:
                await on_progress(
                    {
                        "status": job.status,
                        "message": event.message,
                        "type": event.type,
                        "data": getattr(event, "data", None),
                    }
                )
        return self._update(
            promotion.id,
            status=job.status,
            fine_tuned_model=job.fine_tuned_model,
            error=job.error.message if job.error and job.error.message else None,
        )

    async def refresh(self, actor: Actor, name: str) -> Promotion:
        """The latest promotion, with its job's status read from the provider."""
        promotion = self.latest(actor, name)
        if promotion.job_id is None or promotion.status in TERMINAL_STATUSES:
            return promotion
        return await self._poll(promotion, set(), None)

    async def follow(
        self,
        actor: Actor,
        name: str,
        on_progress: OnProgress | None = None,
        poll_seconds: float = 2.0,
    ) -> Promotion:
        """Poll the job until it ends, passing each new event to on_progress."""
        promotion = self.latest(actor, name)
        seen: set[str] = set()
        while promotion.job_id is not None:
            promotion = await self._poll(promotion, seen, on_progress)
            if promotion.status in TERMINAL_STATUSES:
                break
            await asyncio.sleep(poll_seconds)
        return promotion

    async def cancel(self, actor: Actor, name: str) -> Promotion:
        promotion = self.latest(actor, name)
        if promotion.job_id is None or promotion.status in TERMINAL_STATUSES:
            raise InvalidInput(f"There is no running promotion of {name!r} to cancel.")
        import openai

        client = await self.providers.client(promotion.provider)
        try:
            job = await client.fine_tuning.jobs.cancel(promotion.job_id)
        except openai.APIError as exc:
            raise ProviderError(
                describe(ModelRef(promotion.provider, promotion.base_model), exc)
            ) from exc
        return self._update(promotion.id, status=job.status)

    # -- evaluation and the switch ---------------------------------------------------------------

    async def _answer(
        self, model: ModelRef, messages: list[dict[str, str]], max_tokens: int
    ) -> str:
        parts = []
        async for chunk in self.providers.stream_chat(model, messages, 0.0, max_tokens):
            parts.append(chunk.text)
        return "".join(parts).strip()

    async def evaluate(
        self, actor: Actor, name: str, on_progress: OnProgress | None = None, limit: int = 200
    ) -> dict[str, Any]:
        """Score few-shot, fine-tuned alone and fine-tuned + retrieved examples on the held-out split."""
        promotion = self.latest(actor, name)
        if promotion.status != "succeeded" or not promotion.fine_tuned_model:
            raise InvalidInput(
                f"The latest promotion of {name!r} has not succeeded; nothing to evaluate."
            )
        assistant = self.assistants.by_id(promotion.assistant_id)
        data = await asyncio.to_thread(build_dataset, self.db, assistant.id, assistant.instructions)
        items = []
        for chat in data.held_out[:limit]:
            messages = chat["messages"]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            if messages[last].get("weight", 1) == 0 or messages[last - 1]["role"] != "user":
                continue
            history = [{"role": m["role"], "content": m["content"]} for m in messages[1 : last - 1]]
            items.append((history, messages[last - 1]["content"], messages[last]["content"]))
        if not items:
            raise InvalidInput(f"{assistant.name!r} has no held-out chats to evaluate on.")
        few_shot_model = ModelRef.parse(promotion.previous_model or assistant.model)
        tuned = ModelRef(promotion.provider, promotion.fine_tuned_model)
        settings = {
            "few_shot": (few_shot_model, assistant.k),
            "fine_tuned": (tuned, 0),
            "fine_tuned_with_examples": (tuned, assistant.k),
        }
        exclude = frozenset(data.held_out_example_ids)
        max_tokens = assistant.max_tokens or self.providers.settings.chat.reply_tokens
        results: dict[str, Any] = {}
        for label, (model, k) in settings.items():
            exact = 0
            f1 = 0.0
            outcomes = []
            for history, question, target in items:
                composed = await asyncio.to_thread(
                    self.chat.compose, assistant, history, question, k=k, exclude=exclude
                )
                answer = await self._answer(model, composed.messages, max_tokens)
                hit = normalise(answer) == normalise(target)
                exact += hit
                f1 += token_f1(answer, target)
                outcomes.append(int(hit))
            results[label] = {
                "model": str(model),
                "k": k,
                "exact_match": exact / len(items),
                "token_f1": f1 / len(items),
                "outcomes": outcomes,
            }
            if on_progress:
                await on_progress(
                    {"status": "evaluating", "message": f"{label}: {exact}/{len(items)} exact"}
                )
        results["items"] = len(items)
        self._update(promotion.id, evaluation=results)
        return results

    def switch(self, actor: Actor, name: str, force: bool = False) -> Promotion:
        """Switch to the fine-tuned model if it is not worse than few-shot (or if forced).

        It is served the way it scored best: with the assistant's retrieved examples (the
        hybrid), or alone (k set to 0) when alone scored higher; rollback restores k too."""
        promotion = self.latest(actor, name)
        if promotion.status != "succeeded" or not promotion.fine_tuned_model:
            raise InvalidInput(f"The latest promotion of {name!r} has not succeeded.")
        evaluation = promotion.evaluation or {}
        if not evaluation and not force:
            raise InvalidInput(f"Evaluate the promotion of {name!r} first, or use --force.")

        def score(label: str) -> tuple[float, float]:
            return (evaluation[label]["exact_match"], evaluation[label]["token_f1"])

        alone_is_best = bool(evaluation) and score("fine_tuned") > score("fine_tuned_with_examples")
        best = "fine_tuned" if alone_is_best else "fine_tuned_with_examples"
        if not force and score(best) < score("few_shot"):
            return self._update(promotion.id, switched=0)
        assistant = self.assistants.set_fine_tuned_model(
            actor, name, f"{promotion.provider}:{promotion.fine_tuned_model}"
        )
        previous_k = None
        if alone_is_best and assistant.k != 0:
            previous_k = assistant.k
            self.assistants.edit(actor, name, k=0)
        return self._update(promotion.id, switched=1, previous_k=previous_k)

    def rollback(self, actor: Actor, name: str) -> Assistant:
        """Answer with the model used before the latest switch (the few-shot model, or an
        earlier fine-tune), with the k it had."""
        assistant = self.assistants.get_managed(actor, name, "roll back")
        if not assistant.fine_tuned_model:
            raise InvalidInput(f"{assistant.name!r} is not using a fine-tuned model.")
        rows = list(
            self.db.query(
                "SELECT * FROM promotions WHERE assistant_id = ? AND switched = 1 ORDER BY id DESC LIMIT 1",
                [assistant.id],
            )
        )
        switched = Promotion.from_row(rows[0]) if rows else None
        if switched:
            self._update(switched.id, switched=0)
            if switched.previous_k is not None:
                self.assistants.edit(actor, name, k=switched.previous_k)
        previous = switched.previous_model if switched else None
        return self.assistants.set_fine_tuned_model(actor, name, previous)

    # -- the adapter ---------------------------------------------------------------------------

    async def download_adapter(self, actor: Actor, name: str, folder: Path) -> Path:
        """Fetch the fine-tuned adapter (PEFT format) into `folder`. A fewtune server extension:
        hosted providers do not hand out their fine-tuned weights."""
        promotion = self.latest(actor, name)
        if promotion.status != "succeeded" or not promotion.job_id:
            raise InvalidInput(
                f"The latest promotion of {name!r} has not succeeded; no adapter yet."
            )
        client = await self.providers.client(promotion.provider)
        url = f"{str(client.base_url).rstrip('/')}/fine_tuning/jobs/{promotion.job_id}/adapter"
        try:
            async with httpx.AsyncClient(timeout=300) as http:
                response = await http.get(
                    url, headers={"Authorization": f"Bearer {client.api_key}"}
                )
        except httpx.HTTPError as exc:
            raise ProviderError(f"Could not download the adapter: {exc}.") from exc
        if response.status_code == 404:
            raise ProviderError(
                f"Provider {promotion.provider!r} does not offer adapter downloads (only fewtune servers do)."
            )
        if response.status_code != 200:
            raise ProviderError(f"The adapter download failed with HTTP {response.status_code}.")
        return await asyncio.to_thread(_unpack, response.content, folder)


def _unpack(data: bytes, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        archive.extractall(folder, filter="data")  # "data" refuses absolute paths and ../ escapes
    return folder
