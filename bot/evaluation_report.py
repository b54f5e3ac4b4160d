"""A promotion's stored evaluation as lines of text: each setting's scores with their 95%
intervals, the p-values against few-shot, the notes and the decision in one sentence. The CLI
(`fewtune promote status`) and Discord (the promotion's final message, `/assistant status`)
render the same record with these lines, so they show the same numbers. Rendering only: every
figure and the decision are the core's (assistants/gate.py)."""

from __future__ import annotations

from typing import Any

LABELS = (
    ("few_shot", "few-shot"),
    ("fine_tuned", "fine-tuned alone"),
    ("fine_tuned_with_examples", "fine-tuned + examples"),
)


def p_text(p: float) -> str:
    return f"p={p:.3f}" if p >= 0.001 else "p<0.001"


def _interval(values: Any, fmt: str) -> str:
    if not values:
        return ""
    low, high = values
    return f" [{format(low, fmt)}, {format(high, fmt)}]"


def _versus(evaluation: dict[str, Any], key: str, metric: str) -> str:
    test = (evaluation.get("tests") or {}).get(key, {}).get(metric)
    return f" ({p_text(test['p'])})" if test else ""


def setting_line(evaluation: dict[str, Any], key: str, label: str) -> str:
    r = evaluation[key]
    intervals = r.get("intervals") or {}
    parts = [
        f"exact match {r['exact_match']:.1%}{_interval(intervals.get('exact_match'), '.1%')}"
        + _versus(evaluation, key, "exact_match"),
        f"token F1 {r['token_f1']:.3f}{_interval(intervals.get('token_f1'), '.3f')}"
        + _versus(evaluation, key, "token_f1"),
    ]
    if r.get("log_prob") is not None:
        parts.append(
            f"log-prob/token {r['log_prob']:.3f}{_interval(intervals.get('log_prob'), '.3f')}"
            + _versus(evaluation, key, "log_prob")
        )
    if r.get("margin") is not None:
        parts.append(
            f"margin {r['margin']:+.3f}{_interval(intervals.get('margin'), '+.3f')}"
            + _versus(evaluation, key, "margin")
        )
    return f"{label} ({r['model']}, k={r['k']}): " + " · ".join(parts)


def judge_lines(evaluation: dict[str, Any]) -> list[str]:
    judge = evaluation.get("judge")
    if not judge:
        return []
    lines = []
    for key, label in LABELS[1:]:
        j = judge.get(key)
        if j:
            lines.append(
                f"judge {judge['model']}, {label} vs few-shot: {j['wins']} wins, {j['ties']} ties, "
                f"{j['losses']} losses; win rate {j['win_rate']:.1%}"
                f"{_interval(j.get('interval'), '.1%')}{_versus(evaluation, key, 'judge')}"
            )
    return lines


def report_lines(evaluation: dict[str, Any]) -> list[str]:
    """The evaluation as lines: a heading, one line per setting, the judge's, the notes, the
    primary metric and the decision."""
    lines = [
        f"Evaluation on {evaluation.get('items', 0)} held-out chats "
        "(95% intervals; p against few-shot):"
    ]
    lines += [setting_line(evaluation, key, label) for key, label in LABELS if key in evaluation]
    lines += judge_lines(evaluation)
    lines += [f"note: {note}" for note in evaluation.get("notes") or []]
    decision = evaluation.get("decision")
    if decision:
        lines.append(
            f"primary metric: {decision['metric'].replace('_', ' ')}; alpha "
            f"{evaluation['alpha']:g} over two candidates (p < {evaluation['threshold']:g} "
            f"needed), at least {evaluation['floor']} held-out chats"
        )
        lines.append(f"decision: {decision['reason']}")
    return lines
