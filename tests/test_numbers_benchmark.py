"""bench/numbers_benchmark.py's own logic, without a model: which settings a layout study runs
and what they are called, which pairs it tests, which test items a --limit takes."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

import assistants.chat
from assistants.prompt import build_prompt

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "numbers_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("numbers_benchmark", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["numbers_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def test_the_default_run_measures_the_shipped_layout_under_the_keys_it_always_had(bench):
    settings = bench.few_shot_settings([0, 3], (bench.DEFAULT_LAYOUT,))
    keys = ["zero-shot", "random-k3", "retrieved-k3", "covering-k3"]
    if bench.DEFAULT_LAYOUT != "turns":
        keys = [keys[0], *(f"{k}-{bench.DEFAULT_LAYOUT}" for k in keys[1:])]
    assert [s.key for s in settings] == keys
    assert {s.layout for s in settings} == {bench.DEFAULT_LAYOUT}


def test_a_layout_study_names_each_layout_and_order_and_tests_them_in_pairs(bench):
    settings = bench.few_shot_settings(
        [4], ("turns", "system", "pairs"), ("similarity", "coverage"), ("system",)
    )
    assert [(s.key, s.label) for s in settings] == [
        ("retrieved-k4", "retrieved 4-shot"),
        ("covering-k4", "covering 4-shot"),
        ("retrieved-k4-system", "retrieved 4-shot, system"),
        ("covering-k4-system", "covering 4-shot, system"),
        ("retrieved-k4-system-best-first", "retrieved 4-shot, system, best first"),
        ("covering-k4-system-best-first", "covering 4-shot, system, best first"),
        ("retrieved-k4-pairs", "retrieved 4-shot, pairs"),
        ("covering-k4-pairs", "covering 4-shot, pairs"),
    ]
    hits = {s.key: [1, 0, 1, 0] for s in settings}
    hits["retrieved-k4-pairs"] = [0, 0, 0, 0]
    tests = bench.paired_tests(settings, hits)
    assert set(tests) == {
        "covering-k4 vs retrieved-k4",
        "covering-k4-system vs retrieved-k4-system",
        "covering-k4-system-best-first vs retrieved-k4-system-best-first",
        "covering-k4-pairs vs retrieved-k4-pairs",
        "retrieved-k4-system vs retrieved-k4",
        "covering-k4-system vs covering-k4",
        "retrieved-k4-system-best-first vs retrieved-k4-system",
        "covering-k4-system-best-first vs covering-k4-system",
        "retrieved-k4-pairs vs retrieved-k4",
        "retrieved-k4-pairs vs retrieved-k4-system",
        "covering-k4-pairs vs covering-k4",
        "covering-k4-pairs vs covering-k4-system",
    }
    assert tests["retrieved-k4-pairs vs retrieved-k4"] == {"only_a": 0, "only_b": 2, "p_value": 0.5}


def test_a_larger_limit_extends_a_smaller_one(bench):
    items = [{"input": str(i), "output": str(i), "lang": "x"} for i in range(372)]
    small, large = bench.pick_test(items, 40), bench.pick_test(items, 90)
    assert len(small) == 40 and set(small) < set(large)
    # From 86 on, the same items as the benchmark always took (its figures stay comparable).
    assert large == sorted(random.Random(0).sample(range(372), 90))
    assert bench.pick_test(items, None) == bench.pick_test(items, 500) == list(range(372))


def test_best_first_is_measured_through_the_cores_own_prompt_builder(bench):
    examples = [
        (1, [{"role": "user", "content": "best"}]),
        (2, [{"role": "user", "content": "next"}]),
    ]
    with bench.prompt_order(True):
        prompt = assistants.chat.build_prompt("sys", examples, [], "q", 1000)
    assert [m["content"] for m in prompt.messages] == ["sys", "best", "next", "q"]
    assert assistants.chat.build_prompt is build_prompt


@pytest.mark.parametrize("flag", ["--layouts", "--selectors", "--best-first"])
def test_an_unknown_name_is_refused_by_the_option(bench, flag, capsys):
    with pytest.raises(SystemExit) as raised:
        bench.main([flag, "grid"])
    assert raised.value.code == 2
    assert "'grid': use a comma-separated list of" in capsys.readouterr().err
