"""Promotion: an assistant graduates to its own fine-tuned model.

Through the OpenAI fine-tuning API only (upload JSONL to /v1/files, create /v1/fine_tuning/jobs,
follow its events, read `fine_tuned_model`), so the same code promotes on a fewtune server on a
GPU machine (`local` by default) or on any hosted provider that offers fine-tuning.

Training chats carry the examples the assistant retrieves for them, as it will be served
(`[promotion] train_with_examples`, see assistants/dataset.py). After the job: evaluation on the
held-out split, the assistant as it is (few-shot) against the fine-tuned model alone and with
retrieved examples (the article's hybrid), item by item (assistants/evaluation.py); the gate
(assistants/gate.py) switches only when a candidate is significantly better than few-shot on
the primary metric (a judge, the likelihood of the owner's answers, exact match, token F1),
unless forced. Every figure is stored with the promotion and shown. Rollback returns to the
previous model (and k).

`Promotions.promote` runs the whole way (start, follow, evaluate, switch) once for every
frontend, reporting each `Step` to a callback; frontends only render the steps. One promotion
per assistant is active at a time (a unique index in SQLite, storage/db.py migration 5), so a
second start from any frontend is refused with one sentence; `cancel` ends the active one.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import re
import sqlite3
import tarfile
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from sqlite_utils import Database

from assistants.actor import Actor
from assistants.assistant import Assistant, Assistants, now
from assistants.chat import Chat, Composed
from assistants.dataset import Dataset, build_dataset
from assistants.errors import InvalidInput, LimitExceeded, NotFound, ProviderError
from assistants.evaluation import Evaluation, Setting
from assistants.providers import LOCAL, ModelRef, Providers, describe
from storage.settings import judge_is_valid

MIN_TRAIN_CHATS = 10  # fewer is not worth a fine-tune; force overrides
ENDED_STATUSES = ("succeeded", "failed", "cancelled")  # a promotion in any other is active
# The job succeeded and its followed promotion is being evaluated and switched: still active.
EVALUATING = "evaluating"
SUFFIX = re.compile(r"[^A-Za-z0-9-]+")
# Why a promotion whose frontend stopped before its fine-tuning job existed has ended.
NOT_CREATED = (
    "The fine-tuning job was never created (fewtune stopped while it uploaded the data); "
    "promote again."
)


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

    @property
    def job(self) -> str:
        """Its job, as messages name it: "job ftjob-…", or that none was created."""
        return f"job {self.job_id}" if self.job_id else "no job created"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Promotion:
        data = dict(row)
        for key in ("dataset_stats", "evaluation", "follower"):
            data[key] = json.loads(data[key]) if data[key] else None
        data["switched"] = bool(data["switched"])
        return cls(**data)


@dataclass(frozen=True)
class Step:
    """One step of a promotion, as `Promotions.promote` reports it.

    kind: "started" (the job exists), "event" (the job's status and one of its events:
    `message`, and `metrics` for a training-metrics event), "evaluating" (the job succeeded;
    the evaluation begins), "evaluated" (one setting scored, or the judge's verdicts on one
    candidate, in `message`) or "switched" (the decision: `promotion.evaluation` and
    `promotion.switched`). `promotion` is as stored then.
    """

    kind: str
    promotion: Promotion
    message: str = ""
    metrics: dict[str, Any] | None = None


OnStep = Callable[[Step], Awaitable[None]]


def _already_running(assistant: Assistant, promotion: Promotion) -> LimitExceeded:
    job = promotion.job if promotion.job_id else "its job is being created"
    return LimitExceeded(
        f"A promotion of {assistant.name!r} is already running ({job}, {promotion.status}); "
        "wait for it to end or cancel it."
    )


class Promotions:
    def __init__(
        self,
        db: Database,
        assistants: Assistants,
        chat: Chat,
        providers: Providers,
        lock: threading.RLock,
        executor: Executor,
    ) -> None:
        self.db = db
        self.assistants = assistants
        self.chat = chat
        self.providers = providers
        self.lock = lock
        self.executor = executor

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run blocking work (SQLite, the dataset, the switch) on the core's worker threads."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    # -- the dataset ---------------------------------------------------------------------------

    def dataset(
        self, actor: Actor, name: str, with_examples: bool | None = None
    ) -> tuple[Assistant, Dataset]:
        """The chats a promotion of `name` would train on (`with_examples`: whether they carry
        their retrieved examples; None: `[promotion] train_with_examples`)."""
        assistant = self.assistants.get_managed(actor, name, "export the training data of")
        return assistant, self._build(assistant, with_examples)

    def _build(self, assistant: Assistant, with_examples: bool | None) -> Dataset:
        if with_examples is None:
            with_examples = self.chat.settings.promotion.train_with_examples

        def serve(
            history: list[dict[str, str]],
            text: str,
            exclude: frozenset[int],
            seed: int,
            chunk_ids: list[int] | None,
        ) -> Composed:
            return self.chat.compose(
                assistant, history, text, seed=seed, exclude=exclude, chunk_ids=chunk_ids
            )

        data = build_dataset(
            self.db, assistant.id, assistant.instructions, serve=serve if with_examples else None
        )
        # The gate's floor beside the held-out count: below it, the evaluation cannot decide.
        data.stats["held_out_floor"] = self.chat.settings.evaluation.min_held_out
        return data

    def _name(self, name: str | int) -> str:
        """An assistant's name, from a name or an id (a Discord button's)."""
        return self.assistants.by_id(name).name if isinstance(name, int) else name

    def _to_promote(
        self, actor: Actor, name: str | int, force: bool, with_examples: bool | None = None
    ) -> tuple[Assistant, Dataset]:
        """The assistant and its dataset, refused unless a promotion may start: the actor
        manages it, none is active, and there is enough to train on (the one minimum-data rule)."""
        assistant = self.assistants.get_managed(actor, self._name(name), "promote")
        self._refuse_if_active(assistant)
        data = self._build(assistant, with_examples)
        if len(data.train) < MIN_TRAIN_CHATS and not force:
            raise InvalidInput(
                f"{assistant.name!r} has {len(data.train)} training chats; promotion needs at "
                f"least {MIN_TRAIN_CHATS} (add examples or collect conversations, or promote "
                "with force)."
            )
        if not data.train:
            raise InvalidInput(f"{assistant.name!r} has nothing to train on yet.")
        return assistant, data

    async def to_promote(
        self, actor: Actor, name: str | int, force: bool, with_examples: bool | None = None
    ) -> tuple[Assistant, Dataset]:
        """What a promotion of `name` (or the assistant with that id) would train on, refused
        as `start` would refuse it."""
        result: tuple[Assistant, Dataset] = await self._in_thread(
            self._to_promote, actor, name, force, with_examples
        )
        return result

    # -- promotions ----------------------------------------------------------------------------

    def latest(self, actor: Actor, name: str) -> Promotion:
        assistant = self.assistants.get_managed(actor, name, "see promotions of")
        promotion = self._latest_of(assistant.id)
        if promotion is None:
            raise NotFound(
                f"{assistant.name!r} has not been promoted yet: `fewtune promote {assistant.name}`."
            )
        return promotion

    def _latest_of(self, assistant_id: int) -> Promotion | None:
        rows = list(
            self.db.query(
                "SELECT * FROM promotions WHERE assistant_id = ? ORDER BY id DESC LIMIT 1",
                [assistant_id],
            )
        )
        return Promotion.from_row(rows[0]) if rows else None

    def _get(self, promotion_id: int) -> Promotion:
        row = next(self.db.query("SELECT * FROM promotions WHERE id = ?", [promotion_id]))
        return Promotion.from_row(row)

    def _update(self, promotion_id: int, **fields: Any) -> Promotion:
        for key in ("dataset_stats", "evaluation", "follower"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        fields["updated_at"] = now()
        with self.lock, self.db.conn:
            self.db.table("promotions").update(promotion_id, fields)
        return self._get(promotion_id)

    def _refuse_if_active(self, assistant: Assistant) -> None:
        marks = ", ".join("?" * len(ENDED_STATUSES))
        rows = list(
            self.db.query(
                f"SELECT * FROM promotions WHERE assistant_id = ? AND status NOT IN ({marks})",
                [assistant.id, *ENDED_STATUSES],
            )
        )
        if rows:
            raise _already_running(assistant, Promotion.from_row(rows[0]))

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

    async def to_resume(self, frontend: str) -> list[tuple[Promotion, Assistant]]:
        """`followed`, for a frontend's loop: what it goes on following after a restart."""
        found: list[tuple[Promotion, Assistant]] = await self._in_thread(self.followed, frontend)
        return found

    def _check_judge(self, judge: str) -> None:
        """A judge names a known provider and a model ("provider:model")."""
        if not judge_is_valid(judge):
            raise InvalidInput(f'A judge is "provider:model", not {judge!r}.')
        try:
            self.providers.config(ModelRef.parse(judge).provider)
        except ProviderError as exc:
            raise InvalidInput(f"The judge {judge!r} cannot be used: {exc}") from exc

    def _base_model(self, assistant: Assistant, provider: str, base_model: str | None) -> str:
        if base_model:
            return base_model
        current = ModelRef.parse(assistant.model)
        if current.provider == provider:
            return current.model
        if provider == LOCAL:
            return self.providers.settings.server.model
        raise InvalidInput(f"Say which base model to fine-tune on {provider!r} with --base-model.")

    def _insert(
        self,
        assistant: Assistant,
        provider: str,
        base: str,
        data: Dataset,
        follower: dict[str, Any] | None,
    ) -> int:
        """The new promotion's row; the unique index refuses a second active one (a start from
        another process that got past `_refuse_if_active` at the same moment)."""
        stamp = now()
        try:
            with self.lock, self.db.conn:
                return int(
                    self.db.table("promotions")
                    .insert(
                        {
                            "assistant_id": assistant.id,
                            "provider": provider,
                            "base_model": base,
                            "status": "uploading",
                            "dataset_stats": json.dumps(data.stats),
                            "previous_model": assistant.fine_tuned_model,
                            "follower": json.dumps(follower) if follower else None,
                            "created_at": stamp,
                            "updated_at": stamp,
                        }
                    )
                    .last_pk  # type: ignore[arg-type]
                )
        except sqlite3.IntegrityError:
            self._refuse_if_active(assistant)
            raise

    async def start(
        self,
        actor: Actor,
        name: str,
        *,
        provider: str | None = None,
        base_model: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        force: bool = False,
        follower: dict[str, Any] | None = None,
        with_examples: bool | None = None,
    ) -> Promotion:
        """Build the dataset, upload it and create the fine-tuning job (`follower`: where a
        frontend shows its progress, see `follow_from`; `with_examples`: whether the training
        chats carry their retrieved examples, None: `[promotion] train_with_examples`)."""
        assistant, data = await self.to_promote(actor, name, force, with_examples)
        provider = provider or ModelRef.parse(assistant.model).provider
        base = self._base_model(assistant, provider, base_model)
        promotion_id = await self._in_thread(
            self._insert, assistant, provider, base, data, follower
        )
        import openai

        ref = ModelRef(provider, base)
        try:
            client = await self.providers.client(provider)
        except ProviderError as exc:
            # Without this the promotion would stay "uploading" for ever (no job to poll).
            await self._in_thread(self._update, promotion_id, status="failed", error=str(exc))
            raise
        try:
            job = await self._create_job(client, assistant, base, data, hyperparameters)
        except openai.APIError as exc:
            reason = describe(ref, exc)
            await self._in_thread(self._update, promotion_id, status="failed", error=reason)
            raise ProviderError(reason) from exc
        except asyncio.CancelledError:
            # The frontend stopped (a bot closing, Ctrl-C) before the job existed: nothing could
            # follow this promotion, so it ends now rather than block the next one for ever.
            await asyncio.shield(
                self._in_thread(self._update, promotion_id, status="failed", error=NOT_CREATED)
            )
            raise
        started: Promotion = await self._in_thread(
            self._job_created, promotion_id, job.id, job.status
        )
        if started.status == "cancelled":  # cancelled while its job was being created
            try:
                await client.fine_tuning.jobs.cancel(job.id)
            except openai.APIError as exc:
                raise ProviderError(describe(ref, exc)) from exc
        return started

    async def _create_job(
        self,
        client: Any,
        assistant: Assistant,
        base: str,
        data: Dataset,
        hyperparameters: dict[str, Any] | None,
    ) -> Any:
        """Upload the training (and held-out) file and create the job on the provider."""
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
        return await client.fine_tuning.jobs.create(
            model=base,
            training_file=train.id,
            validation_file=validation.id if validation else None,
            suffix=SUFFIX.sub("-", assistant.name)[:40],
            method={"type": "supervised", "supervised": supervised},
        )

    def _job_created(self, promotion_id: int, job_id: str, status: str) -> Promotion:
        """Store the new job; a promotion cancelled while it was being created (from any
        process: one statement) stays cancelled, and its creator cancels the job."""
        with self.lock, self.db.conn:
            self.db.execute(
                "UPDATE promotions SET job_id = ?, updated_at = ?, status = CASE "
                "WHEN status = 'cancelled' THEN status ELSE ? END WHERE id = ?",
                [job_id, now(), status, promotion_id],
            )
        return self._get(promotion_id)

    async def _poll(
        self, promotion: Promotion, seen: set[str], on_step: OnStep | None
    ) -> Promotion:
        """Read the job and its new events once; store the status (a followed promotion whose
        job succeeded stays active as EVALUATING until its switch is decided)."""
        import openai

        assert promotion.job_id is not None
        client = await self.providers.client(promotion.provider)
        try:
            job = await client.fine_tuning.jobs.retrieve(promotion.job_id)
            events = await client.fine_tuning.jobs.list_events(promotion.job_id, limit=100)
        except openai.APIError as exc:
            ref = ModelRef(promotion.provider, promotion.base_model)
            raise ProviderError(describe(ref, exc)) from exc
        status: str = job.status
        if status == "succeeded" and promotion.follower:
            status = EVALUATING
        for event in reversed(events.data):
            if event.id in seen:
                continue
            seen.add(event.id)
            if on_step:
                data = getattr(event, "data", None)
                metrics = data if event.type == "metrics" and data else None
                await on_step(
                    Step("event", replace(promotion, status=status), event.message, metrics)
                )
        stored: Promotion = await self._in_thread(
            self._update,
            promotion.id,
            status=status,
            fine_tuned_model=job.fine_tuned_model,
            error=job.error.message if job.error and job.error.message else None,
        )
        return stored

    async def refresh(self, actor: Actor, name: str) -> Promotion:
        """The latest promotion, with its job's status read from the provider."""
        promotion = await self._in_thread(self.latest, actor, name)
        if promotion.job_id is None or promotion.status in (*ENDED_STATUSES, EVALUATING):
            return promotion
        return await self._poll(promotion, set(), None)

    async def _follow(
        self, promotion: Promotion, on_step: OnStep | None, poll_seconds: float
    ) -> Promotion:
        """Poll the job until it ends (read once at least: a resumed follower sees every event
        again), passing each new event to on_step."""
        seen: set[str] = set()
        while promotion.job_id is not None:
            promotion = await self._poll(promotion, seen, on_step)
            if promotion.status in (*ENDED_STATUSES, EVALUATING):
                break
            await asyncio.sleep(poll_seconds)
        return promotion

    async def follow(
        self, actor: Actor, name: str, on_step: OnStep | None = None, poll_seconds: float = 2.0
    ) -> Promotion:
        """Poll the latest promotion's job until it ends, passing each new event to on_step."""
        promotion = await self._in_thread(self.latest, actor, name)
        return await self._follow(promotion, on_step, poll_seconds)

    async def promote(
        self,
        actor: Actor,
        name: str,
        where: dict[str, Any],
        on_step: OnStep | None = None,
        *,
        provider: str | None = None,
        base_model: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        force: bool = False,
        resumable: bool = False,
        poll_seconds: float = 2.0,
        with_examples: bool | None = None,
        judge: str | None = None,
    ) -> Promotion:
        """The whole promotion: start, follow the job, evaluate, switch (force: with little data,
        and even if not better; judge: "provider:model" over `[evaluation] judge`). Each step
        goes to on_step; the promotion as it ended is returned (its status says how the job
        ended; `switched` the decision).

        `where` names the frontend ("frontend") and where it shows the progress; it is stored
        with the actor and `force`, so that a `resumable` frontend, restarted, goes on with
        `resume`. A frontend that does not resume lets the promotion go when it is stopped."""
        if judge is not None:
            self._check_judge(judge)
        follower = {**where, "actor": actor.to_dict(), "force": force, "judge": judge}
        promotion = await self.start(
            actor,
            name,
            provider=provider,
            base_model=base_model,
            hyperparameters=hyperparameters,
            force=force,
            follower=follower,
            with_examples=with_examples,
        )
        try:
            if on_step:
                await on_step(Step("started", promotion))
            return await self._see_through(promotion, actor, force, on_step, poll_seconds)
        except asyncio.CancelledError:
            if not resumable:
                await asyncio.shield(self._in_thread(self._let_go, promotion.id))
            raise

    async def resume(
        self, promotion: Promotion, on_step: OnStep | None = None, poll_seconds: float = 2.0
    ) -> Promotion:
        """Go on with a followed promotion (from `to_resume`) to its end, as the actor who
        started it, with the permissions they had then."""
        follower = promotion.follower or {}
        if promotion.job_id is None and promotion.status not in (*ENDED_STATUSES, EVALUATING):
            # Its frontend stopped (its process ended) while the job was being created.
            await self._in_thread(self._update, promotion.id, status="failed", error=NOT_CREATED)
            await self._in_thread(self._let_go, promotion.id)
            raise InvalidInput(NOT_CREATED)
        actor = Actor.from_dict(follower["actor"])
        return await self._see_through(
            promotion, actor, bool(follower.get("force")), on_step, poll_seconds
        )

    async def _see_through(
        self,
        promotion: Promotion,
        actor: Actor,
        force: bool,
        on_step: OnStep | None,
        poll_seconds: float,
    ) -> Promotion:
        """Follow, evaluate, switch; then nobody follows the promotion any more. An error ends
        following it too; the bot closing (cancelled) does not: it resumes after a restart."""
        try:
            promotion = await self._follow(promotion, on_step, poll_seconds)
            if promotion.status == EVALUATING:
                if on_step:
                    await on_step(Step("evaluating", promotion, "Evaluating on held-out chats…"))
                await self._evaluate(promotion, on_step)
                promotion = await self._in_thread(self._decide, promotion.id, actor, force)
                if promotion.status == "succeeded" and on_step:
                    await on_step(Step("switched", promotion))
        except Exception:
            await self._in_thread(self._let_go, promotion.id)
            raise
        ended: Promotion = await self._in_thread(self._let_go, promotion.id)
        return ended

    def _let_go(self, promotion_id: int) -> Promotion:
        """Nobody follows the promotion any more; an evaluation left unfinished ends it."""
        promotion = self._get(promotion_id)
        if promotion.status == EVALUATING:
            return self._update(promotion_id, status="succeeded", follower=None)
        return self._update(promotion_id, follower=None)

    async def cancel(self, actor: Actor, name: str | int) -> Promotion:
        """Cancel the active promotion of `name` (or of the assistant with that id): its job, or
        (the job done) its evaluation, so that nothing is switched. The frontend following it
        shows it ended cancelled."""
        name = await self._in_thread(self._name, name)
        assistant = await self._in_thread(
            self.assistants.get_managed, actor, name, "cancel promotions of"
        )
        promotion = await self._in_thread(self._latest_of, assistant.id)
        if promotion is None or promotion.status in ENDED_STATUSES:
            raise InvalidInput(f"There is no running promotion of {name!r} to cancel.")
        if promotion.status == EVALUATING or promotion.job_id is None:
            # Evaluating: nothing is switched. No job yet: its creator cancels the job it gets
            # (see _job_created), or its process is gone and nothing runs.
            cancelled: Promotion = await self._in_thread(
                self._update, promotion.id, status="cancelled"
            )
            return cancelled
        import openai

        client = await self.providers.client(promotion.provider)
        try:
            job = await client.fine_tuning.jobs.cancel(promotion.job_id)
        except openai.APIError as exc:
            raise ProviderError(
                describe(ModelRef(promotion.provider, promotion.base_model), exc)
            ) from exc
        stored: Promotion = await self._in_thread(self._update, promotion.id, status=job.status)
        return stored

    # -- evaluation and the switch ---------------------------------------------------------------

    async def _evaluate(
        self, promotion: Promotion, on_step: OnStep | None, limit: int = 200
    ) -> dict[str, Any]:
        """Score few-shot, fine-tuned alone and fine-tuned + retrieved examples on the held-out
        split (assistants/evaluation.py) and decide (assistants/gate.py); stored with the
        promotion."""
        assert promotion.fine_tuned_model is not None
        assistant = await self._in_thread(self.assistants.by_id, promotion.assistant_id)
        # The held-out chats' own turns (their prompts are built here): no retrieval needed.
        data = await self._in_thread(build_dataset, self.db, assistant.id, assistant.instructions)
        items = data.held_out_items[:limit]
        if not items:
            raise InvalidInput(f"{assistant.name!r} has no held-out chats to evaluate on.")
        few_shot_model = ModelRef.parse(promotion.previous_model or assistant.model)
        tuned = ModelRef(promotion.provider, promotion.fine_tuned_model)
        settings = {
            "few_shot": Setting(few_shot_model, assistant.k),
            "fine_tuned": Setting(tuned, 0),
            "fine_tuned_with_examples": Setting(tuned, assistant.k),
        }
        judge = (promotion.follower or {}).get("judge") or self.chat.settings.evaluation.judge
        judge_ref = ModelRef.parse(judge) if judge else None

        async def on_progress(message: str) -> None:
            if on_step:
                await on_step(Step("evaluated", promotion, message))

        evaluation = Evaluation(self.chat, self.providers, self.executor, assistant)
        results = await evaluation.run(items, settings, judge_ref, on_progress)
        await self._in_thread(self._update, promotion.id, evaluation=results)
        return results

    def _decide(self, promotion_id: int, actor: Actor, force: bool) -> Promotion:
        """The evaluated promotion's switch, unless it was cancelled meanwhile."""
        promotion = self._get(promotion_id)
        if promotion.status != EVALUATING:
            return promotion
        return self._switch(replace(promotion, status="succeeded"), actor, force)

    def switch(self, actor: Actor, name: str, force: bool = False) -> Promotion:
        """Switch to the fine-tuned model when the stored evaluation's decision says so (or if
        forced).

        It is served as the gate's candidate: with the assistant's retrieved examples (the
        hybrid), or alone (k set to 0); rollback restores k too."""
        promotion = self.latest(actor, name)
        if promotion.status != "succeeded" or not promotion.fine_tuned_model:
            raise InvalidInput(f"The latest promotion of {name!r} has not succeeded.")
        return self._switch(promotion, actor, force)

    def _switch(self, promotion: Promotion, actor: Actor, force: bool) -> Promotion:
        evaluation = promotion.evaluation or {}
        assistant = self.assistants.by_id(promotion.assistant_id)
        if not evaluation and not force:
            raise InvalidInput(
                f"Evaluate the promotion of {assistant.name!r} first, or use --force."
            )

        decision = evaluation.get("decision") or {}
        if not force and not decision.get("switch"):
            return self._update(promotion.id, status=promotion.status, switched=0)
        alone_is_best = decision.get("candidate") == "fine_tuned"
        if decision.get("reason") and not decision.get("switch"):
            # Forced: stored, so that status and the live message say what this switch did.
            said = decision["reason"][0].lower() + decision["reason"][1:]
            forced = {
                **decision,
                "forced": True,
                "reason": f"Switched as forced, though the gate said: {said}",
            }
            self._update(promotion.id, evaluation={**evaluation, "decision": forced})
        assistant = self.assistants.set_fine_tuned_model(
            actor, assistant.name, f"{promotion.provider}:{promotion.fine_tuned_model}"
        )
        previous_k = None
        if alone_is_best and assistant.k != 0:
            previous_k = assistant.k
            self.assistants.edit(actor, assistant.name, k=0)
        return self._update(
            promotion.id, status=promotion.status, switched=1, previous_k=previous_k
        )

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
