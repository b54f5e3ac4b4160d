"""A promotion's evaluation as a PNG: each setting's scores with their 95% intervals, one panel
per metric (exact match, token F1, log-probability per token and its margin where scored, the
judge's win rate where one judged). Like the loss curve: a pure function, stored numbers in,
bytes out, drawn once at the end of a promotion on the bot's loop (tens of milliseconds)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from bot.evaluation_report import LABELS

COLOURS = ("#8c8c8c", "#4c72b0", "#55a868")


def _panels(evaluation: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, float, Any]]]]:
    """(title, [(setting, value, interval)]) for each metric the evaluation holds."""
    panels = []
    for metric, title in (
        ("exact_match", "exact match"),
        ("token_f1", "token F1"),
        ("log_prob", "log-prob / token"),
        ("margin", "likelihood margin"),
    ):
        bars = [
            (label, evaluation[key][metric], (evaluation[key].get("intervals") or {}).get(metric))
            for key, label in LABELS
            if key in evaluation and evaluation[key].get(metric) is not None
        ]
        if bars:
            panels.append((title, bars))
    judge = evaluation.get("judge") or {}
    bars = [
        (label, judge[key]["win_rate"], judge[key].get("interval"))
        for key, label in LABELS[1:]
        if key in judge
    ]
    if bars:
        panels.append(("judge: win rate vs few-shot", bars))
    return panels


def scores_png(evaluation: Mapping[str, Any], title: str = "Evaluation") -> bytes | None:
    """A PNG of the evaluation's scores with their intervals; None when it holds none."""
    panels = _panels(evaluation)
    if not panels:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3 * len(panels), 3.5), dpi=100)
    FigureCanvasAgg(figure)
    for i, (name, bars) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), i + 1)
        positions = list(range(len(bars)))
        values = [value for _, value, _ in bars]
        low = [value - (iv[0] if iv else value) for _, value, iv in bars]
        high = [(iv[1] if iv else value) - value for _, value, iv in bars]
        colours = [COLOURS[[label for _, label in LABELS].index(label)] for label, _, _ in bars]
        axes.bar(positions, values, color=colours, yerr=[low, high], capsize=4)
        axes.set_xticks(positions, [label for label, _, _ in bars], rotation=20, ha="right")
        axes.set_title(name, fontsize=10)
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
