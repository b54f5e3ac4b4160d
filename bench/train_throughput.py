"""Training throughput: fewtune's LoRA trainer against a plain TRL SFTTrainer, side by side.

Same base model, same synthetic chat data (lists of number words -> digits, made with num2words),
same LoRA settings (r=16, alpha=32, all linear projections), batch size, epochs, learning rate,
precision and gradient checkpointing. Each trainer runs in its own process; its clock runs from the
start of its training loop to the end of its last step (model loading and tokenising excluded).
Tokens/s counts the dataset's tokens (padding excluded) times the epochs: the same for both.

    .venv/bin/python bench/train_throughput.py                      # embedded SmolLM2, CPU
    .venv/bin/python bench/train_throughput.py --examples 48 --batch-size 8
    .venv/bin/python bench/train_throughput.py --device cuda --examples 4000 --batch-size 32

With `--device cuda` it also reports model FLOPs utilisation: 6 x parameters x tokens / seconds /
the GPU's peak dense bf16 FLOPs (`--peak-tflops`, guessed from the GPU's name when it is known).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SYSTEM = "Write each number as digits, separated by commas."
LORA_R, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def make_dataset(path: Path, count: int, seed: int) -> list[dict]:
    """Chats of 1 to 8 numbers in words and their digits: lengths vary as real chats do."""
    from num2words import num2words

    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        numbers = [rng.randint(0, 99_999) for _ in range(rng.randint(1, 8))]
        examples.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": ", ".join(num2words(n) for n in numbers)},
                    {"role": "assistant", "content": ", ".join(str(n) for n in numbers)},
                ]
            }
        )
    path.write_text("".join(json.dumps(example) + "\n" for example in examples))
    return examples


def dataset_tokens(base: str, examples: list[dict], max_seq_len: int) -> int:
    from transformers import AutoTokenizer

    from training.trainer.chat_data import tokenize_chat

    tokenizer = AutoTokenizer.from_pretrained(base)
    return sum(
        len(tokenize_chat(tokenizer, e["messages"], max_seq_len).input_ids) for e in examples
    )


def run_fewtune(args: argparse.Namespace) -> dict:
    from training.trainer import TrainConfig, train

    marks: dict[str, float] = {}

    def on_event(event: dict) -> None:
        if event["type"] == "message" and event["message"].startswith("training on"):
            marks["start"] = time.perf_counter()
        if event["type"] == "metrics":
            marks["end"] = time.perf_counter()
            marks["loss"] = event["train_loss"]

    config = TrainConfig(
        n_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup=0,
        lora_r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        target_modules=tuple(TARGETS),
        max_seq_len=args.max_seq_len,
        seed=args.seed,
        checkpoint_every=0,
    )
    result = train(config, args.base, args.data, Path(args.workdir) / "fewtune", on_event=on_event)
    return {"seconds": marks["end"] - marks["start"], "steps": result.steps, "loss": marks["loss"]}


def run_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = args.device == "cuda"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            marks["start"] = time.perf_counter()

        def on_step_end(self, *_, **__):
            marks["end"] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                marks["loss"] = logs["loss"]

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(
        args.base, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    examples = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
    config = SFTConfig(
        output_dir=str(Path(args.workdir) / "trl"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        max_length=args.max_seq_len,
        seed=args.seed,
        bf16=bf16,
        gradient_checkpointing=cuda,  # as fewtune decides: on with CUDA, off on the CPU
        use_cpu=not cuda,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=LORA_DROPOUT,
            target_modules=TARGETS,
            task_type="CAUSAL_LM",
        ),
        callbacks=[Clock()],
    )
    trainer.train()
    return {
        "seconds": marks["end"] - marks["start"],
        "steps": trainer.state.global_step,
        "loss": marks.get("loss"),
    }


def model_parameters(base: str) -> int:
    import math

    from safetensors import safe_open

    total = 0
    for file in Path(base).glob("*.safetensors"):
        with safe_open(file, "pt") as weights:
            total += sum(math.prod(weights.get_slice(n).get_shape()) for n in weights.keys())  # noqa: SIM118
    return total


def peak_tflops(given: float | None) -> float | None:
    if given:
        return given
    import torch

    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def run_worker(name: str, args: argparse.Namespace, data: Path, workdir: Path) -> dict:
    """Run one trainer in a fresh process: its own threads, memory and accelerate state."""
    command = [sys.executable, __file__, "--worker", name, "--data", str(data)]
    command += ["--workdir", str(workdir), "--base", str(args.base), "--device", args.device]
    for option in ("batch_size", "epochs", "learning_rate", "max_seq_len", "seed"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="model folder; default: the embedded SmolLM2 copy")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--only", choices=["fewtune", "trl"], help="run one trainer only")
    parser.add_argument("--peak-tflops", type=float, help="GPU peak dense bf16 TFLOPS (for MFU)")
    parser.add_argument("--worker", choices=["fewtune", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # one trainer in this process; the parent reads the last line
        if args.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        result = (run_fewtune if args.worker == "fewtune" else run_trl)(args)
        print(json.dumps(result), flush=True)
        return

    if not args.base:
        from storage.settings import EMBEDDED_CHAT_MODEL, load_settings
        from training.base_models import resolve_base_model

        args.base = resolve_base_model(EMBEDDED_CHAT_MODEL, load_settings())
    workdir = Path(tempfile.mkdtemp(prefix="fewtune-bench-"))
    data = workdir / "train.jsonl"
    examples = make_dataset(data, args.examples, args.seed)
    tokens = dataset_tokens(args.base, examples, args.max_seq_len) * args.epochs
    print(
        f"model {args.base}\n{args.examples} examples x {args.epochs} epoch(s), batch "
        f"{args.batch_size}, {tokens} tokens, device {args.device}, torch threads "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}"
    )

    results: dict[str, dict] = {}
    names = [args.only] if args.only else ["fewtune", "trl"]
    for round_ in range(args.repeat):  # alternate the order so that neither always goes first
        for name in names if round_ % 2 == 0 else names[::-1]:
            result = run_worker(name, args, data, workdir)
            print(f"  {name}: {result['seconds']:.1f} s", flush=True)
            if name not in results or result["seconds"] < results[name]["seconds"]:
                results[name] = result

    parameters = model_parameters(args.base)
    peak = peak_tflops(args.peak_tflops) if args.device == "cuda" else None
    print(
        f"{'trainer':<8} {'steps':>5} {'seconds':>8} {'tokens/s':>9} {'loss':>7}"
        + (f" {'MFU':>6}" if peak else "")
    )
    for name, result in results.items():
        rate = tokens / result["seconds"]
        line = f"{name:<8} {result['steps']:>5} {result['seconds']:>8.1f} {rate:>9.1f}"
        line += f" {result['loss']:>7.3f}" if result["loss"] is not None else f" {'-':>7}"
        if peak:
            line += f" {6 * parameters * rate / (peak * 1e12):>6.1%}"
        print(line)
    if len(results) == 2:
        ratio = results["trl"]["seconds"] / results["fewtune"]["seconds"]
        print(f"fewtune / trl throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
