"""Make the demo's promoted twin: a LoRA adapter for the embedded SmolLM2-135M-Instruct, trained
with fewtune's own trainer on the demo's examples, served the way the twin serves them.

    .venv/bin/python scripts/make_demo_adapter.py                 # writes assistants/demo/adapter/
    .venv/bin/python scripts/make_demo_adapter.py --out /tmp/adapter --epochs 1   # a quick try

How: a fresh FEWTUNE_HOME; the demo installed in it (`install_demo`: the few-shot `numbers` and
its twin `numbers-tuned`, same examples); the twin's training chats built as a promotion builds
them (`core.promotions.dataset(..., with_examples=True)`: each chat carries the k examples the
twin retrieves for it, never its own), the held-out split included (the shipped adapter has no
evaluation to keep data for: the README's words and the starters are not among the examples);
`training.trainer.train` on the embedded model; the adapter's weights saved in float16 (half the
size; the server loads them into the model's own dtype). `training.json` beside it records the
settings, the data's fingerprint and the losses. On this 2-core CPU a run takes about 20-30 min.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistants import TERMINAL, Core  # noqa: E402
from assistants.demo import TWIN_NAME, install_demo  # noqa: E402
from training.base_models import embedded_model_dir  # noqa: E402
from training.trainer.lora import TrainConfig, train  # noqa: E402
from training.trainer.progress import LossLog  # noqa: E402

OUT = ROOT / "assistants" / "demo" / "adapter"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the adapter folder to write")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=4e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fewtune-demo-adapter-") as tmp:
        home = Path(tmp) / "home"
        os.environ["FEWTUNE_HOME"] = str(home)
        core = Core.open(home)
        try:
            install_demo(core, TERMINAL, with_twin_adapter=False)
            _, data = core.promotions.dataset(TERMINAL, TWIN_NAME, with_examples=True)
            base = embedded_model_dir(core.settings)
        finally:
            core.close()
        lines = data.jsonl("train") + data.jsonl("held_out")
        train_file = Path(tmp) / "train.jsonl"
        train_file.write_text(lines, encoding="utf-8")
        chats = lines.count("\n")
        print(f"{chats} training chats with their retrieved examples; base {base}", flush=True)
        config = TrainConfig(
            n_epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            lora_r=args.rank,
            lora_alpha=2 * args.rank,
            seed=args.seed,
            checkpoint_every=0,
            base_model_name="SmolLM2-135M-Instruct",
        )
        log = LossLog(every=10)
        result = train(config, base, train_file, Path(tmp) / "run", on_event=log)
        assert result.adapter_path is not None
        write_fp16(result.adapter_path, args.out)
        record = {
            "base_model": "SmolLM2-135M-Instruct",
            "trainer": "training.trainer (fewtune's LoRA trainer)",
            "config": {
                "n_epochs": config.n_epochs,
                "batch_size": config.batch_size,
                "learning_rate": config.learning_rate,
                "lora_r": config.lora_r,
                "lora_alpha": config.lora_alpha,
                "target_modules": list(config.target_modules),
                "seed": config.seed,
            },
            "training_chats": chats,
            "data_sha256": hashlib.sha256(lines.encode()).hexdigest(),
            "steps": result.steps,
            "trained_tokens": result.trained_tokens,
            "train_loss_per_step": log.losses,
            "minutes": log.minutes,
            "dtype": "float16",
            "remake": "python scripts/make_demo_adapter.py",
        }
        (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB) in {record['minutes']} min", flush=True)
    return 0


def write_fp16(adapter: Path, out: Path) -> None:
    """The adapter's config and its weights in float16."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(adapter / "adapter_model.safetensors")
    half = {k: v.to(torch.float16).contiguous() for k, v in weights.items()}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_file(half, out / "adapter_model.safetensors", metadata={"format": "pt"})
    shutil.copy(adapter / "adapter_config.json", out / "adapter_config.json")


if __name__ == "__main__":
    raise SystemExit(main())
