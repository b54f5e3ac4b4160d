"""The evaluation gate: per-item scores in, the stored evaluation and its decision out.

Pure Python on stored numbers, so the switch (`Promotions._switch`), `fewtune promote status`
and Discord's message all read one record. Layout of a promotion's `evaluation`:

- `items`, `alpha`, `threshold` (alpha / 2), `floor`, `primary`, `notes` (a sentence per
  metric skipped), `decision` (`switch`, `candidate`, `metric`, `p`, `reason`: one sentence;
  `forced` after a forced switch), `tests`;
- per setting (`few_shot`, `fine_tuned`, `fine_tuned_with_examples`): `model`, `k`,
  `exact_match`, `token_f1`, `outcomes` (exact match per item), `log_prob` (mean; None when the
  provider cannot score), `margin` (mean: the log-prob after the item's own prompt minus after
  another held-out chat's; None when not scored), `scores` (per item: exact_match, token_f1,
  log_prob, margin), `intervals` (95%: Wilson for exact match, Student's t for the others);
- `judge` (when one judged): `model`, and per candidate `verdicts` (1 / 0 / -1 per item),
  `wins`, `ties`, `losses`, `win_rate` with its Wilson `interval`, `disagreements`,
  `unreadable`;
- `tests[candidate][metric]`: `test`, `p`, `difference` (candidate minus few-shot: the mean
  difference, or wins minus losses).

The decision. The primary metric is the judge where one judged, else the likelihood where the
provider scored, else exact match, or token F1 when exact match has no discordant pair at all.
There are two candidates (fine-tuned alone, fine-tuned + examples): two looks at the same data,
so each is tested against few-shot at alpha / 2 (Bonferroni). The switch goes to a candidate
better on the primary metric with p below that; if both are, the smaller p wins (a tie: the
one with examples, as it is served). Below the held-out floor the gate cannot decide. Forced, the
switch goes to the candidate that looks better on the primary metric, significant or not.

The margin is a guard on the likelihood, not a metric of its own: most of an answer's tokens
are its style (a greeting, a frame, a sign-off), so a model that learned the style and lost
what answers which question still raises the likelihood. The margin cancels the style (the
same answer tokens, after their own question and after another one) and keeps what depends on
the question. With the likelihood primary, a candidate significantly worse than few-shot on the
margin (p below the same threshold) does not switch, however much likelier it finds the
answers. A judge reads the facts itself, so the guard is not applied to its verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from assistants import stats

SETTINGS = ("few_shot", "fine_tuned", "fine_tuned_with_examples")
CANDIDATES = ("fine_tuned", "fine_tuned_with_examples")
LABELS = {
    "few_shot": "few-shot",
    "fine_tuned": "fine-tuned alone",
    "fine_tuned_with_examples": "fine-tuned + examples",
}
METRICS = {
    "judge": "the judge's verdicts",
    "log_prob": "the likelihood of the owner's answers",
    "margin": "the likelihood margin of the owner's answers over another chat's prompt",
    "exact_match": "exact match",
    "token_f1": "token F1",
}
TESTS = {
    "judge": "exact sign test",
    "log_prob": "Wilcoxon signed-rank",
    "margin": "Wilcoxon signed-rank",
    "exact_match": "exact McNemar",
    "token_f1": "Wilcoxon signed-rank",
}


def setting_scores(
    model: str,
    k: int,
    exact: Sequence[int],
    f1: Sequence[float],
    log_prob: Sequence[float] | None,
    margin: Sequence[float] | None = None,
) -> dict[str, Any]:
    """One setting's stored scores: means, per item, 95% intervals."""
    n = len(exact)
    scores: dict[str, Any] = {"exact_match": list(exact), "token_f1": list(f1)}
    intervals: dict[str, Any] = {
        "exact_match": list(stats.wilson(sum(exact), n)),
        "token_f1": list(stats.t_interval(f1)),
    }
    if log_prob is not None:
        scores["log_prob"] = list(log_prob)
        intervals["log_prob"] = list(stats.t_interval(log_prob))
    if margin is not None:
        scores["margin"] = list(margin)
        intervals["margin"] = list(stats.t_interval(margin))
    return {
        "model": model,
        "k": k,
        "exact_match": sum(exact) / n if n else 0.0,
        "token_f1": stats.mean(f1),
        "log_prob": stats.mean(log_prob) if log_prob is not None else None,
        "margin": stats.mean(margin) if margin is not None else None,
        "outcomes": list(exact),
        "scores": scores,
        "intervals": intervals,
    }


def judge_scores(model: str, verdicts: Sequence[int], disagreements: int, unreadable: int):
    wins, losses = verdicts.count(1), verdicts.count(-1)
    n = len(verdicts)
    return {
        "verdicts": list(verdicts),
        "wins": wins,
        "ties": n - wins - losses,
        "losses": losses,
        "win_rate": wins / n if n else 0.0,
        "interval": list(stats.wilson(wins, n)),
        "disagreements": disagreements,
        "unreadable": unreadable,
        "model": model,
    }


def _test(evaluation: dict[str, Any], candidate: str, metric: str) -> dict[str, Any] | None:
    if metric == "judge":
        judged = (evaluation.get("judge") or {}).get(candidate)
        if not judged:
            return None
        wins, losses = judged["wins"], judged["losses"]
        return {
            "test": TESTS[metric],
            "p": stats.binomial_p(wins, losses),
            "difference": wins - losses,
        }
    ours = evaluation[candidate].get("scores", {}).get(metric)
    base = evaluation["few_shot"].get("scores", {}).get(metric)
    if ours is None or base is None or len(ours) != len(base):
        return None
    differences = [a - b for a, b in zip(ours, base, strict=True)]
    if metric == "exact_match":
        better = sum(d > 0 for d in differences)
        worse = sum(d < 0 for d in differences)
        return {
            "test": TESTS[metric],
            "p": stats.binomial_p(better, worse),
            "difference": stats.mean(differences),
            "discordant": better + worse,
        }
    return {
        "test": TESTS[metric],
        "p": stats.wilcoxon_p(differences),
        "difference": stats.mean(differences),
    }


def _primary(evaluation: dict[str, Any], tests: dict[str, dict[str, Any]]) -> str:
    for metric in ("judge", "log_prob"):
        if all(metric in tests[c] for c in CANDIDATES):
            return metric
    if any(tests[c].get("exact_match", {}).get("discordant") for c in CANDIDATES):
        return "exact_match"
    return "token_f1"


def summarise(
    settings: dict[str, dict[str, Any]],
    *,
    alpha: float,
    floor: int,
    judge: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The stored evaluation (see the module's docstring) from each setting's `setting_scores`
    and, where a judge judged, `judge` ({"model", candidate: `judge_scores`})."""
    evaluation: dict[str, Any] = {**settings, "items": len(settings["few_shot"]["outcomes"])}
    if judge:
        evaluation["judge"] = judge
    tests: dict[str, dict[str, Any]] = {}
    for candidate in CANDIDATES:
        tests[candidate] = {}
        for metric in METRICS:
            found = _test(evaluation, candidate, metric)
            if found is not None:
                tests[candidate][metric] = found
    evaluation.update(
        tests=tests,
        alpha=alpha,
        threshold=alpha / len(CANDIDATES),  # Bonferroni: two candidates, two looks
        floor=floor,
        primary=_primary(evaluation, tests),
        notes=list(notes),
    )
    evaluation["decision"] = decide(evaluation)
    return evaluation


def _fmt_p(p: float) -> str:
    return f"p={p:.3f}" if p >= 0.001 else "p<0.001"


def _loses_margin(tests: dict[str, Any], threshold: float) -> bool:
    """Whether a candidate is significantly worse than few-shot on the likelihood margin."""
    margin = tests.get("margin")
    return margin is not None and margin["difference"] < 0 and margin["p"] < threshold


def decide(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The gate's decision on a summarised evaluation: whether to switch, to which candidate,
    and why, in one sentence."""
    n, floor, alpha = evaluation["items"], evaluation["floor"], evaluation["alpha"]
    metric = evaluation["primary"]
    tests = evaluation["tests"]
    threshold = evaluation["threshold"]
    found = {c: tests[c][metric] for c in CANDIDATES if metric in tests[c]}
    # The better-looking candidate (for --force), the one with examples on a tie.
    looks = max(
        reversed(CANDIDATES), key=lambda c: found[c]["difference"] if c in found else float("-inf")
    )
    decision: dict[str, Any] = {"switch": False, "candidate": looks, "metric": metric, "p": None}
    if n < floor:
        decision["reason"] = (
            f"Not enough evidence yet: {n} held-out chats, fewer than the {floor} the gate "
            "needs to decide; collect more or --force."
        )
        return decision
    winners = [
        c
        for c in CANDIDATES
        if c in found and found[c]["difference"] > 0 and found[c]["p"] < threshold
    ]
    guarded = [c for c in winners if metric == "log_prob" and _loses_margin(tests[c], threshold)]
    winners = [c for c in winners if c not in guarded]
    if guarded and not winners:
        c = min(reversed(guarded), key=lambda c: found[c]["p"])
        margin = tests[c]["margin"]
        decision.update(
            p=found[c]["p"],
            guard={"metric": "margin", "p": margin["p"], "difference": margin["difference"]},
            reason=(
                f"{LABELS[c].capitalize()} finds the owner's answers likelier than few-shot does "
                f"({_fmt_p(found[c]['p'])}), but less tied to their questions (likelihood "
                f"margin {margin['difference']:+.3f} per token, {TESTS['margin']}, "
                f"{_fmt_p(margin['p'])} < {threshold:g}): it learned the style more than the "
                "answers, so the assistant keeps its model (--force switches anyway)."
            ),
        )
        return decision
    if winners:
        best = min(reversed(winners), key=lambda c: found[c]["p"])
        p = found[best]["p"]
        decision.update(
            switch=True,
            candidate=best,
            p=p,
            reason=(
                f"{LABELS[best].capitalize()} beats few-shot on {METRICS[metric]} "
                f"({TESTS[metric]}, {_fmt_p(p)} < {threshold:g}): the assistant switches to it."
            ),
        )
        return decision
    p = found[looks]["p"] if looks in found else None
    decision["p"] = p
    shown = f" ({LABELS[looks]}: {TESTS[metric]}, {_fmt_p(p)})" if p is not None else ""
    decision["reason"] = (
        f"No significant gain on {METRICS[metric]} over few-shot{shown}, and the switch needs "
        f"p < {threshold:g} (alpha {alpha:g} over two candidates); the assistant keeps its "
        "model (--force switches anyway)."
    )
    return decision
