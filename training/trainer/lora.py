"""fewtune's LoRA trainer: chat JSONL in, a PEFT adapter out, with checkpoints, events and resume.

Why a plain loop on `accelerate.Accelerator` and not TRL's SFTTrainer: SmolLM2's chat template has
no `{% generation %}` markers and its pad token is its end token, so TRL's assistant-only loss
and its collator cannot mark the tokens to learn; we build the labels ourselves
(`chat_data.tokenize_chat`). Past that, what fewtune needs is mostly not what SFTTrainer does:
atomic `checkpoints/step-N` folders that a crashed job resumes from, events for the job's API,
cancelling between steps, an adapter published atomically, and a loss computed only where it is
needed (the output layer runs on learned positions only; see `_AssistantLoss`). A loop of a few
hundred lines does all that and reads top to bottom; the Accelerator makes the same loop run on one
CPU, one GPU or under `accelerate launch` on several.

Batching: length-grouped, not packed. Packing without a varlen attention kernel lets examples
attend to each other; grouping (shuffle, sort each 50-batch window by length, shuffle the batches)
keeps padding small with any attention implementation, and each batch is still random.

Run:
    python -m training.trainer --base ~/models/SmolLM2 --train train.jsonl --out runs/a
    accelerate launch -m training.trainer --base DIR --train FILE --out DIR \
        --config '{"n_epochs": 1}'

Heavy imports (torch, transformers, peft, accelerate) happen inside `train`, so the fine-tuning
API can import `TrainConfig` cheaply.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.trainer.chat_data import (
    DatasetError,
    TokenizedChat,
    tokenize_chat,
    validate_chat_jsonl,
)

GROUP_WINDOW = 50  # batches per window sorted by length: less padding, still shuffled
Event = dict[str, Any]


class TrainError(RuntimeError):
    """Training cannot start or go on for a reason a user can act on (config, checkpoint, data)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults suit a ~135M model such as SmolLM2-135M-Instruct."""

    n_epochs: int = 3  # passes over the training file
    batch_size: int = 8  # examples per optimizer step, over all processes together
    grad_accum: int = 1  # micro-batches each process splits its share of a batch into (memory)
    learning_rate: float = 2e-4  # peak rate, after warmup: a usual LoRA rate
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    warmup: float = 0.03  # below 1: a fraction of all steps; from 1: a number of steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 disables clipping
    max_seq_len: int = 2048  # longer examples are cut (the event stream says how many)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    seed: int = 42  # LoRA init, batch order and dropout all follow it
    checkpoint_every: int = 100  # steps; 0 disables periodic checkpoints
    keep_checkpoints: int = 2  # newest checkpoints kept; older ones are deleted
    eval_every: int | None = None  # steps between validation runs; None: about 10 per run
    # Validation chats scored at the steps in between (a fixed spread of the file, as OpenAI's
    # per-step `valid_loss`); the last step scores the whole file (`full_valid_loss`).
    valid_sample: int = 64
    log_every: int = 1  # steps between metrics events
    max_steps: int | None = None  # stop early after this many steps (tests, benchmarks)
    gradient_checkpointing: bool | None = None  # None: on with CUDA (memory), off on the CPU
    bf16: bool | None = None  # None: on where CUDA supports it; fp32 on the CPU
    base_model_name: str | None = None  # adapter_config's base_model_name_or_path; None: the dir

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from JSON-like values; an unknown key is an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainError(f'unknown training option "{unknown[0]}"')
        if "target_modules" in values:
            values = {**values, "target_modules": tuple(values["target_modules"])}
        return cls(**values)


@dataclass(frozen=True)
class TrainResult:
    """What a run did. `adapter_path` is None when it was cancelled."""

    adapter_path: Path | None
    steps: int  # optimizer steps done in total (resumed runs count the earlier ones)
    total_steps: int
    trained_tokens: int  # tokens fed to the model (not padding), over all epochs
    train_loss: float | None  # mean over the last logged step
    valid_loss: float | None  # over the whole validation file, at the end
    cancelled: bool = False
    hyperparameters: dict[str, Any] = field(default_factory=dict)


def train(
    config: TrainConfig,
    base_model_dir: str | Path,
    train_file: str | Path,
    output_dir: str | Path,
    validation_file: str | Path | None = None,
    on_event: Callable[[Event], None] | None = None,
    resume_from: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `train_file` and publish it to `output_dir/adapter`.

    `resume_from`: None starts afresh; "latest" resumes from the newest checkpoint in
    `output_dir/checkpoints` (or starts afresh if there is none); a path resumes from that one.
    `on_event` gets dicts: {"type": "message", "level", "message"}, {"type": "metrics", "step",
    "total_steps", "epoch", "train_loss", "valid_loss"?, "tokens", "learning_rate", "elapsed"},
    {"type": "checkpoint", "step", "path"}. `should_stop()` is asked before each step; when it
    says True, a checkpoint is written and the run returns with `cancelled=True`.
    Raises DatasetError for a bad file and TrainError for other problems a user can fix.
    """
    return _Run(config, Path(base_model_dir), Path(output_dir), on_event).run(
        Path(train_file),
        Path(validation_file) if validation_file else None,
        resume_from,
        should_stop,
    )


class _Run:
    """One training run: the state the loop, the checkpoints and the events share."""

    def __init__(
        self,
        config: TrainConfig,
        base_model_dir: Path,
        output_dir: Path,
        on_event: Callable[[Event], None] | None,
    ) -> None:
        import torch
        from accelerate import Accelerator

        self.config = config
        self.base_model_dir = base_model_dir
        self.output_dir = output_dir
        cuda = torch.cuda.is_available()
        bf16 = config.bf16 if config.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
        self.bf16 = bool(bf16)
        self.gradient_checkpointing = (
            config.gradient_checkpointing if config.gradient_checkpointing is not None else cuda
        )
        # Without an accelerator, processes started by `accelerate launch --multi_gpu` or torchrun
        # must still find each other: cpu=True makes that a gloo process group on the CPU.
        self.accelerator = Accelerator(
            mixed_precision="bf16" if self.bf16 else "no", cpu=not torch.accelerator.is_available()
        )
        self.on_event = on_event if self.accelerator.is_main_process else None
        self.started = time.monotonic()

    def collate(self, examples: list[TokenizedChat], pad_id: int) -> dict[str, Any]:
        device = self.accelerator.device
        return _collate(examples, pad_id, device, 8 if device.type == "cuda" else 1)

    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def say(self, message: str, level: str = "info") -> None:
        self.emit({"type": "message", "level": level, "message": message})

    # -- data ---------------------------------------------------------------------------------

    def load_examples(self, tokenizer: Any, path: Path, what: str) -> list[TokenizedChat]:
        chats = validate_chat_jsonl(path)
        try:
            examples = [
                tokenize_chat(tokenizer, chat["messages"], self.config.max_seq_len)
                for chat in chats
            ]
        except ValueError as error:  # e.g. a tokenizer without a chat template
            raise TrainError(f"the base model cannot render these chats: {error}") from error
        cut = sum(example.truncated for example in examples)
        usable = [example for example in examples if example.n_trained > 0]
        if cut:
            self.say(
                f"{cut} of {len(examples)} {what} examples are longer than max_seq_len "
                f"({self.config.max_seq_len} tokens) and were cut",
                "warning",
            )
        if len(usable) < len(examples):
            self.say(
                f"{len(examples) - len(usable)} {what} examples were skipped: their assistant "
                f"turns start after max_seq_len",
                "warning",
            )
        if not usable:
            raise TrainError(f"no {what} example has an assistant turn within max_seq_len")
        return usable

    def plan(self, examples: list[TokenizedChat], epoch: int) -> list[list[int]]:
        """The batches of one epoch: the same on every process, from the seed and the epoch."""
        rng = random.Random(self.config.seed * 100_003 + epoch)
        order = list(range(len(examples)))
        rng.shuffle(order)
        size = self.config.batch_size
        batches = []
        for low in range(0, len(order), size * GROUP_WINDOW):
            window = sorted(
                order[low : low + size * GROUP_WINDOW], key=lambda i: -len(examples[i].input_ids)
            )
            batches += [window[i : i + size] for i in range(0, len(window), size)]
        rng.shuffle(batches)
        return batches

    def my_micro_batches(self, batch: list[int]) -> list[list[int]]:
        """This process's share of a batch, as `grad_accum` micro-batches (some may be empty)."""
        world = self.accelerator.num_processes
        parts = world * self.config.grad_accum
        size = math.ceil(len(batch) / parts)
        chunks = [batch[i * size : (i + 1) * size] for i in range(parts)]
        rank = self.accelerator.process_index
        return chunks[rank * self.config.grad_accum : (rank + 1) * self.config.grad_accum]

    # -- the run ------------------------------------------------------------------------------

    def run(
        self,
        train_file: Path,
        validation_file: Path | None,
        resume_from: str | Path | None,
        should_stop: Callable[[], bool] | None,
    ) -> TrainResult:
        import torch
        from transformers import AutoTokenizer, get_scheduler
        from transformers import set_seed as hf_set_seed

        config, accelerator = self.config, self.accelerator
        _check_config(config)
        if not (self.base_model_dir / "config.json").is_file():
            raise TrainError(f"{self.base_model_dir} is not a model folder (no config.json)")
        hf_set_seed(config.seed)
        tokenizer = AutoTokenizer.from_pretrained(self.base_model_dir)
        pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        train_set = self.load_examples(tokenizer, train_file, "training")
        valid_set = (
            self.load_examples(tokenizer, validation_file, "validation") if validation_file else []
        )
        fingerprint = _sha256(train_file)

        steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
        total_steps = steps_per_epoch * config.n_epochs
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        eval_every = config.eval_every or max(1, total_steps // 10)
        spread = max(1, math.ceil(len(valid_set) / config.valid_sample))
        valid_sample = valid_set[::spread]  # the whole file when it is small

        model = self.build_model()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        warmup = config.warmup if config.warmup >= 1 else math.ceil(config.warmup * total_steps)
        scheduler = get_scheduler(config.lr_scheduler, optimizer, int(warmup), total_steps)
        loss_model, optimizer = accelerator.prepare(_assistant_loss(model), optimizer)

        step, tokens = 0, 0
        checkpoint = self.find_checkpoint(resume_from)
        if checkpoint is not None:
            step, tokens = self.load_checkpoint(
                checkpoint, model, optimizer, scheduler, fingerprint
            )
            self.say(f"resumed from {checkpoint.name} at step {step} of {total_steps}")
        self.say(
            f"training on {len(train_set)} examples for {total_steps} steps "
            f"({config.n_epochs} epochs, batch {config.batch_size}, {accelerator.num_processes} "
            f"process(es) on {accelerator.device.type}, {'bf16' if self.bf16 else 'fp32'})"
        )

        def save(at: int) -> None:
            path = self.save_checkpoint(model, optimizer, scheduler, at, tokens, fingerprint)
            self.emit({"type": "checkpoint", "step": at, "path": str(path)})

        train_loss = valid_loss = None
        plans: dict[int, list[list[int]]] = {}
        while step < total_steps:
            if self.stop_requested(should_stop):
                if step and not (self.checkpoints_dir / f"step-{step}").is_dir():
                    save(step)
                self.say(f"cancelled at step {step}")
                return TrainResult(None, step, total_steps, tokens, train_loss, valid_loss, True)
            epoch, index = divmod(step, steps_per_epoch)
            if epoch not in plans:
                plans = {epoch: self.plan(train_set, epoch)}
            batch = plans[epoch][index]
            n_items = sum(train_set[i].n_trained for i in batch)
            learning_rate = scheduler.get_last_lr()[0]
            loss_sum = self.train_step(loss_model, train_set, batch, n_items, pad_id)
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += sum(len(train_set[i].input_ids) for i in batch)

            last = step == total_steps
            if step % config.log_every == 0 or last:
                train_loss = accelerator.reduce(loss_sum, "sum").item()
                event: Event = {
                    "type": "metrics",
                    "step": step,
                    "total_steps": total_steps,
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "tokens": tokens,
                    "learning_rate": learning_rate,
                    "elapsed": round(time.monotonic() - self.started, 3),
                }
                if valid_set and (step % eval_every == 0 or last):
                    scored = valid_set if last else valid_sample
                    valid_loss = event["valid_loss"] = self.evaluate(loss_model, scored, pad_id)
                    event["valid_chats"] = len(scored)
                    if last:
                        event["full_valid_loss"] = valid_loss
                self.emit(event)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and not last:
                save(step)

        adapter = self.publish(model)
        result = TrainResult(
            adapter,
            step,
            total_steps,
            tokens,
            train_loss,
            valid_loss,
            False,
            {
                "n_epochs": config.n_epochs,
                "batch_size": config.batch_size,
                "learning_rate": config.learning_rate,
            },
        )
        self.say(f"adapter published to {adapter}")
        return result

    def build_model(self) -> Any:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        config = self.config
        model = AutoModelForCausalLM.from_pretrained(
            self.base_model_dir, dtype=torch.bfloat16 if self.bf16 else torch.float32
        )
        model.config.use_cache = False
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lora)
        name = config.base_model_name or str(self.base_model_dir.resolve())
        peft_model.peft_config["default"].base_model_name_or_path = name
        return peft_model.to(self.accelerator.device)

    def train_step(
        self,
        loss_model: Any,
        examples: list[TokenizedChat],
        batch: list[int],
        n_items: int,
        pad_id: int,
    ) -> Any:
        """Forward and backward over this process's micro-batches; returns its loss share."""
        import contextlib

        import torch

        accelerator = self.accelerator
        loss_model.train()
        micro_batches = self.my_micro_batches(batch)
        total = torch.zeros((), device=accelerator.device)
        for number, micro in enumerate(micro_batches):
            # An empty share still runs (on a stand-in, with weight 0) so every process takes
            # part in each gradient all-reduce.
            inputs = self.collate([examples[i] for i in micro or batch[:1]], pad_id)
            sync = number == len(micro_batches) - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(loss_model):
                loss = loss_model(**inputs, num_items=n_items) * (1.0 if micro else 0.0)
                # DDP averages gradients over processes; each loss is already a share of the
                # whole batch's mean, so scale back up to get the sum.
                accelerator.backward(loss * accelerator.num_processes)
            total += loss.detach()
        return total

    def evaluate(self, loss_model: Any, examples: list[TokenizedChat], pad_id: int) -> float:
        """Mean loss per learned token over the whole validation set (all processes)."""
        import torch

        accelerator = self.accelerator
        plain = accelerator.unwrap_model(loss_model)
        plain.eval()
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        size = self.config.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        sums = torch.zeros(2, device=accelerator.device)
        with torch.no_grad(), accelerator.autocast():
            for batch in batches[accelerator.process_index :: accelerator.num_processes]:
                sums[0] += plain(**self.collate([examples[i] for i in batch], pad_id), num_items=1)
                sums[1] += sum(examples[i].n_trained for i in batch)
        sums = accelerator.reduce(sums, "sum")
        return (sums[0] / sums[1]).item()

    def stop_requested(self, should_stop: Callable[[], bool] | None) -> bool:
        import torch

        wanted = bool(should_stop and should_stop())
        if self.accelerator.num_processes == 1:
            return wanted
        # Every process must stop at the same step, or the others wait forever in an all-reduce.
        flag = torch.tensor([1.0 if wanted else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, "sum").item() > 0)

    # -- checkpoints and the adapter ----------------------------------------------------------

    @property
    def checkpoints_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    def find_checkpoint(self, resume_from: str | Path | None) -> Path | None:
        if resume_from is None:
            return None
        if str(resume_from) != "latest":
            path = Path(resume_from)
            if not (path / "state.json").is_file():
                raise TrainError(f"{path} is not a checkpoint folder (no state.json)")
            return path
        found = [
            (int(path.name.removeprefix("step-")), path)
            for path in self.checkpoints_dir.glob("step-*")
            if path.name.removeprefix("step-").isdigit() and (path / "state.json").is_file()
        ]
        return max(found)[1] if found else None

    def save_checkpoint(
        self, model: Any, optimizer: Any, scheduler: Any, step: int, tokens: int, fingerprint: str
    ) -> Path:
        """Write `checkpoints/step-N` via a temporary folder renamed into place."""
        import torch

        accelerator = self.accelerator
        final = self.checkpoints_dir / f"step-{step}"
        temporary = self.checkpoints_dir / f".tmp-step-{step}"
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        accelerator.wait_for_everyone()
        torch.save(_rng_state(), temporary / f"rng-{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            model.save_pretrained(temporary / "adapter", save_embedding_layers=False)
            torch.save(optimizer.state_dict(), temporary / "optimizer.pt")
            torch.save(scheduler.state_dict(), temporary / "scheduler.pt")
            state = {
                "step": step,
                "tokens": tokens,
                "train_file_sha256": fingerprint,
                "config": _resume_relevant(self.config),
            }
            (temporary / "state.json").write_text(json.dumps(state, indent=2))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
            kept = sorted(
                (p for p in self.checkpoints_dir.glob("step-*") if p.name[5:].isdigit()),
                key=lambda p: int(p.name[5:]),
            )
            stale = list(self.checkpoints_dir.glob(".tmp-step-*"))  # left by a crash mid-save
            for old in kept[: -max(1, self.config.keep_checkpoints)] + stale:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def load_checkpoint(
        self, path: Path, model: Any, optimizer: Any, scheduler: Any, fingerprint: str
    ) -> tuple[int, int]:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = json.loads((path / "state.json").read_text())
        if state["train_file_sha256"] != fingerprint:
            raise TrainError(f"checkpoint {path.name} was made from a different training file")
        if state["config"] != _resume_relevant(self.config):
            raise TrainError(f"checkpoint {path.name} was made with different training options")
        weights = load_file(path / "adapter" / "adapter_model.safetensors")
        set_peft_model_state_dict(model, weights)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng = path / f"rng-{self.accelerator.process_index}.pt"
        if rng.is_file():
            _set_rng_state(torch.load(rng, weights_only=False))
        else:
            self.say("the checkpoint has no random state for this process; dropout will differ")
        return int(state["step"]), int(state["tokens"])

    def publish(self, model: Any) -> Path:
        """Save the adapter to a temporary folder, then rename it to `output_dir/adapter`."""
        accelerator = self.accelerator
        final = self.output_dir / "adapter"
        if accelerator.is_main_process:
            temporary = self.output_dir / f".adapter-tmp-{os.getpid()}"
            shutil.rmtree(temporary, ignore_errors=True)
            model.save_pretrained(temporary, save_embedding_layers=False)
            if final.exists():  # a rerun replaces the old adapter; keep it until the new is in
                old = self.output_dir / f".adapter-old-{os.getpid()}"
                os.replace(final, old)
                os.replace(temporary, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(temporary, final)
        accelerator.wait_for_everyone()
        return final


def _collate(
    examples: list[TokenizedChat], pad_id: int, device: Any, multiple: int = 1
) -> dict[str, Any]:
    """Right-pad a micro-batch into tensors; padding gets attention 0 and no label."""
    import torch

    from training.trainer.chat_data import IGNORE_INDEX

    longest = math.ceil(max(len(e.input_ids) for e in examples) / multiple) * multiple
    ids, mask, labels = [], [], []
    for example in examples:
        pad = longest - len(example.input_ids)
        # Labels come from the example, never from "is this the pad id": SmolLM2's pad id is its
        # end token, which must stay learned where it ends a real answer.
        ids.append(example.input_ids + [pad_id] * pad)
        mask.append([1] * len(example.input_ids) + [0] * pad)
        labels.append(example.labels + [IGNORE_INDEX] * pad)
    return {
        "input_ids": torch.tensor(ids, device=device),
        "attention_mask": torch.tensor(mask, device=device),
        "labels": torch.tensor(labels, device=device),
    }


def _assistant_loss(model: Any) -> Any:
    """Wrap a PEFT model in `AssistantLoss` (defined on first use, to keep torch out of imports)."""
    return _assistant_loss_class()(model)


@functools.cache
def _assistant_loss_class() -> type:
    import torch
    import torch.nn.functional as F

    from training.trainer.chat_data import IGNORE_INDEX

    class AssistantLoss(torch.nn.Module):
        """The model and its loss: the sum over learned tokens, divided by `num_items`.

        The output layer (576 x 49,152 for SmolLM2, a fifth of its compute) runs only on the
        positions whose next token is learned, not on the whole prompt. Being one module, it is
        what DDP wraps, so gradients are synchronised as usual.
        """

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model
            config = model.get_base_model().config
            # Models that transform logits after the output layer take the ordinary path.
            self.selective = not (
                getattr(config, "final_logit_softcapping", None)
                or getattr(config, "logit_scale", None)
            )

        def forward(self, input_ids: Any, attention_mask: Any, labels: Any, num_items: Any) -> Any:
            if not self.selective:
                return self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    labels=labels,
                    num_items_in_batch=num_items,
                ).loss
            base = self.model.get_base_model()
            hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask)[0]
            targets = labels[:, 1:]
            keep = targets != IGNORE_INDEX
            logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
            return F.cross_entropy(logits, targets[keep], reduction="sum") / num_items

    return AssistantLoss


# Options that do not change what is learned; a checkpoint resumes even if they differ.
_BOOKKEEPING = {
    "checkpoint_every",
    "keep_checkpoints",
    "eval_every",
    "valid_sample",
    "log_every",
    "max_steps",
}


def _resume_relevant(config: TrainConfig) -> dict[str, Any]:
    values = dataclasses.asdict(config)
    values["target_modules"] = list(config.target_modules)
    return {k: v for k, v in values.items() if k not in _BOOKKEEPING}


def _check_config(config: TrainConfig) -> None:
    positive = (
        "n_epochs",
        "batch_size",
        "grad_accum",
        "max_seq_len",
        "lora_r",
        "log_every",
        "valid_sample",
    )
    for name in positive:
        if getattr(config, name) < 1:
            raise TrainError(f"{name} must be at least 1")
    if config.lr_scheduler not in ("linear", "cosine", "constant_with_warmup"):
        raise TrainError("lr_scheduler must be linear, cosine or constant_with_warmup")
    if not config.learning_rate > 0:
        raise TrainError("learning_rate must be above 0")
    if not 0 <= config.lora_dropout < 1:
        raise TrainError("lora_dropout must be from 0 to below 1")
    if config.max_steps is not None and config.max_steps < 1:
        raise TrainError("max_steps must be at least 1")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def main(argv: list[str] | None = None) -> int:
    """Command line: train, printing events as JSON lines; SIGTERM/SIGINT stop at a checkpoint."""
    parser = argparse.ArgumentParser(
        prog="python -m training.trainer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--base", required=True, help="base model folder (transformers format)")
    parser.add_argument("--train", required=True, help="training file, OpenAI chat JSONL")
    parser.add_argument("--out", required=True, help="output folder: adapter/ and checkpoints/")
    parser.add_argument("--validation", help="validation file, OpenAI chat JSONL")
    parser.add_argument("--config", help="TrainConfig options as JSON, or a path to a JSON file")
    parser.add_argument("--resume", help='"latest" or a checkpoint folder')
    args = parser.parse_args(argv)

    stop = {"asked": False}

    def ask_to_stop(signum: int, frame: Any) -> None:
        stop["asked"] = True

    signal.signal(signal.SIGTERM, ask_to_stop)
    signal.signal(signal.SIGINT, ask_to_stop)
    try:
        options = {}
        if args.config:
            inline = args.config.lstrip().startswith("{")
            text = args.config if inline else Path(args.config).read_text()
            options = json.loads(text)
        result = train(
            TrainConfig.from_dict(options),
            args.base,
            args.train,
            args.out,
            validation_file=args.validation,
            on_event=lambda event: print(json.dumps(event), flush=True),
            resume_from=args.resume,
            should_stop=lambda: stop["asked"],
        )
    except (DatasetError, TrainError, json.JSONDecodeError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    if PartialState().is_main_process:
        summary = dataclasses.asdict(result)
        summary["adapter_path"] = str(result.adapter_path) if result.adapter_path else None
        print(json.dumps({"type": "result", **summary}), flush=True)
    return 1 if result.cancelled else 0
