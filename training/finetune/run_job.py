"""The training process of one fine-tuning job: `python -m training.finetune.run_job --spec FILE`.

The worker starts it and reads its stdout: one JSON object a line, the trainer's events, then
{"type": "result", ...} or {"type": "error", "code", "message"}. It always resumes from the newest
checkpoint in the job's folder (none on a first run). SIGTERM, or its parent (the server) going
away, stops it at a checkpoint so the job can resume; exit codes: 0 done, 2 error, 3 stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

EXIT_DONE, EXIT_ERROR, EXIT_STOPPED = 0, 2, 3
EMBEDDED_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class _Output:
    """JSON lines to the worker; if the worker is gone (broken pipe), stop at a checkpoint."""

    def __init__(self) -> None:
        self.broken = False

    def send(self, event: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            print(json.dumps(event), flush=True)
        except (BrokenPipeError, OSError):
            self.broken = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.finetune.run_job")
    parser.add_argument("--spec", required=True, help="the job's spec.json, written by the worker")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = _Output()
    parent = os.getppid()
    stop = {"asked": False}

    def ask_to_stop(signum: int, frame: Any) -> None:
        stop["asked"] = True

    signal.signal(signal.SIGTERM, ask_to_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the server's terminal is its own

    def should_stop() -> bool:
        return stop["asked"] or out.broken or os.getppid() != parent

    return _run(spec, out, should_stop)


def _run(spec: dict[str, Any], out: _Output, should_stop: Any) -> int:
    import torch

    from storage.settings import load_settings
    from training.base_models import BaseModelError, is_embedded, resolve_base_model
    from training.trainer import TrainConfig, TrainError, train
    from training.trainer.chat_data import DatasetError

    def error(code: str, message: str) -> int:
        out.send({"type": "error", "code": code, "message": message})
        return EXIT_ERROR

    try:
        settings = load_settings(spec["home"])
        base_dir = resolve_base_model(spec["base_model"], settings)
        # adapter_config names a base others can load: the Hub id for the embedded model.
        base_name = EMBEDDED_HF_ID if is_embedded(spec["base_model"]) else base_dir
        config = TrainConfig.from_dict({**spec["config"], "base_model_name": base_name})
        result = train(
            config,
            base_dir,
            spec["training_file"],
            spec["output_dir"],
            validation_file=spec.get("validation_file"),
            on_event=out.send,
            resume_from="latest",
            should_stop=should_stop,
        )
    except DatasetError as exc:
        return error("invalid_training_file", f"the training data is invalid: {exc}")
    except BaseModelError as exc:
        return error("base_model_unavailable", str(exc))
    except TrainError as exc:
        return error("training_error", str(exc))
    except (torch.OutOfMemoryError, MemoryError) as exc:
        return error("out_of_memory", f"training ran out of memory ({type(exc).__name__})")
    if result.cancelled:
        return EXIT_STOPPED
    summary = dataclasses.asdict(result)
    summary["adapter_path"] = str(result.adapter_path)
    out.send({"type": "result", **summary})
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
