"""The loss curve of a fine-tuning job as a PNG (matplotlib, no display needed).

A pure function: points in, bytes out. It takes a few tens of milliseconds, once at the end of
a promotion, so the bot draws it on its loop.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any


def loss_points(
    events: Iterable[Mapping[str, Any]],
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, train_loss) and (step, valid_loss) pairs from metrics data, each step once."""
    train: dict[int, float] = {}
    valid: dict[int, float] = {}
    for data in events:
        step = data.get("step")
        if step is None:
            continue
        if data.get("train_loss") is not None:
            train[int(step)] = float(data["train_loss"])
        if data.get("valid_loss") is not None:
            valid[int(step)] = float(data["valid_loss"])
    return sorted(train.items()), sorted(valid.items())


def loss_curve_png(
    metrics: Iterable[Mapping[str, Any]], title: str = "Fine-tuning loss"
) -> bytes | None:
    """A PNG of training (and validation) loss against step; None when there is no point."""
    train, valid = loss_points(metrics)
    if not train and not valid:
        return None
    # The object API with an Agg canvas: no pyplot global state, safe in any thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for points, label, style in ((train, "training", "-"), (valid, "validation", "o--")):
        if points:
            axes.plot([s for s, _ in points], [v for _, v in points], style, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
