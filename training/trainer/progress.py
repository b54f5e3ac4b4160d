"""An `on_event` for scripts that train (the demo's adapter, the gate's benchmark): it keeps each
step's loss and the run's time, and prints a line every few steps."""

from __future__ import annotations

import time
from typing import Any


class LossLog:
    """Pass as `train(..., on_event=log)`; then `log.losses` (per step) and `log.minutes`."""

    def __init__(self, every: int = 10, indent: str = "") -> None:
        self.every = every
        self.indent = indent
        self.losses: list[float] = []
        self._started = time.monotonic()

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("type") != "metrics":
            return
        self.losses.append(round(float(event["train_loss"]), 4))
        if event["step"] % self.every == 0 or event["step"] == event["total_steps"]:
            print(
                f"{self.indent}step {event['step']}/{event['total_steps']} "
                f"loss {event['train_loss']:.3f} ({event['elapsed']:.0f} s)",
                flush=True,
            )

    @property
    def minutes(self) -> float:
        """Minutes since the log was made (just before training)."""
        return round((time.monotonic() - self._started) / 60, 1)
