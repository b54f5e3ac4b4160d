"""The fine-tuning API's hyperparameter rules: OpenAI's "auto" or numbers, resolved for a file.

These are the API's promises (what "auto" means, what learning_rate_multiplier 1.0 means, which
values are accepted), so they live with the API; the trainer only ever sees the resulting
numbers in its TrainConfig.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

BASE_LEARNING_RATE = 2e-4  # what learning_rate_multiplier 1.0 means: a usual LoRA rate

# n_epochs "auto", as OpenAI's cookbook gives its default (see auto_epochs).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100  # example-passes a small file is raised towards
MAX_TARGET_EXAMPLES = 25_000  # example-passes a large file is lowered towards
MIN_AUTO_EPOCHS = 1
MAX_AUTO_EPOCHS = 25


@dataclass(frozen=True)
class Hyperparameters:
    """The fine-tuning API's hyperparameters, resolved to numbers."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float

    @property
    def learning_rate(self) -> float:
        """The trainer's peak learning rate these hyperparameters ask for."""
        return BASE_LEARNING_RATE * self.learning_rate_multiplier

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def auto_epochs(n_examples: int) -> int:
    """The number of epochs n_epochs "auto" picks for a training file of `n_examples` chats.

    OpenAI's rule, as its cookbook writes it out ("By default, you'll train for N epochs on
    this dataset": openai/openai-cookbook, examples/Chat_finetuning_data_prep.ipynb, the cost
    estimate; the API reference says only that "auto" decides from the dataset's size):
    3 epochs, unless 3 passes give fewer than 100 example-passes, then 100 // n_examples (at
    most 25), or more than 25,000, then 25,000 // n_examples (at least 1). So 1 example: 25
    epochs, 5: 20, 8: 12, 20: 5, 26 to 8,333: 3, 8,334 to 12,500: 2, above 12,500: 1. The
    divisions round down, as OpenAI's do, so a small file may see a little under 100 passes.
    """
    if n_examples < 1:
        raise ValueError("the training file has no examples")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_AUTO_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def resolve_hyperparameters(
    n_examples: int,
    n_epochs: int | str = "auto",
    batch_size: int | str = "auto",
    learning_rate_multiplier: float | str = "auto",
) -> Hyperparameters:
    """Turn the API's "auto" or numbers into concrete values for a file of `n_examples`.

    - n_epochs "auto": from the file's size, as OpenAI does (`auto_epochs`): 3, more for
      small files (up to 25), fewer for large ones (down to 1).
    - batch_size "auto": about n_examples / 100 rounded to a power of two, between 4 and 32
      (never more than n_examples).
    - learning_rate_multiplier "auto": 1.0; the rate is BASE_LEARNING_RATE (2e-4) times it.
    Raises ValueError with one sentence for values out of range.
    """
    if n_examples < 1:
        raise ValueError("the training file has no examples")
    if n_epochs == "auto":
        epochs = auto_epochs(n_examples)
    else:
        epochs = _number(n_epochs, "n_epochs", int, 1, 50)
    if batch_size == "auto":
        batch = min(32, max(4, 2 ** round(math.log2(max(1.0, n_examples / 100)))))
        batch = min(batch, n_examples)
    else:
        batch = _number(batch_size, "batch_size", int, 1, 256)
    if learning_rate_multiplier == "auto":
        multiplier = 1.0
    else:
        multiplier = float(_number(learning_rate_multiplier, "learning_rate_multiplier", float))
        if not 0 < multiplier <= 10:
            raise ValueError("learning_rate_multiplier must be above 0 and at most 10")
    return Hyperparameters(epochs, batch, multiplier)


def _number(value: Any, name: str, kind: type, low: int = 0, high: int = 0) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'{name} must be "auto" or a number')
    if isinstance(value, float) and not math.isfinite(value):  # JSON's Infinity and NaN
        raise ValueError(f'{name} must be "auto" or a finite number')
    if kind is int:
        if value != int(value) or not low <= value <= high:
            raise ValueError(f'{name} must be "auto" or a whole number from {low} to {high}')
        return int(value)
    return value
