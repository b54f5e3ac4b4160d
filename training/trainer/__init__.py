"""The trainer room: chat JSONL in, a LoRA adapter out. Knows nothing of the server or the API.

- lora: the training loop (`train(config, base_dir, train_file, out_dir)`, TrainConfig).
- chat_data: chat JSONL checked and tokenized into labelled examples.
- progress: `LossLog`, an `on_event` for scripts (losses kept, a line printed every few steps).
- `python -m training.trainer` / `accelerate launch -m training.trainer`: the command line.

Importing it loads nothing heavy: torch, transformers, peft and accelerate load inside `train`.
"""

from __future__ import annotations

from training.trainer.lora import TrainConfig, TrainError, TrainResult, train

__all__ = ["TrainConfig", "TrainError", "TrainResult", "train"]
